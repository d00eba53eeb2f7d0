"""`factory demo`: run N consecutive days of the line through Dagster and summarise them.

Each day's sample lead file is dropped in the inbox first (as a user would), then the
`daily_line` job runs for that day's partition in the Dagster instance under the data
folder, so `make ui` shows the runs and materializations afterwards.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
import pandas as pd

from factory_dagster.intake.sample_leads import write_sample_file
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import connect

QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
DAGSTER_YAML = """\
# Written by Factory. Every DuckDB-touching step runs in the `duckdb` pool: one at a time.
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""
SUMMARY_COLUMNS = {
    "day": "day",
    "leads_in": "leads in",
    "leads_accepted": "accepted",
    "leads_quarantined": "quarantined",
    "drafts": "drafts",
    "gate_pass_rate": "gate pass",
    "sends": "sends",
    "replies": "replies",
    "reply_rate": "reply rate",
    "cost_usd": "cost USD",
}


def prepare_dagster_home(paths: Paths) -> dg.DagsterInstance:
    """The persistent Dagster instance under the data folder, with the DuckDB pool limited to 1."""
    home = paths.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


@dataclass
class DayResult:
    day: date
    success: bool
    seconds: float
    error: str | None = None


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The first failure in words an operator can act on (the root cause, not the wrapper)."""
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return f"step '{event.step_key}' failed: {data.user_failure_data.description}"
            error = data.error
            while error is not None and error.cause is not None:
                error = error.cause
            return f"step '{event.step_key}' failed: {error.message.strip() if error else 'unknown error'}"
        if event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
            check = event.event_specific_data
            return f"blocking check '{check.check_name}' failed on {check.asset_key.to_user_string()}"
    return "the run failed"


def run_days(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    paths: Paths,
    start: date,
    days: int,
    leads_per_day: int,
    progress: Callable[[str], None] = print,
) -> list[DayResult]:
    """Run the daily line for `days` days from `start`; stop at the first failing day."""
    job = defs.resolve_job_def("daily_line")
    results = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        write_sample_file(paths.leads_inbox, day, n=leads_per_day)
        progress(f"day {offset + 1}/{days} {day}: running observe → learn → intake → plan → assign → draft → gate → send")
        started = time.perf_counter()
        with _captured_output(paths, day) as log_path:
            result = job.execute_in_process(
                partition_key=day.isoformat(), instance=instance, run_config=QUIET_RUN_CONFIG, raise_on_error=False
            )
        outcome = DayResult(
            day, result.success, time.perf_counter() - started, None if result.success else _failure_message(result)
        )
        results.append(outcome)
        progress(
            f"day {offset + 1}/{days} {day}: {'done' if outcome.success else 'FAILED'} in {outcome.seconds:.1f}s"
            + (f" — {outcome.error} (full log: {log_path})" if outcome.error else "")
        )
        if not outcome.success:
            break
    if results:
        # One more dbt build, so the marts also count the last day's sends.
        with _captured_output(paths, results[-1].day, "refresh"):
            defs.resolve_job_def("refresh_marts").execute_in_process(
                partition_key=results[-1].day.isoformat(), instance=instance, run_config=QUIET_RUN_CONFIG, raise_on_error=False
            )
    return results


@contextlib.contextmanager
def _captured_output(paths: Paths, day: date, suffix: str = "run"):
    """Send dbt's and Dagster's console output of one run to a log file under the data folder."""
    log_path = paths.home / "logs" / f"{day}-{suffix}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield log_path


def daily_summary(paths: Paths, first: date, last: date) -> pd.DataFrame:
    """The per-day table the demo prints, straight from `marts.daily_kpis`."""
    with connect(paths.warehouse, read_only=True) as con:
        frame = con.execute(
            f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM marts.daily_kpis WHERE day BETWEEN ? AND ? ORDER BY day", [first, last]
        ).df()
    return frame


def format_summary(frame: pd.DataFrame) -> str:
    shown = frame.copy()
    shown["day"] = pd.to_datetime(shown["day"]).dt.strftime("%Y-%m-%d")
    for column in ("gate_pass_rate", "reply_rate"):
        shown[column] = shown[column].map(lambda v: "-" if pd.isna(v) else f"{v:.1%}")
    shown["cost_usd"] = shown["cost_usd"].map(lambda v: f"{v:.4f}")
    for column in ("leads_in", "leads_accepted", "leads_quarantined", "drafts", "sends", "replies"):
        shown[column] = shown[column].fillna(0).astype(int).astype(str)
    shown = shown.rename(columns=SUMMARY_COLUMNS)
    widths = {c: max(len(c), *(len(v) for v in shown[c])) if len(shown) else len(c) for c in shown.columns}
    lines = ["  ".join(c.rjust(widths[c]) for c in shown.columns)]
    lines += ["  ".join(str(v).rjust(widths[c]) for c, v in row.items()) for _, row in shown.iterrows()]
    return "\n".join(lines)
