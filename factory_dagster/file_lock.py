"""One process at a time across processes: an exclusive lock on a file, held for a `with` block.

For work that must happen once however many processes start together (create a system user, parse the dbt project):
each takes the lock, then looks again under it whether another did the work meanwhile. The lock is `flock`'s, tied
to this open of the file, so threads of one process that each open it exclude each other too, and a process that dies
lets go of it.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created, with its folder, if missing) for the block; wait for it if taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
