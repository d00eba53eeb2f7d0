"""The line as a real process, for the reliability benchmark: start a day, watch its steps, kill it.

A crash test is only honest when the line runs as it does for a user: `factory demo` in its
own process, on its own data folder, with Dagster writing its event log to the folder's
`dagster_home`. The watcher reads that event log (SQLite, read-only) to learn which step is
running, so a kill can be aimed at a stage and the stage it really hit can be recorded.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

LEADS_PER_DAY = 180  # the demo's default
# The environment variables that would point a run at someone else's data or a real model.
_FOREIGN_ENV = ("FACTORY_WAREHOUSE", "FACTORY_LEADS_INBOX", "FACTORY_SPEC", "OPENAI_API_KEY", "OPENAI_BASE_URL", "DAGSTER_HOME")
# The line's stages, by the step keys Dagster gives the assets and their checks.
STAGE_OF_STEP: dict[str, str] = {
    "outcome_events": "observe",
    "suppression_list": "observe",
    "dbt_marts": "learn",
    "send_guard": "learn",
    "leads": "intake",
    "campaign_plan": "plan",
    "assignments": "assign",
    "drafts": "draft",
    "messages": "gate",
    "message_audit": "gate",
    "sends": "send",
}


def stage_of(step_key: str | None) -> str:
    """The stage a step belongs to; an asset check's step key starts with its asset's."""
    if not step_key:
        return "before the first step"
    for asset in sorted(STAGE_OF_STEP, key=len, reverse=True):
        if step_key == asset or step_key.startswith(f"{asset}_"):
            return STAGE_OF_STEP[asset]
    return "other"


def line_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the data folder set and every foreign override removed."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env["FACTORY_HOME"] = str(home)
    env.update(extra or {})
    return env


def demo_command(day: date, days: int = 1) -> list[str]:
    factory = Path(sys.executable).with_name("factory")
    return [str(factory), "demo", "--start", day.isoformat(), "--days", str(days), "--leads-per-day", str(LEADS_PER_DAY)]


def start_day(
    home: Path, day: date, log_name: str, extra_env: Mapping[str, str] | None = None, days: int = 1
) -> subprocess.Popen:
    """`factory demo` for `days` days from `day`, in a new session so a kill takes the whole process group."""
    logs = home / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{log_name}.log", "w", encoding="utf-8") as log:
        return subprocess.Popen(
            demo_command(day, days),
            env=line_env(home, extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


@dataclass(frozen=True)
class DayRun:
    exit_code: int
    seconds: float
    peak_rss_mb: float  # of the line's process (its own, not this benchmark's)


def wait_with_rusage(process: subprocess.Popen, timeout_s: float) -> DayRun:
    """Wait for the process (killing it after `timeout_s`); its exit code, wall time and peak RSS."""
    started = time.monotonic()
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return DayRun(process.returncode, time.monotonic() - started, usage.ru_maxrss / 1024)  # KiB on Linux
        if time.monotonic() - started > timeout_s:
            os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.05)


def run_day(home: Path, day: date, log_name: str, extra_env: Mapping[str, str] | None = None, timeout_s: float = 600) -> DayRun:
    """Run one day to its end (a run past `timeout_s` is killed and counts as failed)."""
    return wait_with_rusage(start_day(home, day, log_name, extra_env), timeout_s)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started: what a crash or an OOM kill of the line does."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@dataclass(frozen=True)
class StepEvent:
    kind: str  # STEP_START | STEP_SUCCESS | STEP_FAILURE
    step_key: str
    at: float  # seconds since the epoch


class RunWatcher:
    """Reads a data folder's Dagster event log without disturbing the run that writes it."""

    def __init__(self, home: Path) -> None:
        self.history = home / "dagster_home" / "history"
        self.known_runs = set(self._runs())

    def _query(self, db: Path, sql: str, params: tuple = ()) -> list[tuple]:
        if not db.exists():
            return []
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0) as con:
                return con.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # locked or not created yet: ask again on the next poll
            return []

    def _runs(self) -> dict[str, tuple[str, str, str]]:
        rows = self._query(self.history / "runs.db", "SELECT run_id, pipeline_name, partition, status FROM runs")
        return {run_id: (job, partition, status) for run_id, job, partition, status in rows}

    def new_run(self, day: date, job: str = "daily_line") -> str | None:
        """The id of the run of `job` for `day` started since this watcher was made."""
        for run_id, (name, partition, _) in self._runs().items():
            if run_id not in self.known_runs and name == job and partition == day.isoformat():
                return run_id
        return None

    def status(self, run_id: str) -> str | None:
        return self._runs().get(run_id, (None, None, None))[2]

    def run_times(self, run_id: str) -> tuple[float | None, float | None]:
        """(start, end) of the run in epoch seconds, as Dagster recorded them; None while unknown."""
        rows = self._query(self.history / "runs.db", "SELECT start_time, end_time FROM runs WHERE run_id = ?", (run_id,))
        return rows[0] if rows else (None, None)

    def steps(self, run_id: str) -> list[StepEvent]:
        rows = self._query(
            self.history / "runs" / f"{run_id}.db",
            """SELECT dagster_event_type, step_key, timestamp FROM event_logs
               WHERE dagster_event_type IN ('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE') ORDER BY id""",
        )
        return [StepEvent(kind, key, _epoch(stamp)) for kind, key, stamp in rows]

    def running(self, run_id: str) -> tuple[str | None, str | None]:
        """(step running now, last step finished); the running one is None between steps."""
        started: dict[str, float] = {}
        finished: str | None = None
        for event in self.steps(run_id):
            if event.kind == "STEP_START":
                started[event.step_key] = event.at
            else:
                started.pop(event.step_key, None)
                finished = event.step_key
        return (max(started, key=started.get) if started else None), finished

    def durations(self, run_id: str) -> dict[str, float]:
        """Seconds each finished step took."""
        start: dict[str, float] = {}
        took: dict[str, float] = {}
        for event in self.steps(run_id):
            if event.kind == "STEP_START":
                start[event.step_key] = event.at
            elif event.step_key in start:
                took[event.step_key] = event.at - start[event.step_key]
        return took


def _epoch(stamp: str | float) -> float:
    if isinstance(stamp, int | float):
        return float(stamp)
    return datetime.fromisoformat(str(stamp)).timestamp()


def wait_for_step(
    watcher: RunWatcher, process: subprocess.Popen, day: date, step_key: str, timeout_s: float, poll_s: float = 0.005
) -> str | None:
    """Poll until `step_key` of the day's new run has started; its run id, or None if the process ended first."""
    deadline = time.monotonic() + timeout_s
    run_id = None
    while time.monotonic() < deadline and process.poll() is None:
        run_id = run_id or watcher.new_run(day)
        if run_id and any(e.kind == "STEP_START" and e.step_key == step_key for e in watcher.steps(run_id)):
            return run_id
        time.sleep(poll_s)
    return None


def held_pool_slots(home: Path) -> list[tuple[str, str, str]]:
    """(pool, run id, step) of every concurrency slot claimed or queued in the data folder's instance."""
    db = home / "dagster_home" / "history" / "runs" / "index.db"
    watcher = RunWatcher(home)
    claimed = watcher._query(db, "SELECT concurrency_key, run_id, step_key FROM concurrency_slots WHERE run_id IS NOT NULL")
    queued = watcher._query(db, "SELECT concurrency_key, run_id, step_key FROM pending_steps")
    return sorted(set(claimed) | set(queued))
