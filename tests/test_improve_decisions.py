"""The daily decision step and its dbt models on a real warehouse.

dbt builds the loop's models once per module on a hand-counted fixture (another campaign than
the spec's); the intermediate counts and marts.experiment_results are views, so each decision
test copies that warehouse and adds its own traffic, and the step reads it at once.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from helpers_db import CAMPAIGN, OTHER_CAMPAIGN, SPEC, query, run_for
from warehouse_copy import copy_warehouse

from factory_dagster.demo import loop_lines
from factory_dagster.improve.decisions import (
    arm_counts,
    decide_experiment,
    decide_running,
    promoted_state,
    run_decision_step,
)
from factory_dagster.improve.experiments import Experiment, auto_approve, propose
from factory_dagster.improve.metrics import FIRST_ROUND_GUARDRAIL, relative_guardrails
from factory_dagster.improve.stats import Guardrail, StoppingRule, srm_sequential_p_value
from factory_dagster.improve.store import (
    apply_transition,
    decide_by_person,
    experiment_events,
    load_experiment,
    move_experiment,
    save_proposed,
)
from factory_dagster.improve.versions import current_version, initial_state, version_history
from factory_dagster.learning.dbt_runner import invoke
from factory_dagster.settings import Paths
from factory_dagster.warehouse import postgres
from factory_dagster.warehouse.store import connect, insert_rows

D0 = date(2026, 3, 2)
SEGMENT = "scaleup_finance_leaders"
OTHER_SEGMENT = "enterprise_finance"
Z95 = 1.959963984540054
MODELS = "+int_experiment_arm_counts +experiment_results +loop_lift"


def at(day: date, hour: int = 6) -> datetime:
    return datetime(day.year, day.month, day.day, hour)


def design(
    campaign_id: str = CAMPAIGN,
    challenger: str = "draft-v3",
    segments: tuple[str, ...] = (SEGMENT,),
    kind: str = "prompt_version",
    control: str = "draft-v1",
    figures: dict | None = None,
    proposed: datetime = datetime(2026, 2, 28, 6),
) -> Experiment:
    """A prompt challenger at half the segment's traffic, sized for a large effect (434 mature sends per arm)."""
    return propose(
        campaign_id=campaign_id,
        kind=kind,
        hypothesis="Opening with the lead's month-end pain lifts positive replies",
        control=control,
        challengers=(challenger,),
        target_segments=segments,
        primary_metric="positive_reply_rate",
        base_rate=0.05,
        mde=1.0,
        guardrails=(Guardrail("unsubscribe_rate", 0.5, 0.005, relative=True), Guardrail("complaint_rate", 0.01, 0.0008)),
        max_traffic_share=0.5,
        motivating_figures=figures or {"positive_reply_rate": 0.05},
        proposed_by="improve stage (offline-premium)",
        at=proposed,
        stopping_rule=StoppingRule(draws=4000),
    )


def approved(con: duckdb.DuckDBPyConnection, experiment: Experiment) -> Experiment:
    assert save_proposed(con, experiment, run_for(experiment.proposed_at.date(), campaign_id=experiment.campaign_id))
    moved, _ = decide_by_person(con, experiment.experiment_id, "approve", "ana", "clear hypothesis", "cli", at(D0, 5))
    return moved


@dataclass(frozen=True)
class Traffic:
    """Leads of one arm (or of the holdout / the loop outside experiments), sent on one day."""

    campaign_id: str
    prefix: str
    segment: str
    n: int
    day: date | None  # None: assigned, never sent
    experiment_id: str | None = None
    arm: str | None = None
    holdout: bool | None = False
    positives: int = 0
    unsubscribes: int = 0
    complaints: int = 0
    negatives: int = 0  # replied, not positively

    def insert(self, con: duckdb.DuckDBPyConnection, assigned_on: date = D0) -> None:
        leads = [f"{self.prefix}-{i}" for i in range(self.n)]
        assignments = pd.DataFrame(
            {
                "partition_day": assigned_on,
                "run_id": f"run-{assigned_on}",
                "campaign_id": self.campaign_id,
                "spec_version": "s1",
                "lead_id": leads,
                "segment": self.segment,
                "arm_id": f"close_speed|{self.arm or 'draft-v1'}|cheap",
                "angle": "close_speed",
                "prompt_version": self.arm or "draft-v1",
                "model": "cheap",
                "propensity": 0.5,
                "policy_version": "loop-v2",
                "reason": "test traffic",
                "assigned_at": at(assigned_on),
                "experiment_id": self.experiment_id,
                "experiment_arm": self.arm,
                "holdout": self.holdout,
            }
        )
        insert_rows(con, "assignments", assignments)
        if self.day is None:
            return
        sends = assignments[
            ["campaign_id", "spec_version", "lead_id", "segment", "arm_id", "angle", "prompt_version", "model"]
        ].assign(
            send_id="snd-" + assignments.lead_id,
            message_id="msg-" + assignments.lead_id,
            partition_day=self.day,
            message_day=self.day,
            run_id=f"run-{self.day}",
            to_email=assignments.lead_id + "@example.com",
            subject="Hi",
            body_sha256="x",
            transport="file",
            transport_ref="x.eml",
            sent_at=at(self.day, 9),
        )
        insert_rows(con, "sends", sends)
        types = (
            ["positive_reply"] * self.positives
            + ["unsubscribed"] * self.unsubscribes
            + ["complained"] * self.complaints
            + ["replied"] * self.negatives
        )
        outcome = [(lead, kind) for lead, kind in zip(leads, types, strict=False)]
        events = [(lead, "delivered", self.day) for lead in leads] + [
            (lead, kind, self.day + timedelta(days=1)) for lead, kind in outcome
        ]
        add_events(con, self.campaign_id, events)


def add_events(con: duckdb.DuckDBPyConnection, campaign_id: str, events: list[tuple[str, str, date]]) -> None:
    frame = pd.DataFrame(events, columns=["lead_id", "event_type", "day"])
    insert_rows(
        con,
        "events",
        pd.DataFrame(
            {
                "event_id": "evt-" + frame.lead_id + "-" + frame.event_type,
                "send_id": "snd-" + frame.lead_id,
                "event_type": frame.event_type,
                "occurred_at": frame.day.map(lambda d: at(d, 10)),
                "partition_day": frame.day,
                "run_id": frame.day.map(lambda d: f"run-{d}"),
                "campaign_id": campaign_id,
                "source_file": "events.csv",
                "source_row": range(len(frame)),
                "imported_at": frame.day.map(lambda d: at(d, 12)),
            }
        ),
    )


def clock(con: duckdb.DuckDBPyConnection, campaign_id: str, lead_id: str, day: date) -> None:
    """An event occurring on `day`: the latest day with events, which maturity counts from."""
    add_events(con, campaign_id, [(lead_id, "opened", day)])


# ---------------------------------------------------------------- the hand-counted fixture


def fixture_traffic(experiment_id: str) -> tuple[Traffic, ...]:
    """Hand-counted traffic of the fixture campaign; the experiment's counts are in the comments."""
    young = D0 + timedelta(days=5)
    return (
        # control: 6 assigned, 4 mature sends (1 positive, 1 unsubscribe, 1 negative reply), 1 young send, 1 unsent
        Traffic(OTHER_CAMPAIGN, "c-old", SEGMENT, 4, D0, experiment_id, "draft-v1", positives=1, unsubscribes=1, negatives=1),
        Traffic(OTHER_CAMPAIGN, "c-new", SEGMENT, 1, young, experiment_id, "draft-v1", positives=1),
        Traffic(OTHER_CAMPAIGN, "c-none", SEGMENT, 1, None, experiment_id, "draft-v1"),
        # challenger: 5 assigned, 3 mature sends (2 positives, 1 complaint), 1 young send, 1 unsent
        Traffic(OTHER_CAMPAIGN, "x-old", SEGMENT, 3, D0, experiment_id, "draft-v3", positives=2, complaints=1),
        Traffic(OTHER_CAMPAIGN, "x-new", SEGMENT, 1, young, experiment_id, "draft-v3"),
        Traffic(OTHER_CAMPAIGN, "x-none", SEGMENT, 1, None, experiment_id, "draft-v3"),
        # outside the experiment: loop leads in the other segment, the holdout, and a lead from before the holdout
        Traffic(OTHER_CAMPAIGN, "l-ent", OTHER_SEGMENT, 3, D0, positives=1),
        Traffic(OTHER_CAMPAIGN, "h-scale", SEGMENT, 4, D0, holdout=True, positives=1),
        Traffic(OTHER_CAMPAIGN, "h-ent", OTHER_SEGMENT, 2, D0, holdout=True),
        Traffic(OTHER_CAMPAIGN, "legacy", SEGMENT, 1, D0, holdout=None, positives=1),
        # the spec's campaign, for the demo's loop lift: 2 of 5 loop sends positive against 1 of 5 holdout sends
        Traffic(CAMPAIGN, "demo-loop", SEGMENT, 5, D0, positives=2),
        Traffic(CAMPAIGN, "demo-hold", SEGMENT, 5, D0, holdout=True, positives=1),
    )


LOOK_DAY = D0 + timedelta(days=8)
# Tests that add traffic after the build read dbt's live views over it: on PostgreSQL the copy has them as tables of the
# built rows, so these run on DuckDB only until the dbt project builds on PostgreSQL (the demo's reader is DuckDB's too).
DUCKDB_ONLY = pytest.mark.parametrize("engine_url", [None], ids=["duckdb"])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, dbt_manifest) -> tuple[Path, Experiment]:
    """The fixture's experiment (running since D0, looked at on D0 + 8) and the loop's dbt models built on it."""
    warehouse = tmp_path_factory.mktemp("built") / "warehouse.duckdb"
    experiment = design(campaign_id=OTHER_CAMPAIGN)
    with connect(warehouse) as con:
        approved(con, experiment)
        move_experiment(con, experiment.experiment_id, "running", "decision step", "started", {}, at(D0), partition_day=D0)
        for traffic in fixture_traffic(experiment.experiment_id):
            traffic.insert(con)
        clock(con, OTHER_CAMPAIGN, "c-old-0", LOOK_DAY)  # D0's sends are 8 days old: mature; D0 + 5's are not
    # Intervals from one positive reply a side, so the hand-counted fixture has them (the line waits for 5).
    build = ["build", "--select", MODELS, "--indirect-selection", "cautious", "--vars", '{"loop_lift_min_events": 1}']
    run = invoke(build, warehouse, warehouse.parent / "dbt_target")
    assert run.success, run.describe_failure()
    with connect(warehouse) as con:
        outcome = decide_experiment(con, SPEC, load_experiment(con, experiment.experiment_id), LOOK_DAY, "run-look", at(LOOK_DAY))
    assert outcome.action == "continue", outcome
    return warehouse, experiment


@pytest.fixture
def con(built: tuple[Path, Experiment], tmp_path: Path, engine_url: str | None):
    """A private copy of the built warehouse (same file name: dbt's views name the database after it); on PostgreSQL,
    its rows copied into a fresh database, dbt's views as tables (tests/warehouse_copy.py)."""
    copy = tmp_path / built[0].name
    shutil.copy(built[0], copy)
    if engine_url:
        with connect(copy, read_only=True) as source, postgres.connect_postgres(engine_url) as target:
            copy_warehouse(source, target)
    with connect(copy, url=engine_url) as connection:
        yield connection


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_arm_counts_match_the_hand_count(con, built) -> None:
    _, experiment = built
    counts = {r["arm"]: r for r in rows(con, "SELECT * FROM intermediate.int_experiment_arm_counts")}
    columns = ("role", "assigned", "sends", "mature_sends", "positive_replies", "unsubscribes", "complaints", "negative_replies")
    assert {arm: tuple(r[c] for c in columns) for arm, r in counts.items()} == {
        "draft-v1": ("control", 6, 5, 4, 1, 1, 0, 1),
        "draft-v3": ("challenger", 5, 4, 3, 2, 0, 1, 0),
    }
    control = counts["draft-v1"]
    assert (control["started_day"], control["concluded_day"], control["latest_event_day"]) == (D0, None, LOOK_DAY)
    assert (control["outcome_window_days"], control["state"], control["experiment_id"]) == (
        7,
        "running",
        experiment.experiment_id,
    )


def test_experiment_results_join_the_counts_with_the_latest_look(con, built) -> None:
    _, experiment = built
    results = {r["arm"]: r for r in rows(con, "SELECT * FROM marts.experiment_results")}
    assert set(results) == {"draft-v1", "draft-v3"}
    control, challenger = results["draft-v1"], results["draft-v3"]
    assert (control["positive_reply_rate"], challenger["positive_reply_rate"]) == (pytest.approx(1 / 4), pytest.approx(2 / 3))
    # The look's statistics are decide's own, on exactly these counts.
    arms = arm_counts(experiment, rows(con, "SELECT * FROM intermediate.int_experiment_arm_counts"))
    decision = decide_running(experiment, arms, days_running=8, look=LOOK_DAY)
    versus = decision.evidence["challengers"]["draft-v3"]
    assert challenger["p_better"] == pytest.approx(versus["p_better"])
    assert (challenger["lift"], challenger["lift_low"], challenger["lift_high"]) == pytest.approx(
        (versus["lift"], *versus["lift_interval"])
    )
    assert challenger["expected_loss_relative"] == pytest.approx(versus["relative_expected_loss"])
    assert control["posterior_mean"] == pytest.approx(decision.evidence["arms"]["draft-v1"]["posterior_mean"])
    assert control["p_better"] is None and control["guardrail_status"] is None
    assert challenger["guardrail_status"] in {"clear", "in_doubt"}  # one complaint in 3 sends, far from certain
    assert control["interval_low"] < control["posterior_mean"] < control["interval_high"]
    assert {r["decision"] for r in results.values()} == {"continue"} and control["look_day"] == LOOK_DAY
    assert control["srm_p_value"] == challenger["srm_p_value"] == pytest.approx(srm_sequential_p_value([6, 5], [0.5, 0.5]))
    assert f"3 of {experiment.planned_sample_size} planned mature sends" in control["reasons"]


def _wald(p1: float, n1: int, p0: float, n0: int) -> tuple[float, float]:
    half = Z95 * math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    return p1 - p0 - half, p1 - p0 + half


def test_loop_lift_against_the_holdout(con) -> None:
    lift = {r["segment"]: r for r in rows(con, "SELECT * FROM marts.loop_lift WHERE campaign_id = ?", [OTHER_CAMPAIGN])}
    assert set(lift) == {None, SEGMENT, OTHER_SEGMENT}
    campaign = lift[None]  # 7 experiment + 3 other loop sends (4 positive) against 6 holdout sends (1 positive)
    assert (
        campaign["loop_sends"],
        campaign["loop_positive_replies"],
        campaign["holdout_sends"],
        campaign["holdout_positive_replies"],
    ) == (
        10,
        4,
        6,
        1,
    )
    p1, p0 = 4 / 10, 1 / 6
    assert campaign["difference"] == pytest.approx(p1 - p0)
    assert (campaign["difference_low"], campaign["difference_high"]) == pytest.approx(_wald(p1, 10, p0, 6))
    se = math.sqrt((1 - p1) / 4 + (1 - p0) / 1)
    assert campaign["lift"] == pytest.approx(p1 / p0 - 1)
    assert (campaign["lift_low"], campaign["lift_high"]) == pytest.approx(
        (math.exp(math.log(p1 / p0) - Z95 * se) - 1, math.exp(math.log(p1 / p0) + Z95 * se) - 1)
    )
    scaleup = lift[SEGMENT]  # the legacy lead (holdout unknown) counts on neither side
    assert (
        scaleup["loop_sends"],
        scaleup["loop_positive_replies"],
        scaleup["holdout_sends"],
        scaleup["holdout_positive_replies"],
    ) == (
        7,
        3,
        4,
        1,
    )
    enterprise = lift[OTHER_SEGMENT]  # no positive reply in the holdout: no ratio, no interval for it
    assert (enterprise["loop_rate"], enterprise["holdout_rate"], enterprise["lift"], enterprise["lift_low"]) == (
        pytest.approx(1 / 3),
        0.0,
        None,
        None,
    )


# ---------------------------------------------------------------- the decision step

T0 = LOOK_DAY + timedelta(days=1)  # after the fixture's latest event: maturity counts from the tests' own clock


@DUCKDB_ONLY
def test_an_approved_experiment_starts_runs_and_is_promoted_with_a_new_champion(con) -> None:
    experiment = approved(con, design())
    started, first_look = run_decision_step(con, SPEC, T0, "run-d0", at(T0))
    assert (started.action, started.state, first_look.action) == ("started", "running", "continue")
    assert current_version(con, SPEC).version == 0

    Traffic(CAMPAIGN, "ctl", SEGMENT, 500, T0, experiment.experiment_id, "draft-v1", positives=25, unsubscribes=4).insert(con)
    Traffic(CAMPAIGN, "chl", SEGMENT, 500, T0, experiment.experiment_id, "draft-v3", positives=60, unsubscribes=3).insert(con)
    day = T0 + timedelta(days=6)
    clock(con, CAMPAIGN, "ctl-0", day)
    (young,) = run_decision_step(con, SPEC, day, "run-d6", at(day))
    assert young.action == "continue" and f"0 of {experiment.planned_sample_size} planned" in young.detail  # none mature yet

    day = T0 + timedelta(days=8)
    clock(con, CAMPAIGN, "ctl-1", day)
    (promoted,) = run_decision_step(con, SPEC, day, "run-d8", at(day))
    assert (promoted.action, promoted.state, promoted.version) == ("promote", "promoted", 1)
    assert load_experiment(con, experiment.experiment_id).winner == "draft-v3"
    version = current_version(con, SPEC)
    assert version.state.champions == {**initial_state(SPEC).champions, SEGMENT: "draft-v3"}
    assert (version.experiment_id, version.actor) == (experiment.experiment_id, "decision step (bayes-fixed-horizon-v2)")
    history = experiment_events(con, experiment.experiment_id)
    assert [(e["from_state"], e["to_state"], e["actor"]) for e in history] == [
        ("proposed", "approved", "ana"),
        ("approved", "running", "decision step"),
        ("running", "promoted", "decision step (bayes-fixed-horizon-v2)"),
    ]
    assert json.loads(history[-1]["evidence_json"])["winner"] == "draft-v3" and history[-1]["partition_day"] == day
    looks = query(
        con,
        "SELECT partition_day, arm, decision FROM raw.experiment_looks WHERE experiment_id = ? ORDER BY 1, 2",
        [experiment.experiment_id],
    )
    assert looks == [
        (T0, "draft-v1", "continue"),
        (T0, "draft-v3", "continue"),
        (T0 + timedelta(days=6), "draft-v1", "continue"),
        (T0 + timedelta(days=6), "draft-v3", "continue"),
        (day, "draft-v1", "promote"),
        (day, "draft-v3", "promote"),
    ]
    # The mart shows the final look beside the counts it was made on.
    result = rows(
        con, "SELECT * FROM marts.experiment_results WHERE experiment_id = ? AND arm = 'draft-v3'", [experiment.experiment_id]
    )[0]
    assert (result["state"], result["decision"], result["winner"], result["mature_sends"], result["look"]) == (
        "promoted",
        "promote",
        "draft-v3",
        500,
        "final",
    )

    # A re-run of the day decides nothing twice: the experiment is concluded, the version stays.
    assert run_decision_step(con, SPEC, day, "run-d8-again", at(day, 7)) == []
    assert [v.version for v in version_history(con, SPEC)] == [0, 1]


@DUCKDB_ONLY
def test_a_rerun_of_the_day_does_not_look_twice(con) -> None:
    experiment = approved(con, design())
    run_decision_step(con, SPEC, T0, "run-d0", at(T0))
    again = run_decision_step(con, SPEC, T0, "run-d0-again", at(T0, 7))
    assert [(o.experiment_id, o.action) for o in again] == [(experiment.experiment_id, "already looked")]
    earlier = decide_experiment(
        con, SPEC, load_experiment(con, experiment.experiment_id), T0 - timedelta(days=1), "run-old", at(T0)
    )
    assert earlier.action == "already looked"  # an older day re-run after a later look leaves it alone
    assert query(con, "SELECT count(*) FROM raw.experiment_looks WHERE experiment_id = ?", [experiment.experiment_id]) == [(2,)]
    # A first run of an older day once later events are in (a backfill) does not decide on what only later days knew.
    clock(con, OTHER_CAMPAIGN, "c-old-1", T0 + timedelta(days=5))
    backfill = decide_experiment(
        con, SPEC, load_experiment(con, experiment.experiment_id), T0 + timedelta(days=3), "run-bf", at(T0)
    )
    assert backfill.action == "not decided" and "a re-run of an earlier day" in backfill.detail


@DUCKDB_ONLY
def test_a_guardrail_breach_rolls_back_without_changing_the_loop(con) -> None:
    experiment = approved(con, design())
    run_decision_step(con, SPEC, T0, "run-d0", at(T0))
    # The reply-rate trap: more positive replies, but unsubscribes far over control × 1.5.
    Traffic(CAMPAIGN, "ctl", SEGMENT, 200, T0, experiment.experiment_id, "draft-v1", positives=10, unsubscribes=1).insert(con)
    Traffic(CAMPAIGN, "chl", SEGMENT, 200, T0, experiment.experiment_id, "draft-v3", positives=16, unsubscribes=20).insert(con)
    day = T0 + timedelta(days=8)
    clock(con, CAMPAIGN, "ctl-0", day)
    (outcome,) = run_decision_step(con, SPEC, day, "run-d8", at(day))
    assert (outcome.action, outcome.state, outcome.version) == ("roll_back", "rolled_back", None)
    assert "guardrail breached: draft-v3 unsubscribe_rate" in outcome.detail
    assert current_version(con, SPEC).version == 0
    status = query(
        con,
        "SELECT guardrail_status FROM raw.experiment_looks WHERE experiment_id = ? AND partition_day = ? AND role = 'challenger'",
        [experiment.experiment_id, day],
    )
    assert status == [("breached",)]


def test_one_running_experiment_per_segment_the_next_waits(con) -> None:
    first = approved(con, design())
    second = approved(con, design(challenger="draft-v4", proposed=at(T0 - timedelta(days=1))))  # the younger proposal
    elsewhere = approved(con, design(challenger="draft-v5", segments=(OTHER_SEGMENT,)))
    outcomes = {o.experiment_id: o for o in run_decision_step(con, SPEC, T0, "run-d0", at(T0))}
    assert outcomes[first.experiment_id].state == outcomes[elsewhere.experiment_id].state == "running"
    waiting = outcomes[second.experiment_id]
    assert (waiting.action, waiting.state) == ("waiting", "approved")
    assert waiting.detail == f"waits: {SEGMENT} runs {first.experiment_id}"
    # A routing canary is another layer: it starts beside the prompt experiment, and the next canary waits for it.
    canary = approved(con, design(kind="routing", control="cheap", challenger="nano", figures={"stage": "draft"}))
    later = approved(con, design(kind="routing", control="cheap", challenger="micro", figures={"stage": "draft"}))
    outcomes = {o.experiment_id: o for o in run_decision_step(con, SPEC, T0, "run-d0b", at(T0, 7))}
    assert outcomes[canary.experiment_id].state == "running"  # started, then looked at the same day
    assert outcomes[later.experiment_id].detail == f"waits: {SEGMENT} runs {canary.experiment_id}"


def test_a_canary_whose_drafts_fail_the_gate_more_often_is_rolled_back_before_any_send_matures() -> None:
    """The first-round guardrail counts draft candidates (trials) the day they are written: no outcome window."""
    canary = design(kind="routing", control="cheap", challenger="nano", figures={"stage": "draft"})
    canary = replace(
        canary,
        state="running",
        max_traffic_share=0.2,
        guardrails=canary.guardrails + relative_guardrails({"first_round_failure_rate": 0.15}, (FIRST_ROUND_GUARDRAIL,)),
    )
    rows = [
        # Two days of a demo canary: the gate rejected 15% of the control's first-round drafts, 30% of nano's.
        {"arm": "cheap", "assigned": 280, "mature_sends": 0, "first_round_drafts": 834, "first_round_failures": 124},
        {"arm": "nano", "assigned": 70, "mature_sends": 0, "first_round_drafts": 208, "first_round_failures": 62},
    ]
    counts = {a.arm: a for a in arm_counts(canary, rows)}
    assert counts["nano"].guardrails["first_round_failure_rate"].trials == 208 and counts["nano"].primary.trials == 0
    decision = decide_running(canary, list(counts.values()), days_running=2, look=T0)
    assert decision.action == "roll_back"
    assert any("first_round_failure_rate" in reason for reason in decision.reasons)
    steady = [dict(rows[0]), dict(rows[1], first_round_failures=32)]
    assert decide_running(canary, arm_counts(canary, steady), days_running=2, look=T0).action == "continue"


def test_a_routing_promotion_moves_the_stage_and_other_kinds_move_nothing() -> None:
    state = initial_state(SPEC)
    routing = design(kind="routing", control="gpt-4.1-mini", challenger="gpt-4.1-nano", figures={"stage": "draft"})
    assert promoted_state(state, routing, "gpt-4.1-nano").routing == {"draft": "gpt-4.1-nano"}
    assert promoted_state(state, design(), "draft-v3").champions[SEGMENT] == "draft-v3"
    assert promoted_state(state, design(kind="allocation_policy"), "draft-v3") is None


def test_an_unknown_metric_is_not_decided_as_if_it_had_no_events(con) -> None:
    experiment = approved(con, design())
    run_decision_step(con, SPEC, T0, "run-d0", at(T0))
    odd = Experiment(**{**load_experiment(con, experiment.experiment_id).__dict__, "primary_metric": "meetings_held"})
    outcome = decide_experiment(con, SPEC, odd, T0 + timedelta(days=1), "run-d1", at(T0))
    assert outcome.action == "not decided" and "no counts for metrics ['meetings_held']" in outcome.detail


def test_without_dbt_models_the_step_starts_but_decides_nothing(tmp_path: Path) -> None:
    with connect(tmp_path / "fresh.duckdb") as con:
        assert run_decision_step(con, SPEC, T0, "run-d0", at(T0)) == []
        approved(con, design())
        (started, undecided) = run_decision_step(con, SPEC, T0, "run-d0", at(T0))
        assert (started.action, undecided.action) == ("started", "not decided")
        assert "dbt has not built" in undecided.detail


@DUCKDB_ONLY
def test_the_demo_tells_the_loop_from_the_warehouse(con, tmp_path: Path) -> None:
    promoted = approved(con, design())
    propose_auto(con)
    waiting = design(challenger="draft-v5", segments=(OTHER_SEGMENT,))
    save_proposed(con, waiting, run_for(T0, campaign_id=CAMPAIGN))
    run_decision_step(con, SPEC, T0, "run-t0", at(T0))
    Traffic(CAMPAIGN, "ctl", SEGMENT, 500, T0, promoted.experiment_id, "draft-v1", positives=25, unsubscribes=4).insert(con)
    Traffic(CAMPAIGN, "chl", SEGMENT, 500, T0, promoted.experiment_id, "draft-v3", positives=60, unsubscribes=3).insert(con)
    clock(con, CAMPAIGN, "ctl-0", T0 + timedelta(days=8))
    run_decision_step(con, SPEC, T0 + timedelta(days=8), "run-t8", at(T0 + timedelta(days=8)))
    paths = Paths.under(tmp_path / "home")
    paths.home.mkdir()
    con.execute("CHECKPOINT")
    shutil.copy(Path(con.execute("PRAGMA database_list").fetchall()[0][2]), paths.warehouse)
    loop, *looks, version, lift = loop_lines(paths)
    assert any(f"{promoted.experiment_id} (draft-v3 vs draft-v1) -> promote, " in line for line in looks), looks
    assert all(line.startswith("decision step, ") for line in looks)
    assert loop == (
        "loop: 3 experiments proposed; approved 1 automatically and 1 by a person, 1 waiting for a person, 0 rejected; "
        "1 running; 1 promoted, 0 retired, 0 rolled back (factory experiments list)"
    )
    assert version.startswith(f"loop version 1: champions {SEGMENT} draft-v3, {OTHER_SEGMENT} draft-v1, ")
    assert version.endswith("; routing as the spec says (factory versions; factory rollback)")
    se = math.sqrt((1 - 0.4) / 2 + (1 - 0.2) / 1)
    low, high = math.exp(math.log(2) - Z95 * se) - 1, math.exp(math.log(2) + Z95 * se) - 1
    assert lift == (
        "loop lift: 40.00% positive replies per mature send (loop, 5 sends) vs 20.00% (holdout, 5): "
        f"+100% [{low:+.0%}, {high:+.0%}] (95%)"
    )


def propose_auto(con: duckdb.DuckDBPyConnection) -> Experiment:
    """A proposal in the other segment that the spec's policy approves without a person."""
    experiment = design(challenger="draft-v4", segments=(OTHER_SEGMENT,))
    experiment = Experiment(**{**experiment.__dict__, "max_traffic_share": 0.2})
    save_proposed(con, experiment, run_for(T0, campaign_id=CAMPAIGN))
    moved, event = auto_approve(experiment, SPEC.improve.auto_approve, at(T0, 5))
    apply_transition(con, moved, event)
    return moved


@DUCKDB_ONLY
def test_a_spec_window_the_warehouse_does_not_count_by_decides_nothing(con) -> None:
    approved(con, design())
    patient = SPEC.model_copy(update={"improve": SPEC.improve.model_copy(update={"outcome_window_days": 10})})
    started, undecided = run_decision_step(con, patient, T0, "run-t0", at(T0))
    assert (started.action, undecided.action) == ("started", "not decided")
    assert undecided.detail == "the warehouse counts sends as mature after 7 days, the spec's window is 10"
