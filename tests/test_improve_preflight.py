"""The off-policy preflight: an allocation change takes effect only when the campaign's logged sends back it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_improve_allocation import SPEC, running

from factory_dagster.improve.preflight import MIN_REWARDED_ROWS, preflight_promotion, split_preflight
from factory_dagster.improve.splits import POOLED, SplitRule
from factory_dagster.improve.stats import Decision
from factory_dagster.warehouse.store import connect, insert_rows

RULE = SplitRule("seniority", ("C-level", "Director", "VP"))
ANGLES = [a.name for a in SPEC.angles]
MODEL = SPEC.routing["draft"]
DAY = dt.date(2026, 3, 1)


def logged_warehouse(path: Path, rates: dict[tuple[bool, str], float], leads: int = 3000, url: str | None = None) -> Path:
    """`general` leads over 30 days, angles drawn uniformly (propensity 1/3 each, as the day's allocation
    says), a positive reply with the rate of (senior?, angle): the raw contracts plus the dbt model's columns."""
    rng = np.random.default_rng(7)
    index = np.arange(leads)
    days = [DAY - dt.timedelta(days=40 - int(i) % 30) for i in index]
    seniority = np.resize(["VP", "Manager", "C-level", "Individual Contributor"], leads)
    angles = np.array(ANGLES)[rng.integers(3, size=leads)]
    chance = [rates[(level in RULE.values, angle)] for level, angle in zip(seniority, angles, strict=True)]
    positive = rng.random(leads) < np.array(chance)
    lead_ids = [f"lead_{i:05d}" for i in index]
    arms = [f"{angle}|draft-v1|{MODEL}" for angle in angles]
    known = [day + dt.timedelta(days=3) if hit else None for day, hit in zip(days, positive, strict=True)]
    frames = {
        "leads": pd.DataFrame(
            {"lead_id": lead_ids, "partition_day": days, "run_id": "run", "campaign_id": SPEC.campaign_id}
            | {"source_file": "f.csv", "source_row": index + 1, "email": [f"p{i}@x.example" for i in index]}
            | {"first_name": "Ann", "company": "Co", "industry": "Software", "company_size": 100, "role": "CFO"}
            | {"seniority": seniority, "region": "DACH", "segment": "general", "imported_at": dt.datetime(2026, 1, 1)}
        ),
        "assignments": pd.DataFrame(
            {"partition_day": days, "run_id": [f"run-{d}" for d in days], "campaign_id": SPEC.campaign_id}
            | {"spec_version": "v1", "lead_id": lead_ids, "segment": "general", "arm_id": arms, "angle": angles}
            | {"prompt_version": "draft-v1", "model": MODEL, "propensity": 1 / 3, "policy_version": "loop-v2"}
            | {"reason": "r", "assigned_at": [dt.datetime.combine(d, dt.time(9)) for d in days], "holdout": False}
        ),
        "allocations": pd.DataFrame(
            [
                {"partition_day": d, "run_id": f"run-{d}", "campaign_id": SPEC.campaign_id, "policy_version": "loop-v2"}
                | {"segment": "general", "arm_id": f"{a}|draft-v1|{MODEL}", "angle": a, "prompt_version": "draft-v1"}
                | {"model": MODEL, "sends": 0, "replies": 0, "posterior_mean": 0.015, "p_best": 1 / 3, "share": 1 / 3}
                | {"reason": "r", "created_at": dt.datetime(2026, 1, 1), "holdout": False}
                for d in sorted(set(days))
                for a in ANGLES
            ]
        ),
    }
    outcomes = pd.DataFrame(
        {"send_id": [f"s{i}" for i in index], "campaign_id": SPEC.campaign_id, "lead_id": lead_ids, "partition_day": days}
        | {"segment": "general", "arm_id": arms, "angle": angles, "days_since_send": [(DAY - d).days for d in days]}
        | {"positive_reply": positive, "first_reply_known_day": known, "first_positive_known_day": known}
        | {"first_unsubscribe_known_day": pd.Series([None] * leads, dtype="datetime64[ns]")}
    )
    with connect(path, url=url) as con:
        for table, frame in frames.items():
            insert_rows(con, table, frame)
        con.execute("CREATE SCHEMA intermediate")
        con.register("outcomes_frame", outcomes)
        con.execute("CREATE TABLE intermediate.int_send_outcomes AS SELECT * FROM outcomes_frame")
    return path


def crossing_rates(strong: float, weak: float) -> dict[tuple[bool, str], float]:
    """Seniors answer close_speed, the others team_time."""
    return {
        (senior, a): strong if a == ("close_speed" if senior else "team_time") else weak
        for senior in (True, False)
        for a in ANGLES
    }


def split() -> object:
    return running(challengers=(RULE.name,), control=POOLED, kind="segment_split", share=0.2)


def promote() -> Decision:
    return Decision("promote", ("P(better) 0.97 on the planned sample",), RULE.name, {"look": "final"})


def test_a_split_the_logs_back_passes_with_its_figures(tmp_path: Path, engine_url: str | None) -> None:
    path = logged_warehouse(tmp_path / "w.duckdb", crossing_rates(0.08, 0.01), url=engine_url)
    with connect(path, url=engine_url) as con:
        check = split_preflight(con, SPEC, split(), RULE.name, DAY)
        decision = preflight_promotion(con, SPEC, split(), promote(), DAY)
    assert check.passed, check.reason
    assert check.new["ci_low"] > check.current["value"] and check.rows == 3000
    assert decision.action == "promote" and decision.winner == RULE.name
    assert decision.evidence["preflight"]["passed"] and "lower bound clears" in decision.reasons[-1]


def test_a_split_the_logs_do_not_back_is_refused_and_the_state_kept(tmp_path: Path, engine_url: str | None) -> None:
    path = logged_warehouse(
        tmp_path / "w.duckdb", dict.fromkeys(((s, a) for s in (True, False) for a in ANGLES), 0.03), url=engine_url
    )
    with connect(path, url=engine_url) as con:
        decision = preflight_promotion(con, SPEC, split(), promote(), DAY)
    assert decision.action == "retire" and decision.winner is None
    assert "refused" in decision.reasons[-1] and "does not clear" in decision.reasons[-1]
    figures = decision.evidence["preflight"]
    assert not figures["passed"] and figures["new"]["ci_low"] <= figures["current"]["value"]


def test_too_few_rewarded_rows_refuse_and_other_kinds_pass_untouched(tmp_path: Path, engine_url: str | None) -> None:
    path = logged_warehouse(tmp_path / "w.duckdb", crossing_rates(0.08, 0.01), leads=60, url=engine_url)
    with connect(path, url=engine_url) as con:
        check = split_preflight(con, SPEC, split(), RULE.name, DAY)
        prompt = running()  # a prompt experiment changes the message, not the allocation
        untouched = preflight_promotion(con, SPEC, prompt, promote(), DAY)
    assert not check.passed and f"{MIN_REWARDED_ROWS} needed" in check.reason
    assert untouched == promote()


@pytest.mark.parametrize("action", ["continue", "retire", "roll_back"])
def test_only_promotions_are_checked(tmp_path: Path, action: str) -> None:
    decision = Decision(action, ("why",), None, {})
    with connect(tmp_path / "empty.duckdb") as con:
        assert preflight_promotion(con, SPEC, split(), decision, DAY) is decision
