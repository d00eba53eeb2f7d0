"""Experiments as data: the design record, the lifecycle state machine and the auto-approve policy."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from itertools import product

import pytest

from factory_dagster.improve.experiments import (
    AUTO_APPROVER,
    KINDS,
    STATES,
    TRANSITIONS,
    Experiment,
    IllegalTransition,
    auto_approval,
    auto_approve,
    auto_approve_policy_problems,
    conclude,
    propose,
    transition,
)
from factory_dagster.improve.stats import ArmCounts, Count, Guardrail, StoppingRule, decide, planned_sample_size

AT = datetime(2026, 1, 5, 6, 0)
POLICY = {"prompt_version": {"max_share": 0.2}, "hook": {"max_share": 0.2}}
LEGAL = sorted((a, b) for a, targets in TRANSITIONS.items() for b in targets)
ILLEGAL = sorted(pair for pair in product(STATES, STATES) if pair not in LEGAL)


def _experiment(**overrides) -> Experiment:
    fields = dict(
        campaign_id="brightwave_close",
        kind="prompt_version",
        hypothesis="Naming the lead's stack in the first line lifts positive replies in mid-market",
        control="draft-v1",
        challengers=("draft-v3",),
        target_segments=("mid_market",),
        primary_metric="positive_reply_rate",
        base_rate=0.03,
        mde=0.5,
        guardrails=(Guardrail("unsubscribe_rate", 0.5, 0.005, relative=True), Guardrail("complaint_rate", 0.003, 0.0008)),
        max_traffic_share=0.2,
        motivating_figures={"positive_reply_rate": 0.03, "sends": 1800, "gate_catches": {"missing_cta": 41}},
        proposed_by="improve stage (offline-premium)",
        at=AT,
    )
    return propose(**(fields | overrides))


def _in_state(state: str) -> Experiment:
    """An experiment walked to `state` through legal moves only."""
    path = {
        "proposed": [],
        "approved": ["approved"],
        "rejected": ["rejected"],
        "running": ["approved", "running"],
        "promoted": ["approved", "running", "promoted"],
        "retired": ["approved", "running", "retired"],
        "rolled_back": ["approved", "running", "rolled_back"],
    }[state]
    experiment = _experiment()
    for i, step in enumerate(path):
        evidence = {"winner": "draft-v3"} if step == "promoted" else {}
        experiment, _ = transition(experiment, step, "ana@brightwave.test", f"step {i}", evidence, AT + timedelta(days=i))
    return experiment


def test_a_proposal_records_its_design_and_its_power_calculation() -> None:
    experiment = _experiment()
    assert experiment.state == "proposed" and experiment.is_open
    assert experiment.planned_sample_size == planned_sample_size(0.03, 0.5, 0.05, 0.8)
    assert experiment.experiment_id.startswith("exp_") and experiment.design_key.startswith("dsg_")
    # a re-run of the same day proposes the same experiment; another day is another experiment of the same design
    assert _experiment() == experiment
    next_day = _experiment(at=AT + timedelta(days=1))
    assert next_day.experiment_id != experiment.experiment_id and next_day.design_key == experiment.design_key
    assert _experiment(challengers=("draft-v4",)).design_key != experiment.design_key
    record = experiment.to_record()
    assert record["planned_sample_size"] == experiment.planned_sample_size and record["state"] == "proposed"
    assert json.loads(record["guardrails_json"])[0]["metric"] == "unsubscribe_rate"
    assert json.loads(record["motivating_figures_json"])["gate_catches"] == {"missing_cta": 41}
    assert json.loads(record["stopping_rule_json"]) == StoppingRule().to_dict()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "subject_line"}, "kind 'subject_line'"),
        ({"challengers": ()}, "no challenger"),
        ({"challengers": ("draft-v1",)}, "differ from the control"),
        ({"challengers": ("draft-v3", "draft-v3")}, "distinct"),
        ({"target_segments": ()}, "no target segment"),
        ({"max_traffic_share": 0.0}, "max traffic share"),
        ({"max_traffic_share": 1.5}, "max traffic share"),
        ({"hypothesis": "  "}, "hypothesis is empty"),
        ({"primary_metric": "unsubscribe_rate"}, "guardrail metrics"),
        ({"motivating_figures": {"when": AT}}, "not JSON"),
    ],
)
def test_an_invalid_design_is_refused_with_the_reason(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _experiment(**overrides)


def test_every_kind_can_be_proposed() -> None:
    assert {_experiment(kind=kind).kind for kind in KINDS} == set(KINDS)


@pytest.mark.parametrize(("start", "end"), LEGAL)
def test_every_legal_transition_moves_and_records_an_event(start: str, end: str) -> None:
    before = _in_state(start)
    evidence = {"winner": "draft-v3", "p_better": 0.97} if end == "promoted" else {"note": "looked at the figures"}
    at = datetime(2026, 1, 20, 6, 0)
    after, event = transition(before, end, "ana@brightwave.test", "why: the figures", evidence, at)
    assert (before.state, after.state) == (start, end)  # the old version is untouched
    assert after.updated_at == at and after.is_open == (end in {"approved", "running"})
    assert after.winner == ("draft-v3" if end == "promoted" else None)
    assert (event.experiment_id, event.from_state, event.to_state) == (before.experiment_id, start, end)
    assert (event.actor, event.reason, event.evidence, event.at) == ("ana@brightwave.test", "why: the figures", evidence, at)
    record = event.to_record()
    assert json.loads(record["evidence_json"]) == evidence and record["campaign_id"] == "brightwave_close"


@pytest.mark.parametrize(("start", "end"), ILLEGAL)
def test_every_illegal_transition_is_refused(start: str, end: str) -> None:
    experiment = _in_state(start)
    with pytest.raises(IllegalTransition, match=f"cannot move from {start} to {end}"):
        transition(experiment, end, "ana@brightwave.test", "try", {"winner": "draft-v3"}, AT)


def test_the_transition_table_is_the_documented_lifecycle() -> None:
    assert LEGAL == sorted(
        [
            ("proposed", "approved"),
            ("proposed", "rejected"),
            ("approved", "running"),
            ("running", "promoted"),
            ("running", "retired"),
            ("running", "rolled_back"),
        ]
    )
    assert len(ILLEGAL) == len(STATES) ** 2 - 6


def test_a_final_state_says_it_is_final_and_unknown_states_are_named() -> None:
    with pytest.raises(IllegalTransition, match="retired is final"):
        transition(_in_state("retired"), "running", "ops", "again", {}, AT)
    with pytest.raises(IllegalTransition, match="allowed from proposed: approved, rejected"):
        transition(_experiment(), "running", "ops", "skip approval", {}, AT)
    with pytest.raises(IllegalTransition, match="unknown state 'concluded'"):
        transition(_in_state("running"), "concluded", "ops", "done", {}, AT)


def test_a_move_needs_an_actor_a_reason_json_evidence_and_a_named_winner() -> None:
    running = _in_state("running")
    with pytest.raises(ValueError, match="actor and a reason"):
        transition(running, "retired", " ", "done", {}, AT)
    with pytest.raises(ValueError, match="actor and a reason"):
        transition(running, "retired", "ops", "", {}, AT)
    with pytest.raises(ValueError, match="JSON"):
        transition(running, "retired", "ops", "done", {"p": float("nan")}, AT)
    with pytest.raises(ValueError, match="must name one of"):
        transition(running, "promoted", "ops", "won", {}, AT)
    with pytest.raises(ValueError, match="must name one of"):
        transition(running, "promoted", "ops", "won", {"winner": "draft-v1"}, AT)  # the control is not a winner


def test_times_are_stored_as_naive_utc() -> None:
    aware = datetime(2026, 1, 5, 8, 0, tzinfo=timezone(timedelta(hours=2)))
    after, event = transition(_experiment(), "rejected", "ana@brightwave.test", "not now", {}, aware)
    assert event.at == datetime(2026, 1, 5, 6, 0) and event.at.tzinfo is None and after.updated_at == event.at
    assert _experiment(at=datetime(2026, 1, 5, 23, 30, tzinfo=UTC)).proposed_at.tzinfo is None


def _arms(challenger_events: int, n: int) -> list[ArmCounts]:
    def arm(name: str, events: int) -> ArmCounts:
        return ArmCounts(
            name, n, Count(events, n), {"unsubscribe_rate": Count(round(0.005 * n), n), "complaint_rate": Count(0, n)}
        )

    return [arm("draft-v1", round(0.03 * n)), arm("draft-v3", challenger_events)]


def _decision(experiment: Experiment, challenger_events: int, n: int | None = None, shares: tuple[float, float] = (0.5, 0.5)):
    n = experiment.planned_sample_size if n is None else n
    return decide(
        _arms(challenger_events, n),
        control=experiment.control,
        planned_shares={"draft-v1": shares[0], "draft-v3": shares[1]},
        planned_sample_size=experiment.planned_sample_size,
        base_rate=experiment.base_rate,
        guardrails=experiment.guardrails,
        rule=experiment.stopping_rule,
        days_running=20,
        seed=3,
    )


def test_conclude_applies_the_decision_step_verdict() -> None:
    running = _in_state("running")
    n = running.planned_sample_size
    # the arms' assignment counts are equal although the plan is 80/20: a sample-ratio mismatch
    srm = _decision(running, round(0.06 * n), shares=(0.8, 0.2))
    assert srm.action == "roll_back"
    rolled, event = conclude(running, srm, AT)
    assert rolled.state == "rolled_back" and event.actor == "decision step (bayes-fixed-horizon-v2)"
    assert "sample-ratio mismatch" in event.reason and event.evidence["srm"]["p_value"] < 0.001

    running = _in_state("running")
    promoted, event = conclude(running, _decision(running, round(0.06 * n)), AT)
    assert promoted.state == "promoted" and promoted.winner == "draft-v3" and event.evidence["winner"] == "draft-v3"
    retired, event = conclude(running, _decision(running, round(0.03 * n)), AT)
    assert retired.state == "retired" and "planned sample reached" in event.reason
    assert conclude(running, _decision(running, round(0.03 * n), n=n // 4), AT) is None  # continue: nothing to record


@pytest.mark.parametrize(
    ("kind", "share", "allowed"),
    [
        ("prompt_version", 0.2, True),
        ("prompt_version", 0.1, True),
        ("prompt_version", 0.25, False),
        ("hook", 0.2, True),
        ("hook", 0.5, False),
        ("allocation_policy", 0.05, False),  # not in the policy
        ("segment_split", 0.05, False),
        ("routing", 0.05, False),
    ],
)
def test_auto_approve_policy(kind: str, share: float, allowed: bool) -> None:
    experiment = _experiment(kind=kind, max_traffic_share=share)
    verdict = auto_approval(experiment, POLICY)
    assert verdict.allowed is allowed, verdict.reason
    result = auto_approve(experiment, POLICY, AT)
    if not allowed:
        assert result is None
        return
    approved, event = result
    assert approved.state == "approved" and event.actor == AUTO_APPROVER == "auto-approved by policy"
    assert event.reason == verdict.reason and event.evidence["policy"] == POLICY and event.evidence["max_traffic_share"] == share


def test_a_design_that_cannot_reach_its_sample_in_time_needs_a_person() -> None:
    slow = _experiment(motivating_figures={"days_to_planned_sample": 286, "max_days": 60})
    verdict = auto_approval(slow, POLICY)
    assert not verdict.allowed and "286 days" in verdict.reason and "60-day" in verdict.reason
    assert auto_approve(slow, POLICY, AT) is None
    assert auto_approval(_experiment(motivating_figures={"days_to_planned_sample": 45}), POLICY).allowed
    assert auto_approval(_experiment(motivating_figures={"days_to_planned_sample": None}), POLICY).allowed  # no volume yet


def test_segment_splits_and_routing_always_need_a_person() -> None:
    greedy = {"segment_split": {"max_share": 1.0}, "routing": {"max_share": 1.0}}
    problems = auto_approve_policy_problems(greedy)
    assert len(problems) == 2 and all("always need a person" in p for p in problems)
    with pytest.raises(ValueError, match="always need a person"):
        auto_approval(_experiment(kind="routing", max_traffic_share=0.05), greedy)
    assert "always need a person" in auto_approval(_experiment(kind="segment_split", max_traffic_share=0.05), POLICY).reason


def test_auto_approval_only_for_proposals_and_only_with_a_valid_policy() -> None:
    assert not auto_approval(_in_state("running"), POLICY).allowed
    assert auto_approve(_in_state("rejected"), POLICY, AT) is None
    assert auto_approve_policy_problems(POLICY) == []
    for bad in ({"prompt_versions": {"max_share": 0.2}}, {"hook": {"max_share": 0}}, {"hook": {"share": 0.2}}, {"hook": 0.2}):
        assert auto_approve_policy_problems(bad), bad
        with pytest.raises(ValueError):
            auto_approval(_experiment(), bad)
