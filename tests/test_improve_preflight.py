"""The off-policy preflight: an allocation change takes effect only when the campaign's logged sends back it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from test_improve_allocation import SPEC, running

from factory_dagster.improve.preflight import MIN_REWARDED_ROWS, preflight_promotion, split_preflight
from factory_dagster.improve.splits import POOLED, SplitRule
from factory_dagster.improve.stats import Decision
from factory_dagster.warehouse.store import connect

RULE = SplitRule("seniority", ("C-level", "Director", "VP"))
ANGLES = [a.name for a in SPEC.angles]
MODEL = SPEC.routing["draft"]
DAY = dt.date(2026, 3, 1)
OUTCOMES = """CREATE TABLE intermediate.int_send_outcomes (
    send_id VARCHAR, campaign_id VARCHAR, lead_id VARCHAR, partition_day DATE, segment VARCHAR, arm_id VARCHAR,
    angle VARCHAR, days_since_send INTEGER, positive_reply BOOLEAN, first_reply_known_day DATE,
    first_positive_known_day DATE, first_unsubscribe_known_day DATE)"""


def logged_warehouse(path: Path, rates: dict[tuple[bool, str], float], leads: int = 3000) -> Path:
    """`general` leads over 30 days, angles drawn uniformly (propensity 1/3 each, as the day's allocation
    says), a positive reply with the rate of (senior?, angle): the raw contracts plus the dbt model's columns."""
    rng = np.random.default_rng(7)
    start = DAY - dt.timedelta(days=40)
    with connect(path) as con:
        con.execute("CREATE SCHEMA intermediate")
        con.execute(OUTCOMES)
        leads_rows, assignments, outcomes = [], [], []
        for i in range(leads):
            day = start + dt.timedelta(days=i % 30)
            seniority = ("VP", "Manager", "C-level", "Individual Contributor")[i % 4]
            angle = ANGLES[int(rng.integers(3))]
            positive = bool(rng.random() < rates[(seniority in RULE.values, angle)])
            lead, arm = f"lead_{i:05d}", f"{angle}|draft-v1|{MODEL}"
            leads_rows.append((lead, day, "run", SPEC.campaign_id, "f.csv", i + 1, f"p{i}@x.example", "Ann", "Lee", "Co"))
            leads_rows[-1] += ("Software", 100, "CFO", seniority, "DACH", None, "general", dt.datetime(2026, 1, 1))
            assignments.append((day, f"run-{day}", SPEC.campaign_id, "v1", lead, "general", arm, angle, "draft-v1", MODEL))
            assignments[-1] += (1 / 3, "loop-v2", "r", dt.datetime.combine(day, dt.time(9)), False)
            known = day + dt.timedelta(days=3) if positive else None
            outcomes.append(
                (f"s{i}", SPEC.campaign_id, lead, day, "general", arm, angle, (DAY - day).days, positive, known, known, None)
            )
        con.executemany(f"INSERT INTO raw.leads VALUES ({', '.join(['?'] * 18)})", leads_rows)
        con.executemany(
            "INSERT INTO raw.assignments (partition_day, run_id, campaign_id, spec_version, lead_id, segment, arm_id, angle, "
            "prompt_version, model, propensity, policy_version, reason, assigned_at, holdout) VALUES "
            f"({', '.join(['?'] * 15)})",
            assignments,
        )
        con.executemany(f"INSERT INTO intermediate.int_send_outcomes VALUES ({', '.join(['?'] * 12)})", outcomes)
        days = sorted({a[0] for a in assignments})
        con.executemany(
            "INSERT INTO raw.allocations (partition_day, run_id, campaign_id, policy_version, segment, arm_id, angle, "
            "prompt_version, model, sends, replies, posterior_mean, p_best, share, reason, created_at, holdout) VALUES "
            f"({', '.join(['?'] * 17)})",
            [
                (d, f"run-{d}", SPEC.campaign_id, "loop-v2", "general", f"{a}|draft-v1|{MODEL}", a, "draft-v1", MODEL)
                + (0, 0, 0.015, 1 / 3, 1 / 3, "r", dt.datetime(2026, 1, 1), False)
                for d in days
                for a in ANGLES
            ],
        )
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


def test_a_split_the_logs_back_passes_with_its_figures(tmp_path: Path) -> None:
    path = logged_warehouse(tmp_path / "w.duckdb", crossing_rates(0.08, 0.01))
    with connect(path) as con:
        check = split_preflight(con, SPEC, split(), RULE.name, DAY)
        decision = preflight_promotion(con, SPEC, split(), promote(), DAY)
    assert check.passed, check.reason
    assert check.new["ci_low"] > check.current["value"] and check.rows == 3000
    assert decision.action == "promote" and decision.winner == RULE.name
    assert decision.evidence["preflight"]["passed"] and "lower bound clears" in decision.reasons[-1]


def test_a_split_the_logs_do_not_back_is_refused_and_the_state_kept(tmp_path: Path) -> None:
    path = logged_warehouse(tmp_path / "w.duckdb", dict.fromkeys(((s, a) for s in (True, False) for a in ANGLES), 0.03))
    with connect(path) as con:
        decision = preflight_promotion(con, SPEC, split(), promote(), DAY)
    assert decision.action == "retire" and decision.winner is None
    assert "refused" in decision.reasons[-1] and "does not clear" in decision.reasons[-1]
    figures = decision.evidence["preflight"]
    assert not figures["passed"] and figures["new"]["ci_low"] <= figures["current"]["value"]


def test_too_few_rewarded_rows_refuse_and_other_kinds_pass_untouched(tmp_path: Path) -> None:
    path = logged_warehouse(tmp_path / "w.duckdb", crossing_rates(0.08, 0.01), leads=60)
    with connect(path) as con:
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
