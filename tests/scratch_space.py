"""Where the tests write their throwaway files: a RAM filesystem (tmpfs) when the machine has one to spare.

Why: the suite creates and deletes tens of thousands of files (PostgreSQL clusters and databases, DuckDB files and
their WALs, Dagster's run shards, dbt's target folders). On ext4 without a journal (the 2-core VM the budgets are
measured on), the kernel checks each free inode it considers for a new file against those deleted in the last minutes
(`recently_deleted` in fs/ext4/ialloc.c), reading the inode table for each: with that many deletions, creating one
file costs milliseconds of CPU. In a perf profile of the PostgreSQL-backed tests, 21% of all CPU went there (a
`CREATE DATABASE` took 0.3 s, nearly all of it in that search); with the same tests on tmpfs, none.

The choice is made once, in the process that starts the session (pytest-xdist's workers and every subprocess inherit
TMPDIR): a fresh folder on /dev/shm when that is a tmpfs with room for a run, removed when the session passes and
kept, with its path printed, when it fails. A TMPDIR set by the person running the tests is left as it is.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

RAM_FILESYSTEM = Path("/dev/shm")
MIN_FREE_BYTES = 2 * 1024**3  # a whole run leaves about 1 GB behind
PREFIX = "factory-tests-"


def is_tmpfs(path: Path, mounts: str) -> bool:
    """Whether `path` is a mount point of a tmpfs, as /proc/mounts lists them."""
    return any(
        len(fields) > 2 and fields[1] == str(path) and fields[2] == "tmpfs"
        for fields in (line.split() for line in mounts.splitlines())
    )


def scratch_parent(environ: Mapping[str, str], mounts: str, free_bytes: int, candidate: Path = RAM_FILESYSTEM) -> Path | None:
    """The folder to make the session's scratch folder in, or None to keep the system's temporary folder."""
    if "TMPDIR" in environ:
        return None
    if not is_tmpfs(candidate, mounts) or free_bytes < MIN_FREE_BYTES:
        return None
    return candidate


def choose() -> Path | None:
    """Point TMPDIR at a new folder on the RAM filesystem if there is one to spare; the folder, or None."""
    try:
        mounts = Path("/proc/mounts").read_text()
        stats = os.statvfs(RAM_FILESYSTEM)
    except OSError:  # not Linux, or no /dev/shm
        return None
    parent = scratch_parent(os.environ, mounts, stats.f_bavail * stats.f_frsize)
    if parent is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    folder.chmod(0o755)  # PostgreSQL's server user must reach its cluster's folder inside (tests/postgres_server.py)
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    return folder


def release(folder: Path, passed: bool) -> str | None:
    """Remove the scratch folder after a passing session; after a failing one keep it and say where it is."""
    if passed:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return f"the failed session's temporary files are kept in {folder} (a RAM filesystem: remove it when done)"
