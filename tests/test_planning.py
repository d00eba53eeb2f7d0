"""Planning: the offline premium plan is complete and clean; bad plans are reported; junk answers raise;
unusable planner answers fall back to the last accepted plan or to the spec alone, with an incident."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest
from helpers_logic import example_spec, gateway, offline_plan, registry

from factory_dagster.gates.schemas import plan_failures
from factory_dagster.models.gateway import CallRequest, GatewaySettings, ModelGateway
from factory_dagster.models.local_server import Faults, serving
from factory_dagster.models.prompts import build_messages
from factory_dagster.models.registry import load_registry
from factory_dagster.models.resilience import RetryPolicy
from factory_dagster.models.routing import resolve_routes
from factory_dagster.planning.fallback import (
    LAST_ACCEPTED,
    MODEL,
    SPEC_ONLY,
    SPEC_ONLY_MODEL,
    choose_plan,
    settle_plan,
    spec_only_plan,
)
from factory_dagster.planning.plan import (
    PLAN_ATTEMPTS,
    PLAN_PROMPT_VERSION,
    PlanError,
    ask_planner,
    parse_plan,
    plan_brief,
    plan_problems,
    plan_violations,
)
from factory_dagster.run_context import RunContext


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


# --- fallback: a bad planner never stops the line -------------------------------------------------

DAY1 = date(2026, 3, 2)
UNUSABLE = ['attempt 2: planner answer is not a plan: Field required: \'{"status": "ok", "items": []}\'']


@pytest.fixture
def con(engine_con):
    """The warehouse, once on DuckDB and once on PostgreSQL (tests/warehouse_engines.py)."""
    return engine_con


def run_on(day: date) -> RunContext:
    return RunContext(f"run-{day}", day, example_spec().campaign_id)


def stored_plan(con, day: date) -> pd.DataFrame:
    return con.execute("SELECT * FROM raw.plans WHERE partition_day = ? ORDER BY segment, angle", [day]).df()


def incidents(con) -> pd.DataFrame:
    return con.execute("SELECT partition_day, kind, severity, detail FROM raw.incidents ORDER BY partition_day").df()


def test_a_plan_that_passes_is_stored_as_the_planners_own_without_an_incident(con, plan: pd.DataFrame) -> None:
    choice = settle_plan(con, run_on(DAY1), example_spec(), plan, "gpt-4o", [])
    assert choice.source == MODEL and choice.incident is None
    stored = stored_plan(con, DAY1)
    assert len(stored) == len(plan) and set(stored.model) == {"gpt-4o"} and set(stored.prompt_version) == {PLAN_PROMPT_VERSION}
    assert incidents(con).empty


def test_unusable_answers_and_no_earlier_plan_fall_back_to_the_spec_alone(con) -> None:
    spec = example_spec()
    choice = settle_plan(con, run_on(DAY1), spec, None, "gpt-4o", UNUSABLE)
    assert choice.source == SPEC_ONLY
    stored = stored_plan(con, DAY1)
    assert set(zip(stored.segment, stored.angle)) == {(s.name, a.name) for s in spec.segments for a in spec.angles}
    for row in stored.itertuples():
        assert row.hook == spec.angle(row.angle).hypothesis and list(row.claims) == spec.angle(row.angle).claims
    assert set(stored.model) == {SPEC_ONLY_MODEL} and set(stored.spec_version) == {spec.spec_version}
    # Read back from DuckDB it passes the plan rules and the blocking Pandera check (`plan_is_valid`).
    assert plan_violations(stored, spec) == [] and plan_failures(stored, spec).empty
    [incident] = incidents(con).itertuples()
    assert (incident.kind, incident.severity) == ("plan_fallback", "warning")
    assert "built from the spec alone" in incident.detail and "not a plan" in incident.detail
    assert spec.spec_version in incident.detail


def test_unusable_answers_fall_back_to_the_last_accepted_plan_of_the_same_spec_version(con, plan: pd.DataFrame) -> None:
    spec = example_spec()
    settle_plan(con, run_on(DAY1), spec, plan, "gpt-4o", [])
    day2, day3 = DAY1 + timedelta(days=1), DAY1 + timedelta(days=2)
    # Later plans that must not count: another spec version, another campaign, a spec-only plan.
    edited = spec.model_copy(update={"spec_version": "2026.2+deadbeef"})
    settle_plan(con, run_on(day2), edited, plan.assign(hook="An edited spec's hook."), "gpt-4o", [])
    other = spec.model_copy(update={"campaign_id": "harbour-payroll"})
    settle_plan(con, RunContext("run-other", day2, "harbour-payroll"), other, plan.assign(hook="Other."), "gpt-4o", [])
    choice = settle_plan(con, run_on(day3), spec, None, "gpt-4o", UNUSABLE)
    assert choice.source == LAST_ACCEPTED
    today, first = stored_plan(con, day3), stored_plan(con, DAY1)
    assert today[["segment", "angle", "hook", "model"]].equals(first[["segment", "angle", "hook", "model"]])
    assert plan_failures(today, spec).empty
    detail = incidents(con).detail.iloc[-1]
    assert "last accepted plan" in detail and str(DAY1) in detail and "gpt-4o" in detail and "not a plan" in detail


def test_an_earlier_spec_only_plan_does_not_count_as_accepted(con) -> None:
    spec = example_spec()
    settle_plan(con, run_on(DAY1), spec, None, "gpt-4o", UNUSABLE)
    choice = settle_plan(con, run_on(DAY1 + timedelta(days=1)), spec, None, "gpt-4o", UNUSABLE)
    assert choice.source == SPEC_ONLY and len(incidents(con)) == 2


def test_a_rerun_of_the_day_does_not_fall_back_to_its_own_plan(con, plan: pd.DataFrame) -> None:
    spec = example_spec()
    settle_plan(con, run_on(DAY1), spec, plan, "gpt-4o", [])
    assert settle_plan(con, run_on(DAY1), spec, None, "gpt-4o", UNUSABLE).source == SPEC_ONLY
    assert set(stored_plan(con, DAY1).model) == {SPEC_ONLY_MODEL}  # the day's plan was replaced, not appended to


def test_a_plan_the_pandera_check_would_reject_is_not_accepted(plan: pd.DataFrame) -> None:
    spec = example_spec()
    doubled = pd.concat([plan, plan.head(1)], ignore_index=True)
    assert plan_violations(doubled, spec) == []  # the rules alone miss a repeated (segment, angle) ...
    assert plan_problems(doubled, spec)  # ... the blocking Pandera check does not
    assert choose_plan(spec, doubled, "gpt-4o", PLAN_PROMPT_VERSION, plan_problems(doubled, spec), None).source == SPEC_ONLY
    assert plan_problems(spec_only_plan(spec), spec) == []


@pytest.mark.parametrize("mode", ["junk_json", "prose"])
def test_a_junk_planner_over_http_gives_problems_and_a_ledger_not_an_exception(mode: str) -> None:
    spec = example_spec().model_copy(update={"routing": {**example_spec().routing, "plan": "gpt-4o"}})
    with serving({"gpt-4o": 0.0}, faults=Faults(answer_mode=mode)) as server:
        environ = {"OPENAI_API_KEY": server.api_key, "OPENAI_BASE_URL": server.base_url}
        registry_ = load_registry()
        fast = GatewaySettings(retry=RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.02), timeout_s=5.0)
        gw = ModelGateway(registry_, resolve_routes(spec, registry_, environ), run_on(DAY1), environ=environ, settings=fast)
        messages = build_messages(PLAN_PROMPT_VERSION, plan_brief(spec, pd.DataFrame()))
        planned, planner, problems = ask_planner(gw, spec, messages)
    assert planned is None and planner == "gpt-4o" and "not a plan" in problems[0]
    ledger = gw.ledger()
    assert len(ledger) == PLAN_ATTEMPTS and set(ledger.model) == {"gpt-4o"} and set(ledger.status) == {"invalid"}
    assert {model for _, model, _ in server.log} == {"gpt-4o"}
