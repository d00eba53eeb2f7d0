"""Planning: the offline premium plan is complete and clean; bad plans are reported; junk answers raise."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers_logic import example_spec, gateway, offline_plan, registry

from factory_dagster.models.gateway import CallRequest
from factory_dagster.models.prompts import build_messages
from factory_dagster.planning.plan import PLAN_PROMPT_VERSION, PlanError, parse_plan, plan_brief, plan_violations


@pytest.fixture(scope="module")
def plan() -> pd.DataFrame:
    return offline_plan(example_spec())


def test_offline_plan_covers_every_segment_and_angle(plan: pd.DataFrame) -> None:
    spec = example_spec()
    assert list(plan.columns) == ["segment", "angle", "hook", "claims"]
    assert set(zip(plan.segment, plan.angle)) == {(s.name, a.name) for s in spec.segments for a in spec.angles}
    assert len(plan) == len(spec.segments) * len(spec.angles)
    assert plan.hook.str.strip().str.len().gt(0).all()
    for row in plan.itertuples():
        assert row.claims == spec.angle(row.angle).claims
    assert plan_violations(plan, spec) == []


def test_plan_brief_carries_spec_and_performance() -> None:
    spec = example_spec()
    perf = pd.DataFrame([{"segment": "general", "angle": "close_speed", "sends": 120, "replies": 4}])
    brief = plan_brief(spec, perf)
    assert brief["task"] == "plan"
    assert [s["name"] for s in brief["segments"]] == [s.name for s in spec.segments]
    assert [a["name"] for a in brief["angles"]] == [a.name for a in spec.angles]
    assert brief["angles"][0]["claims"] == spec.angles[0].claims
    assert brief["performance"] == {"general/close_speed": {"sends": 120, "replies": 4}}
    assert plan_brief(spec, pd.DataFrame())["performance"] == {}
    json.dumps(brief)  # the brief travels as JSON


def test_plan_through_the_gateway_is_logged() -> None:
    spec = example_spec()
    gw = gateway(registry())
    messages = build_messages(PLAN_PROMPT_VERSION, plan_brief(spec, pd.DataFrame()))
    result = gw.complete(CallRequest("plan", PLAN_PROMPT_VERSION, messages))
    assert plan_violations(parse_plan(result.text), spec) == []
    ledger = gw.ledger()
    assert ledger.stage.tolist() == ["plan"] and ledger.model.tolist() == ["offline-premium"]
    assert ledger.prompt_version.tolist() == [PLAN_PROMPT_VERSION] and ledger.cost_usd.iloc[0] > 0


def test_missing_segment_is_reported(plan: pd.DataFrame) -> None:
    problems = plan_violations(plan[plan.segment != "enterprise_finance"], example_spec())
    assert problems == ["segment 'enterprise_finance' has no angle"]


def test_unknown_angle_is_reported(plan: pd.DataFrame) -> None:
    bad = plan.copy()
    bad.loc[0, "angle"] = "free_lunch"
    problems = plan_violations(bad, example_spec())
    assert problems == [f"segment '{bad.segment[0]}': unknown angle 'free_lunch'"]


def test_unknown_segment_is_reported(plan: pd.DataFrame) -> None:
    bad = plan.copy()
    bad.loc[0, "segment"] = "martians"
    problems = plan_violations(bad, example_spec())
    assert "unknown segment 'martians'" in problems


def test_claim_not_in_spec_is_reported(plan: pd.DataFrame) -> None:
    bad = plan.copy()
    invented = "Customers cut audit fees by 37%."
    bad.at[0, "claims"] = [*bad.claims[0], invented]
    problems = plan_violations(bad, example_spec())
    assert len(problems) == 1 and "claim not allowed" in problems[0] and invented in problems[0]
    # Another angle's claim is not allowed either.
    borrowed = plan.copy()
    other = next(a for a in example_spec().angles if a.name != borrowed.angle[0])
    borrowed.at[0, "claims"] = [other.claims[0]]
    assert len(plan_violations(borrowed, example_spec())) == 1
    # A reworded claim is not the claim.
    reworded = plan.copy()
    reworded.at[0, "claims"] = [reworded.claims[0][0].rstrip(".")]
    assert len(plan_violations(reworded, example_spec())) == 1


@pytest.mark.parametrize("hook", ["", "   ", "\n"])
def test_empty_hook_is_reported(plan: pd.DataFrame, hook: str) -> None:
    bad = plan.copy()
    bad.loc[1, "hook"] = hook
    assert plan_violations(bad, example_spec()) == [f"segment '{bad.segment[1]}', angle '{bad.angle[1]}': empty hook"]


def test_no_claims_is_reported(plan: pd.DataFrame) -> None:
    bad = plan.copy()
    bad.at[2, "claims"] = []
    assert plan_violations(bad, example_spec()) == [f"segment '{bad.segment[2]}', angle '{bad.angle[2]}': no claims"]


def test_claims_read_back_as_arrays_are_accepted(plan: pd.DataFrame) -> None:
    import numpy as np

    stored = plan.assign(claims=plan.claims.map(np.array))
    assert plan_violations(stored, example_spec()) == []


def test_empty_plan_reports_every_segment() -> None:
    spec = example_spec()
    problems = plan_violations(parse_plan('{"segments": []}'), spec)
    assert problems == [f"segment '{s.name}' has no angle" for s in spec.segments]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json at all",
        "I could not find a brief in your message.",
        "null",
        "[]",
        '"segments"',
        "{}",
        '{"segments": 5}',
        '{"segments": [{"segment": "general"}]}',
        '{"segments": [{"segment": "general", "angles": [{"angle": "close_speed", "hook": "h"}]}]}',
        '{"segments": [{"segment": "general", "angles": [{"angle": "close_speed", "claims": []}]}]}',
        '{"segments": [{"segment": "general", "angles": [{"angle": "close_speed", "hook": "h", "claims": null}]}]}',
        '{"segments": [{"segment": "general", "angles": [{"angle": "close_speed", "hook": "h", "claims": [1]}]',
    ],
)
def test_junk_answers_raise_plan_error(text: str) -> None:
    with pytest.raises(PlanError, match="not a plan"):
        parse_plan(text)


def test_parse_plan_round_trip() -> None:
    text = json.dumps(
        {"segments": [{"segment": "general", "angles": [{"angle": "close_speed", "hook": "Hook.", "claims": ["A.", "B."]}]}]}
    )
    parsed = parse_plan(text)
    assert parsed.to_dict("records") == [{"segment": "general", "angle": "close_speed", "hook": "Hook.", "claims": ["A.", "B."]}]
