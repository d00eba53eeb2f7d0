"""`kill -9` of the running line at random moments, then a re-run of the day: what was lost?

Trials run day after day on one data folder. Trial k starts `factory demo` at day k-1, so
the process first re-runs the day trial k-1 killed, and then kills day k at a random moment
of its target stage: the watcher sees the stage's step start in the Dagster event log, the
trial sleeps a random part of that step's calibrated duration and sends SIGKILL to the whole
process group. After each kill the folder is checked (nothing may be doubled, no completed
day half-written), and the step the kill really hit is read back from the event log.

A killed run leaves its claim on the `duckdb` pool in the Dagster instance. The trial records
whether it did, and checks once that a re-run makes progress without outside help: `factory
demo` fails the dead run and frees its slot itself (`factory_dagster/controls/runs.py`).
"""

from __future__ import annotations

import random
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb

from benchmarks.reliability_checks import Findings, check_folder
from benchmarks.reliability_line import (
    LEADS_PER_DAY,
    DayRun,
    RunWatcher,
    held_pool_slots,
    kill_group,
    run_day,
    stage_of,
    start_day,
    wait_for_step,
)

# The stages a kill is aimed at, by the step that does their work.
TARGETS: dict[str, str] = {"intake": "leads", "learn": "dbt_marts", "draft": "drafts", "gate": "messages", "send": "sends"}
STEP_TIMEOUT_S = 180.0
MAX_MISSES = 10  # attempts that may kill nothing (the day ended first, a re-run did not start) before giving up
BLOCKED_PROBE_S = 10.0


@dataclass
class Trial:
    number: int
    day: str
    target_stage: str
    offset_s: float  # how long after the target step started the kill was sent
    after_eml: int = 0  # send stage: the kill waits until this many of the day's .eml files are written
    hit_step: str | None = None  # the step running at the kill (None: between steps)
    hit_stage: str = ""
    uncommitted_eml: int | None = None  # .eml files written before the kill that no send row recorded
    stale_pool_claims: int = 0  # pool slots or queued steps the killed run still held
    rerun_status: str | None = None  # Dagster status of the re-run of this trial's day
    rerun_error: str | None = None  # what the re-run's process said when it failed
    problems: dict[str, int] = field(default_factory=dict)  # nonzero findings after the re-run


def _problems(findings: Findings) -> dict[str, int]:
    flat = {k: v for k, v in asdict(findings).items() if isinstance(v, int) and k not in {"lead_rows_in", "outbox_temp_files"}}
    flat.update(findings.half_written)
    return {k: v for k, v in flat.items() if v}


@dataclass(frozen=True)
class Baseline:
    """A clean day on the trials' folder: how long it and each of its steps took, and its memory."""

    day: DayRun
    step_s: dict[str, float]

    def target_s(self, stage: str) -> float:
        return self.step_s.get(TARGETS[stage], 0.1)


def calibrate(home: Path, day: date) -> Baseline:
    """Run one clean day: where to aim the kills, and what a day costs without faults."""
    watcher = RunWatcher(home)
    run = run_day(home, day, f"calibration-{day}")
    if run.exit_code != 0:
        raise RuntimeError(f"the calibration day {day} failed; see {home / 'bench-logs'}")
    return Baseline(run, watcher.durations(watcher.new_run(day) or ""))


def probe_blocked_rerun(home: Path, day: date) -> dict:
    """Re-run a killed day with the dead run's pool claim still held: does the re-run make progress by itself?"""
    watcher = RunWatcher(home)
    process = start_day(home, day, f"blocked-probe-{day}")
    started = time.monotonic()
    run_id = None
    while time.monotonic() - started < 60 and process.poll() is None and run_id is None:
        run_id = watcher.new_run(day)
        time.sleep(0.2)
    queued_at = time.monotonic()
    while run_id and process.poll() is None and time.monotonic() - queued_at < BLOCKED_PROBE_S:
        if watcher.steps(run_id):
            break
        time.sleep(0.2)
    steps = watcher.steps(run_id) if run_id else []
    blocked = process.poll() is None and not steps
    kill_group(process)
    return {"blocked": blocked, "waited_s": round(time.monotonic() - queued_at, 1), "steps_started": len(steps)}


def run_trials(home: Path, first_day: date, baseline: Baseline, trials_per_stage: int, seed: int = 8) -> dict:
    """Kill the days after `first_day` (the calibrated one) at shuffled target stages until each
    stage has `trials_per_stage` kills; every killed day is re-run by the next process."""
    rng = random.Random(seed)
    pending = [stage for stage in TARGETS for _ in range(trials_per_stage)]
    rng.shuffle(pending)
    trials: list[Trial] = []
    misses: list[str] = []  # attempts that killed nothing, and why
    blocked_probe: dict | None = None
    completed_days = [first_day]
    awaiting: Trial | None = None  # the killed trial whose day the next process re-runs
    day = first_day + timedelta(days=1)
    for _ in range(len(pending) + MAX_MISSES):
        if not pending:
            break
        trial = Trial(
            len(trials) + 1, day.isoformat(), pending[0], round(rng.uniform(0.0, 0.9) * baseline.target_s(pending[0]), 3)
        )
        if trial.target_stage == "send":
            # Files, not seconds: the moment that matters is how far delivery got, and its pace varies.
            trial.offset_s, trial.after_eml = 0.0, rng.randint(0, LEADS_PER_DAY - 10)
        start = date.fromisoformat(awaiting.day) if awaiting else day
        log = home / "bench-logs" / f"attempt-{len(trials) + len(misses) + 1:02d}-{day}.log"
        killed, rerun = _kill_once(home, start, day, trial, log)
        if killed:
            trial.stale_pool_claims = len(held_pool_slots(home))  # no line process runs now: all are dead runs'
            if trial.stale_pool_claims and blocked_probe is None:
                blocked_probe = probe_blocked_rerun(home, day)
        if awaiting is not None:
            if not _judge_rerun(home, awaiting, rerun, log, completed_days):
                misses.append(f"{day}: the re-run of {awaiting.day} did not start ({_failure_line(log)})")
                continue  # the process died before re-running: try again, with the same target
            awaiting = None
        if killed:
            pending.pop(0)
            trials.append(trial)
            awaiting = trial
        else:
            misses.append(f"{day}: not killed, {trial.hit_stage}")
        day += timedelta(days=1)
    if awaiting is not None:
        log = home / "bench-logs" / f"rerun-{awaiting.day}.log"
        watcher = RunWatcher(home)
        run_day(home, date.fromisoformat(awaiting.day), log.stem)
        _judge_rerun(home, awaiting, watcher.new_run(date.fromisoformat(awaiting.day)), log, completed_days)
    final = check_folder(home, completed_days)
    return _summary(trials, misses, final, baseline, blocked_probe)


def _judge_rerun(home: Path, trial: Trial, run_id: str | None, log: Path, completed_days: list[date]) -> bool:
    """Record how the re-run (`run_id`) of a killed trial's day went; False if it never started."""
    day = date.fromisoformat(trial.day)
    status = RunWatcher(home).status(run_id) if run_id else None
    if status is None:
        return False
    trial.rerun_status = status
    if status == "SUCCESS":
        completed_days.append(day)
        trial.problems = _problems(check_folder(home, [day], outbox_days=[day]))
    else:
        trial.rerun_error = _failure_line(log)
    return True


def _failure_line(log: Path) -> str | None:
    """The line of a demo's output that says why it failed (or the last line of a traceback)."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.exists() else []
    failed = [line for line in lines if "FAILED" in line or line.startswith("error:")]
    return (failed or lines or [None])[-1]


def _kill_once(home: Path, start: date, day: date, trial: Trial, log: Path) -> tuple[bool, str | None]:
    """Run the line from `start` (re-running the days before `day`) and kill `day` at the trial's stage.

    (whether the kill hit the running day, the id of the run that re-ran `start` if it was
    before `day`); the trial records where the kill hit.
    """
    watcher = RunWatcher(home)
    process = start_day(home, start, log.stem, days=(day - start).days + 1)
    run_id = wait_for_step(watcher, process, day, TARGETS[trial.target_stage], STEP_TIMEOUT_S)
    if run_id is not None:
        time.sleep(trial.offset_s)
        wait_for_eml(home, day, trial.after_eml, process)
    alive = process.poll() is None
    kill_group(process)
    rerun = watcher.new_run(start) if start < day else None
    run_id = run_id or watcher.new_run(day)
    if run_id is None or not alive:
        trial.hit_stage = "the run never reached its target" if run_id is None else "the day ended before the kill"
        return False, rerun
    running, finished = watcher.running(run_id)
    trial.uncommitted_eml = uncommitted_eml(home, day)
    trial.hit_step = running
    trial.hit_stage = stage_of(running) if running else f"between steps, after {stage_of(finished)}"
    return True, rerun


def _summary(trials: list[Trial], misses: list[str], final: Findings, baseline: Baseline, blocked_probe: dict | None) -> dict:
    by_stage: dict[str, dict[str, int]] = {}
    for trial in trials:
        row = by_stage.setdefault(trial.hit_stage, {"kills": 0, "completed": 0, "with_problems": 0})
        row["kills"] += 1
        row["completed"] += trial.rerun_status == "SUCCESS"
        row["with_problems"] += bool(trial.problems)
    return {
        "kill_trials": len(trials),
        "completed": sum(t.rerun_status == "SUCCESS" for t in trials),
        "attempts_without_a_kill": misses,
        "duplicate_sends": final.duplicate_sends,
        "duplicate_eml": final.duplicate_eml,
        "orphan_eml": final.orphan_eml,
        "eml_not_matching_send": final.eml_mismatch,
        "outbox_temp_files_left": final.outbox_temp_files,
        "lost_rows": final.lost_rows,
        "duplicated_rows": final.duplicated_rows,
        "lead_rows_checked": final.lead_rows_in,
        "half_written_partitions": sum(final.half_written.values()),
        "invariants": final.half_written,
        "by_stage": by_stage,
        "targets": dict(Counter(t.target_stage for t in trials)),
        "target_step_s": {stage: round(baseline.target_s(stage), 2) for stage in TARGETS},
        "kills_between_delivery_and_commit": sum(bool(t.uncommitted_eml) for t in trials),
        "runs_left_holding_the_duckdb_pool": sum(bool(t.stale_pool_claims) for t in trials),
        "rerun_with_the_dead_runs_claim_held": blocked_probe,
        "leads_per_day": LEADS_PER_DAY,
        "trials": [asdict(t) for t in trials],
    }


def wait_for_eml(home: Path, day: date, count: int, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Return once `count` .eml files of the day are in the outbox (or the process ended, or time is up)."""
    folder = home / "outbox" / day.isoformat()
    deadline = time.monotonic() + timeout_s
    while count and process.poll() is None and time.monotonic() < deadline:
        if folder.is_dir() and sum(1 for _ in folder.glob("*.eml")) >= count:
            return
        time.sleep(0.002)


def uncommitted_eml(home: Path, day: date) -> int | None:
    """.eml files of the day's folder that no send row records (yet): a kill between delivery and commit."""
    folder = home / "outbox" / day.isoformat()
    files = {p.name for p in folder.glob("*.eml")} if folder.exists() else set()
    try:
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            recorded = {Path(ref).name for (ref,) in con.execute("SELECT transport_ref FROM raw.sends").fetchall()}
    except duckdb.Error:
        return None
    return len(files - recorded)


def kill_then_next_day(home: Path, day: date, written_before_kill: int = 20) -> dict:
    """Kill `day` while it sends, then run the next day without re-running it, as a daily schedule would.

    The kill comes once `written_before_kill` .eml files of the day are in the outbox, before
    the send stage records them: those messages are still pending, and the next day must not
    deliver them a second time.
    """
    watcher = RunWatcher(home)
    process = start_day(home, day, f"send-kill-{day}")
    run_id = wait_for_step(watcher, process, day, TARGETS["send"], STEP_TIMEOUT_S)
    if run_id is not None:
        wait_for_eml(home, day, written_before_kill, process)
    kill_group(process)
    hit = watcher.running(run_id)[0] if run_id else None
    written = uncommitted_eml(home, day)
    following = day + timedelta(days=1)
    next_watcher = RunWatcher(home)
    log = home / "bench-logs" / f"after-send-kill-{following}.log"
    run = run_day(home, following, log.stem)
    findings = check_folder(home, [following])
    return {
        "killed_day": day.isoformat(),
        "hit_step": hit,
        "eml_delivered_but_unrecorded_at_kill": written,
        "next_day_completed": run.exit_code == 0 and next_watcher.status(next_watcher.new_run(following) or "") == "SUCCESS",
        "next_day_error": None if run.exit_code == 0 else _failure_line(log),
        "duplicate_sends": findings.duplicate_sends,
        "duplicate_eml": findings.duplicate_eml,
        "orphan_eml": findings.orphan_eml,
        "eml_not_matching_send": findings.eml_mismatch,
    }
