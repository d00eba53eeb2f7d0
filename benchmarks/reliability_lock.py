"""Another process holding the warehouse: does the line wait for it, and finish?

DuckDB admits one writing process per database file. An analyst's notebook, the Dagster UI
running a job, or a second demo can hold the file while the line wants it. The holder here
is a separate Python process with an ordinary read-write connection, started at a chosen
step of the line's day; the day must wait for it and complete.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from benchmarks.reliability_line import RunWatcher, kill_group, stage_of, start_day, wait_for_step, wait_with_rusage

# The holder takes the lock as soon as it is free (the line holds it only while a step works).
_HOLDER = """
import sys, time, duckdb
path, seconds = sys.argv[1], float(sys.argv[2])
give_up = time.monotonic() + 600
while True:
    try:
        con = duckdb.connect(path)
        break
    except duckdb.IOException:
        if time.monotonic() > give_up:
            raise
        time.sleep(0.01)
print("LOCKED", time.time(), flush=True)
time.sleep(seconds)
con.close()
print("RELEASED", time.time(), flush=True)
"""


class LockHolder:
    """A process that opens `warehouse` for writing and keeps it `seconds` long."""

    def __init__(self, warehouse: Path, seconds: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(warehouse), str(seconds)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def _said(self, word: str) -> float:
        """Block until the holder says `word`; the wall-clock time it did (the holder gives up after 600 s)."""
        assert self.process.stdout is not None
        said, _, at = self.process.stdout.readline().partition(" ")
        if said != word:
            raise RuntimeError(f"the lock holder did not say {word} (said {said!r})")
        return float(at)

    def wait_locked(self) -> float:
        return self._said("LOCKED")

    def wait_released(self) -> float:
        released = self._said("RELEASED")
        self.process.wait(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return released


def lock_held(home: Path, day: date, hold_s: float, from_step: str, baseline_step_s: dict[str, float]) -> dict:
    """Run `day` while another process holds the warehouse for `hold_s` from the start of `from_step`."""
    watcher = RunWatcher(home)
    started = time.time()
    process = start_day(home, day, f"lock-{from_step}-{day}")
    run_id = wait_for_step(watcher, process, day, from_step, timeout_s=300)
    if run_id is None:
        kill_group(process)
        return {"completed": False, "error": f"the run ended or stalled before step {from_step}"}
    holder = LockHolder(home / "warehouse.duckdb", hold_s)
    locked_at = holder.wait_locked()
    day_run = wait_with_rusage(process, timeout_s=hold_s + 600)
    ended = time.time()
    released_at = holder.wait_released()
    took = watcher.durations(run_id)
    excess = {step: took[step] - baseline_step_s.get(step, 0.0) for step in took}
    waiting_step = max(excess, key=excess.get) if excess else None
    status = watcher.status(run_id)
    return {
        "hold_s": round(released_at - locked_at, 1),
        "hold_began_at_step": from_step,
        "waiting_step": waiting_step,
        "waiting_stage": stage_of(waiting_step),
        "waited_s": round(excess.get(waiting_step, 0.0), 1) if waiting_step else 0.0,
        "day_s": round(ended - started, 1),
        "exit_code": day_run.exit_code,
        "run_status": status,
        "completed": day_run.exit_code == 0 and status == "SUCCESS",
    }
