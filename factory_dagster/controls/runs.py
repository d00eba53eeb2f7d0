"""Runs whose process died: marked failed, their `duckdb` pool slots freed.

A run killed mid-step (`kill -9`, a crash, a power cut) stays STARTED in the Dagster
instance and keeps its claim on the `duckdb` pool, whose limit is 1: every later run on
the instance would wait for that slot for ever. Dagster's run-monitoring daemon frees it
when the daemon runs; `factory demo` runs without the daemon, so it recovers its own dead
runs itself. Each run it launches carries its process's identity, and a run is declared
dead only when that process no longer exists, so a live run (from another demo or from
the UI, which carries no such tags) is never touched.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

PID_TAG = "factory/pid"
PROCESS_TAG = "factory/process"
HOST_TAG = "factory/host"
UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def _process_identity(pid: int) -> str | None:
    """The process's start time (Linux `/proc/<pid>/stat`), so a reused pid is not taken for the
    original process; None when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (not Linux): the pid alone has to do
        return _pid_alive(pid)
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, after the command name


def _pid_alive(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "alive"


def process_tags() -> dict[str, str]:
    """Tags that let a later process tell whether this one is still running the run."""
    pid = os.getpid()
    return {PID_TAG: str(pid), PROCESS_TAG: _process_identity(pid) or "", HOST_TAG: socket.gethostname()}


def is_dead(tags: dict[str, str]) -> bool:
    """Whether the process that launched a run (by `process_tags`) is gone; unknown launchers are alive."""
    if PID_TAG not in tags or tags.get(HOST_TAG) != socket.gethostname():
        return False
    return _process_identity(int(tags[PID_TAG])) != tags.get(PROCESS_TAG)


def recover_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark unfinished runs whose process died as failed and free their pool slots; their ids."""
    recovered = []
    for record in instance.get_run_records(filters=RunsFilter(statuses=UNFINISHED)):
        run = record.dagster_run
        if is_dead(dict(run.tags)):
            instance.report_run_failed(run, f"its process ({run.tags[PID_TAG]}) ended without finishing the run")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            recovered.append(run.run_id)
    return recovered
