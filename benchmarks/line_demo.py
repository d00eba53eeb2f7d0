"""The whole line: `factory demo` for 14 days on a fresh data folder, timed end to end.

Measures what `make run` costs after setup: wall time, time per day, and the peak
resident memory of the process, plus what the run produced. The Dagster instance the
demo leaves behind says how long each day's run and each of its steps took: medians
over the default campaign's days (`day_s`, `step_s_median`, the learn stage `dbt_marts`
among them), and each campaign's median run (`campaign_day_s`; the second example
campaign joins halfway through).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import duckdb

DAYS = 14
LEADS_PER_DAY = 180  # the demo's default
DEFAULT_CAMPAIGN = "brightwave_close"
CAMPAIGN_PARTITION_TAG = "dagster/partition/campaign"


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="factory-bench-") as home:
        env = {**os.environ, "FACTORY_HOME": home}
        env.pop("OPENAI_API_KEY", None)
        factory = Path(sys.executable).with_name("factory")
        started = time.perf_counter()
        subprocess.run(
            [str(factory), "demo", "--days", str(DAYS), "--leads-per-day", str(LEADS_PER_DAY)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - started
        peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        with duckdb.connect(str(Path(home) / "warehouse.duckdb"), read_only=True) as con:
            leads, sends, calls, cost = con.execute(
                """SELECT (SELECT count(*) FROM raw.leads) + (SELECT count(*) FROM raw.leads_quarantine),
                          (SELECT count(*) FROM raw.sends), (SELECT count(*) FROM raw.llm_calls),
                          (SELECT sum(cost_usd) FROM raw.llm_calls)"""
            ).fetchall()[0]
        days, steps = _run_timings(Path(home) / "dagster_home")
    default = days.pop(DEFAULT_CAMPAIGN)
    return {
        "days": DAYS,
        "leads_per_day": LEADS_PER_DAY,
        "wall_s": round(wall, 1),
        "per_day_s": round(wall / DAYS, 2),
        "day_s": _median(default),
        "campaign_day_s": {key: {"runs": len(values), "day_s": _median(values)} for key, values in sorted(days.items())},
        "learn_s_per_day": _median(steps["dbt_marts"]),
        "step_s_median": {key: _median(values) for key, values in sorted(steps.items())},
        "peak_rss_mb": round(peak_rss_mb, 1),
        "lead_rows": leads,
        "sends": sends,
        "llm_calls": calls,
        "offline_cost_usd": round(cost, 4),
    }


def _run_timings(dagster_home: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each campaign's `daily_line` run durations, and each step's durations across the default campaign's runs."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = [r for r in instance.get_runs() if r.job_name == "daily_line"]
        days: dict[str, list[float]] = {DEFAULT_CAMPAIGN: []}
        steps: dict[str, list[float]] = {}
        for run in runs:
            stats = instance.get_run_stats(run.run_id)
            campaign = run.tags.get(CAMPAIGN_PARTITION_TAG, DEFAULT_CAMPAIGN)
            days.setdefault(campaign, []).append((stats.end_time or 0) - (stats.start_time or 0))
            if campaign != DEFAULT_CAMPAIGN:
                continue
            for step in instance.get_run_step_stats(run.run_id):
                steps.setdefault(step.step_key, []).append((step.end_time or 0) - (step.start_time or 0))
    return days, steps


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)
