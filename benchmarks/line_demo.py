"""The whole line: `factory demo` for 14 days on a fresh data folder, timed end to end.

Measures what `make run` costs after setup: wall time, time per day, and the peak
resident memory of the process, plus what the run produced.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

DAYS = 14
LEADS_PER_DAY = 180  # the demo's default


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
    return {
        "days": DAYS,
        "leads_per_day": LEADS_PER_DAY,
        "wall_s": round(wall, 1),
        "per_day_s": round(wall / DAYS, 2),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "lead_rows": leads,
        "sends": sends,
        "llm_calls": calls,
        "offline_cost_usd": round(cost, 4),
    }
