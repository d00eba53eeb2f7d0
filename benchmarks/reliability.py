"""Crashes and faults lose nothing: the `reliability` benchmark (issue 8, item 3).

Real processes on temporary data folders, no mocks:

1. `kill -9` of `factory demo` at random moments of a day, aimed at intake, dbt (learn),
   drafting, gating and sending, each followed by a re-run of the day; plus one kill while
   sending followed by the next day instead of a re-run (`reliability_kills`).
2. The warehouse held by another process for 60 s, once from before the day starts and once
   asked for while the day runs (`reliability_lock`).
3. A whole day with 30% of model calls failing at the local OpenAI-compatible server
   (`reliability_models`).
4. Corrupt files dropped in the lead inbox next to good ones (`reliability_corrupt`).

`RELIABILITY_TRIALS_PER_STAGE` and `RELIABILITY_HOLD_S` shrink a run for development; the
figures in results.json come from the defaults.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from benchmarks.reliability_corrupt import corrupt_inputs
from benchmarks.reliability_kills import TARGETS, calibrate, kill_then_next_day, run_trials
from benchmarks.reliability_lock import lock_held
from benchmarks.reliability_models import model_failures

START = date(2026, 1, 1)
TRIALS_PER_STAGE = int(os.environ.get("RELIABILITY_TRIALS_PER_STAGE", "4"))  # 5 stages: 20 kills
HOLD_S = float(os.environ.get("RELIABILITY_HOLD_S", "60"))
# When the holder asks for the warehouse: before the day starts (the run waits), and when the
# draft stage starts (the run holds the file, so the holder waits for the run).
LOCK_FROM_STEPS = {"before_the_run": None, "during_the_run": "drafts"}


def run() -> dict:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="factory-reliability-") as tmp:
        root = Path(tmp)
        kills_home = root / "kills"
        baseline = calibrate(kills_home, START)
        figures = run_trials(kills_home, START, baseline, TRIALS_PER_STAGE)
        day = START + timedelta(days=TRIALS_PER_STAGE * len(TARGETS) + 1)
        figures["kill_while_sending_then_next_day"] = kill_then_next_day(kills_home, day)
        figures["lock_held_60s"] = {
            label: lock_held(kills_home, day + timedelta(days=2 + i), HOLD_S, step, baseline.day.seconds)
            for i, (label, step) in enumerate(LOCK_FROM_STEPS.items())
        }
        figures["model_failures_30pct"] = model_failures(root / "models", START)
        figures["corrupt_inputs"] = corrupt_inputs(root / "corrupt", START, baseline.day.peak_rss_mb)
    figures["clean_day_s"] = round(baseline.day.seconds, 1)
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    return figures
