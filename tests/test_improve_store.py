"""Experiments in a real DuckDB warehouse: proposals saved once, moves written with their events
all or nothing, and the look-ups the improve stage bounds its proposals with."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta

import duckdb
import psycopg
import pytest
from helpers_db import CAMPAIGN, DAY, OTHER_CAMPAIGN, count, query, run_for

from factory_dagster.improve.experiments import Experiment, IllegalTransition, auto_approve, propose, transition
from factory_dagster.improve.stats import Guardrail
from factory_dagster.improve.store import (
    UnknownExperiment,
    apply_transition,
    count_open_proposals,
    decide_by_person,
    experiment_events,
    find_duplicates,
    list_experiments,
    load_experiment,
    move_experiment,
    save_proposed,
)

AT = datetime(DAY.year, DAY.month, DAY.day, 6, 0)


def proposal(
    campaign_id: str = CAMPAIGN, challenger: str = "draft-v3", at: datetime = AT, share: float = 0.2, kind: str = "prompt_version"
) -> Experiment:
    """A realistic proposal: a prompt challenger in one of the example campaign's segments."""
    return propose(
        campaign_id=campaign_id,
        kind=kind,
        hypothesis="Naming the lead's close software in the first line lifts positive replies",
        control="draft-v1",
        challengers=(challenger,),
        target_segments=("scaleup_finance_leaders",),
        primary_metric="positive_reply_rate",
        base_rate=0.03,
        mde=0.5,
        guardrails=(Guardrail("unsubscribe_rate", 0.5, 0.005, relative=True), Guardrail("complaint_rate", 0.003, 0.0008)),
        max_traffic_share=share,
        motivating_figures={"positive_reply_rate": 0.03, "sends": 1800, "gate_catches": {"missing_cta": 41}},
        proposed_by="improve stage (offline-premium)",
        at=at,
    )


def saved(con: duckdb.DuckDBPyConnection, experiment: Experiment) -> Experiment:
    """Save a proposal as the run of its proposal day would."""
    assert save_proposed(con, experiment, run_for(experiment.proposed_at.date(), campaign_id=experiment.campaign_id))
    return experiment


@pytest.fixture
def con(engine_con):
    """The warehouse, once on DuckDB and once on PostgreSQL (tests/warehouse_engines.py)."""
    return engine_con


def test_a_proposal_is_saved_once_and_reads_back_equal(con) -> None:
    experiment = proposal()
    run = run_for(DAY)
    assert save_proposed(con, experiment, run) is True
    assert save_proposed(con, experiment, run_for(DAY, run_id="run-rerun")) is False  # a re-run of the day
    assert count(con, "experiments") == 1
    assert load_experiment(con, experiment.experiment_id) == experiment
    assert query(con, "SELECT run_id, partition_day, design_key, state FROM raw.experiments") == [
        (run.run_id, DAY, experiment.design_key, "proposed")
    ]
    assert count(con, "experiment_events") == 0  # a proposal is not a move; its who/when/why are on the row


def test_re_proposing_never_resets_a_decided_experiment(con) -> None:
    experiment = saved(con, proposal())
    decide_by_person(con, experiment.experiment_id, "reject", "ana", "the hook overpromises", "cli", AT + timedelta(hours=2))
    assert save_proposed(con, experiment, run_for(DAY, run_id="run-rerun")) is False
    assert load_experiment(con, experiment.experiment_id).state == "rejected"


@pytest.mark.parametrize(
    ("experiment", "message"),
    [
        (transition(proposal(), "approved", "ana", "fine", {}, AT)[0], "only a proposal can be saved"),
        (proposal(campaign_id=OTHER_CAMPAIGN), "the run for brightwave-close"),
    ],
)
def test_only_a_proposal_of_the_runs_campaign_is_saved(con, experiment: Experiment, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        save_proposed(con, experiment, run_for(DAY))
    assert count(con, "experiments") == 0


def test_approval_updates_the_row_and_appends_the_event_with_actor_reason_and_evidence(con) -> None:
    experiment = saved(con, proposal())
    at = AT + timedelta(hours=3)
    moved, event = decide_by_person(con, experiment.experiment_id, "approve", "ana", "small share, clear hypothesis", "cli", at)
    assert load_experiment(con, experiment.experiment_id) == moved
    assert (moved.state, moved.updated_at) == ("approved", at)
    (row,) = experiment_events(con, experiment.experiment_id)
    assert {k: row[k] for k in ("event_id", "from_state", "to_state", "actor", "reason", "occurred_at", "run_id")} == {
        "event_id": event.event_id,
        "from_state": "proposed",
        "to_state": "approved",
        "actor": "ana",
        "reason": "small share, clear hypothesis",
        "occurred_at": at,
        "run_id": None,
    }
    assert json.loads(row["evidence_json"]) == {
        "channel": "cli",
        "design_key": experiment.design_key,
        "max_traffic_share": 0.2,
        "planned_sample_size": experiment.planned_sample_size,
    }


def test_a_rejection_needs_a_reason_and_an_empty_one_writes_nothing(con) -> None:
    experiment = saved(con, proposal())
    with pytest.raises(ValueError, match="needs an actor and a reason"):
        decide_by_person(con, experiment.experiment_id, "reject", "ana", "  ", "cli", AT)
    moved, _ = decide_by_person(con, experiment.experiment_id, "reject", "ana", "claims a discount", "cli", AT)
    assert load_experiment(con, experiment.experiment_id).state == moved.state == "rejected"
    assert [e["to_state"] for e in experiment_events(con, experiment.experiment_id)] == ["rejected"]


def test_an_illegal_transition_is_refused_and_nothing_is_written(con) -> None:
    experiment = saved(con, proposal())
    with pytest.raises(IllegalTransition, match="cannot move from proposed to running"):
        move_experiment(con, experiment.experiment_id, "running", "assign stage", "start", {}, AT)
    decide_by_person(con, experiment.experiment_id, "reject", "ana", "no", "cli", AT)
    with pytest.raises(IllegalTransition, match="rejected is final"):
        decide_by_person(con, experiment.experiment_id, "approve", "bob", "yes after all", "cli", AT + timedelta(hours=1))
    assert load_experiment(con, experiment.experiment_id).state == "rejected"
    assert [(e["to_state"], e["actor"]) for e in experiment_events(con, experiment.experiment_id)] == [("rejected", "ana")]


def test_a_move_from_a_stale_copy_is_refused_and_rolled_back(con) -> None:
    """Two people decide on the same proposal at once: the second write must not overwrite the first."""
    experiment = saved(con, proposal())
    approved, approval = transition(experiment, "approved", "ana", "go", {}, AT)
    rejected, rejection = transition(experiment, "rejected", "bob", "no", {}, AT + timedelta(minutes=1))
    apply_transition(con, approved, approval, run_id="run-x", partition_day=DAY)
    with pytest.raises(IllegalTransition, match="not recorded as proposed any more"):
        apply_transition(con, rejected, rejection)
    assert load_experiment(con, experiment.experiment_id).state == "approved"
    assert [(e["actor"], e["run_id"], e["partition_day"]) for e in experiment_events(con, experiment.experiment_id)] == [
        ("ana", "run-x", DAY)
    ]


def test_the_row_and_its_event_are_written_together_or_not_at_all(con) -> None:
    experiment = saved(con, proposal())
    approved, approval = transition(experiment, "approved", "ana", "go", {}, AT)
    apply_transition(con, approved, approval)
    running, start = transition(approved, "running", "assign stage", "first traffic", {}, AT + timedelta(days=1))
    clashing = replace(start, event_id=approval.event_id)  # the event insert fails after the row was updated
    with pytest.raises((duckdb.ConstraintException, psycopg.errors.UniqueViolation)):
        apply_transition(con, running, clashing)
    assert load_experiment(con, experiment.experiment_id) == approved
    assert [e["to_state"] for e in experiment_events(con, experiment.experiment_id)] == ["approved"]


def test_an_unknown_id_is_named(con) -> None:
    with pytest.raises(UnknownExperiment, match="exp_nope"):
        decide_by_person(con, "exp_nope", "approve", "ana", "go", "cli", AT)
    assert load_experiment(con, "exp_nope") is None


def test_the_whole_lifecycle_is_in_the_events_in_order(con) -> None:
    experiment = saved(con, proposal())
    auto_moved, auto_event = auto_approve(experiment, {"prompt_version": {"max_share": 0.2}}, AT)
    apply_transition(con, auto_moved, auto_event, run_id="run-improve", partition_day=DAY)
    move_experiment(
        con, experiment.experiment_id, "running", "assign stage", "first traffic", {"sends": 0}, AT + timedelta(days=1)
    )
    promoted, _ = move_experiment(
        con,
        experiment.experiment_id,
        "promoted",
        "decision step",
        "P(better) 0.97",
        {"winner": "draft-v3"},
        AT + timedelta(days=9),
    )
    assert load_experiment(con, experiment.experiment_id) == promoted and promoted.winner == "draft-v3"
    events = experiment_events(con, experiment.experiment_id)
    assert [(e["from_state"], e["to_state"]) for e in events] == [
        ("proposed", "approved"),
        ("approved", "running"),
        ("running", "promoted"),
    ]
    assert events[0]["actor"] == "auto-approved by policy"
    assert json.loads(events[0]["evidence_json"])["policy"] == {"prompt_version": {"max_share": 0.2}}


def test_list_by_campaign_and_state_and_count_what_is_open(con) -> None:
    first = saved(con, proposal(challenger="draft-v3"))
    second = saved(con, proposal(challenger="draft-v4", at=AT + timedelta(days=1)))
    third = saved(con, proposal(challenger="draft-v5", at=AT + timedelta(days=2)))
    other = saved(con, proposal(campaign_id=OTHER_CAMPAIGN))
    decide_by_person(con, second.experiment_id, "reject", "ana", "no", "cli", AT + timedelta(days=3))
    decide_by_person(con, third.experiment_id, "approve", "ana", "yes", "cli", AT + timedelta(days=3))
    assert [e.experiment_id for e in list_experiments(con, CAMPAIGN)] == [
        first.experiment_id,
        second.experiment_id,
        third.experiment_id,
    ]
    assert [e.experiment_id for e in list_experiments(con, CAMPAIGN, ["proposed"])] == [first.experiment_id]
    assert {e.experiment_id for e in list_experiments(con, states=["proposed"])} == {first.experiment_id, other.experiment_id}
    assert list_experiments(con, CAMPAIGN, ["running"]) == []
    assert count_open_proposals(con, CAMPAIGN) == 2  # proposed and approved count, rejected does not
    assert count_open_proposals(con, OTHER_CAMPAIGN) == 1


def test_duplicates_are_open_or_recently_rejected_designs_only(con) -> None:
    original = saved(con, proposal())
    again = proposal(at=AT + timedelta(days=1))  # the same design proposed the next day
    assert again.experiment_id != original.experiment_id
    assert find_duplicates(con, again) == [original]  # still open
    assert find_duplicates(con, original) == []  # a re-run of the same day is not its own duplicate
    assert find_duplicates(con, proposal(challenger="draft-v4", at=AT + timedelta(days=1))) == []
    assert find_duplicates(con, proposal(campaign_id=OTHER_CAMPAIGN, at=AT + timedelta(days=1))) == []

    rejected, _ = decide_by_person(con, original.experiment_id, "reject", "ana", "tone", "cli", AT + timedelta(days=1))
    assert find_duplicates(con, again) == [rejected]
    assert find_duplicates(con, proposal(at=AT + timedelta(days=31))) == [rejected]
    assert find_duplicates(con, proposal(at=AT + timedelta(days=32))) == []  # rejected 31 days earlier: may be asked again
    assert find_duplicates(con, proposal(at=AT + timedelta(days=10)), rejected_within=timedelta(days=7)) == []


def test_a_concluded_design_is_no_duplicate(con) -> None:
    original = saved(con, proposal())
    for state, evidence in (("approved", {}), ("running", {}), ("retired", {"reason": "max days"})):
        move_experiment(con, original.experiment_id, state, "decision step", state, evidence, AT + timedelta(days=1))
    assert find_duplicates(con, proposal(at=AT + timedelta(days=2))) == []
