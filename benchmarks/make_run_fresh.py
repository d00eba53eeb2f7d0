"""`make run` on a fresh clone: environment creation, 14 demo days and the summary, timed.

The clone is of the committed HEAD. Two figures: with the machine's package cache as a
developer or CI machine has it (`wall_s`), and with an empty uv cache, so every package
is downloaded again (`wall_s_cold_cache`).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _make_run(env_overrides: dict[str, str]) -> float:
    with tempfile.TemporaryDirectory(prefix="factory-fresh-") as folder:
        clone = Path(folder) / "factory"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FACTORY_", "OPENAI_", "VIRTUAL_ENV"))}
        started = time.perf_counter()
        subprocess.run(["make", "run"], cwd=clone, env={**env, **env_overrides}, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="uv-cache-") as empty_cache:
        cold = _make_run({"UV_CACHE_DIR": empty_cache})
    warm = _make_run({})
    return {"wall_s": round(warm, 1), "wall_s_cold_cache": round(cold, 1), "budget_s": 150}
