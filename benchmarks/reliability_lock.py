"""Another process holding the warehouse: does the line wait for it, and finish?

DuckDB admits one writing process per database file. An analyst's notebook, the Dagster UI
running a job, or a second demo can hold the file while the line wants it. The holder here is a
separate Python process with an ordinary read-write connection. A run of the line keeps the file
open from its start to its end (`warehouse.store.hold`), so there are two cases:

- `before_the_run`: the holder has the file when the day starts; the run must wait for it at its
  start and then complete.
- `during_the_run` (asked for when the draft stage starts): the run keeps the file and finishes
  without waiting; the holder gets it when the run lets go, and whatever the demo does next waits
  for the holder.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from benchmarks.reliability_line import RunWatcher, kill_group, start_day, wait_for_step, wait_with_rusage

# The holder takes the lock as soon as it is free (a run of the line holds it from start to end).
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


def lock_held(home: Path, day: date, hold_s: float, from_step: str | None, baseline_day_s: float) -> dict:
    """Run `day` while another process holds the warehouse for `hold_s`: from before the day starts
    (`from_step` None), or asked for when `from_step` starts."""
    watcher = RunWatcher(home)
    started = time.time()
    holder, locked_at = None, 0.0
    if from_step is None:
        holder = LockHolder(home / "warehouse.duckdb", hold_s)
        locked_at = holder.wait_locked()
        started = time.time()
    process = start_day(home, day, f"lock-{from_step or 'before'}-{day}")
    run_id = wait_for_step(watcher, process, day, from_step or "outcome_events", timeout_s=hold_s + 300)
    if run_id is None:
        kill_group(process)
        return {"completed": False, "error": f"the run ended or stalled before step {from_step or 'outcome_events'}"}
    asked_at = time.time()
    first_step_at = asked_at
    if holder is None:
        holder = LockHolder(home / "warehouse.duckdb", hold_s)
        locked_at = holder.wait_locked()
    day_run = wait_with_rusage(process, timeout_s=hold_s + 600)
    ended = time.time()
    released_at = holder.wait_released()
    status = watcher.status(run_id)
    run_started, run_ended = watcher.run_times(run_id)
    figures = {
        "hold_s": round(released_at - locked_at, 1),
        "holder_asked_at_step": from_step or "before the day",
        "day_s": round(ended - started, 1),
        "clean_day_s": round(baseline_day_s, 1),
        "exit_code": day_run.exit_code,
        "run_status": status,
        "completed": day_run.exit_code == 0 and status == "SUCCESS",
    }
    if from_step is None:
        # From starting `factory demo` to the run's first step (process start-up included), and
        # how much longer the whole day took than a clean one.
        figures["first_step_after_s"] = round(first_step_at - started, 1)
        figures["run_waited_s"] = round(ended - started - baseline_day_s, 1)
    else:
        figures["holder_waited_s"] = round(locked_at - asked_at, 1)
        figures["holder_got_it_after_the_run_ended"] = run_ended is not None and locked_at >= run_ended - 0.5
        figures["run_s"] = None if run_started is None or run_ended is None else round(run_ended - run_started, 1)
    return figures
