"""Rebalancing cost and capability: the cheapest tier's real trade-off through the gates, the
model_stage_quality mart against a hand-built warehouse, and the routing canaries it motivates."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta

import duckdb
import pandas as pd
import pytest
from helpers_logic import example_spec, gateway, make_leads, work_frame
from test_dbt_project import D1, _assignment, _day, _draft, _event, _gate, _insert, _llm_call, _message, _send

from factory_dagster.drafting.draft import draft_candidates
from factory_dagster.gates.pipeline import run_gates
from factory_dagster.improve.canaries import (
    DEFAULT_POLICY,
    QUALITY_COLUMNS,
    assess,
    propose_routing_canaries,
)
from factory_dagster.improve.experiments import auto_approval, transition
from factory_dagster.improve.metrics import PRIMARY_METRIC
from factory_dagster.learning.dbt_project import INTEGRITY_TAG
from factory_dagster.learning.dbt_runner import invoke
from factory_dagster.models.gateway import ModelGateway
from factory_dagster.models.local_server import serving
from factory_dagster.models.registry import load_registry
from factory_dagster.models.routing import resolve_routes, stage_model
from factory_dagster.run_context import RunContext
from factory_dagster.warehouse.store import connect

REGISTRY = load_registry()
AT = datetime(2026, 3, 20, 6)

# ---------------------------------------------------------------- the cheapest tier through the real gates


@pytest.fixture(scope="module")
def split_line() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """300 leads, every other one assigned the nano model (as a routing canary's challenger leads
    are), drafted and gated by one offline gateway: (work, drafts, ledger). Each lead has a
    company of its own, so no consistency rule between colleagues blurs the models' own slips."""
    spec = example_spec()
    leads = make_leads(300, spec)
    for i, lead in enumerate(leads):
        lead.update(email=f"person{i}@firm{i}.example", company=f"Firm {chr(65 + i % 26)}{chr(65 + i // 26)}")
    work = work_frame(spec, leads)
    work["model"] = ["offline-nano" if i % 2 else "offline-cheap" for i in range(len(work))]
    gw = gateway(REGISTRY, run_id="run-split")
    candidates, deferred = draft_candidates(gw, spec, work, arm_models=True)
    assert deferred == []
    out = run_gates(gw, spec, work, candidates)
    frames = out.frames()
    drafts = pd.concat([candidates, frames["drafts"]], ignore_index=True).merge(
        frames["gate_results"][["draft_id", "passed"]], on="draft_id"
    )
    return work, drafts, gw.ledger()


def test_drafting_uses_each_assignments_model(split_line) -> None:
    work, drafts, ledger = split_line
    first = drafts[drafts.attempt == 0].merge(work[["lead_id", "model"]].rename(columns={"model": "assigned"}), on="lead_id")
    assert (first.model == first.assigned).all() and set(first.model) == {"offline-nano", "offline-cheap"}
    # Repairs and escalations keep their own routes.
    assert set(ledger[ledger.stage == "repair"].model) <= {"offline-cheap"}
    assert set(ledger[ledger.stage == "escalate"].model) <= {"offline-premium"}


def test_without_arm_models_the_stage_route_drafts() -> None:
    spec = example_spec()
    work = work_frame(spec, make_leads(4, spec)).assign(model="offline-nano")
    candidates, _ = draft_candidates(gateway(REGISTRY), spec, work)
    assert set(candidates.model) == {"offline-cheap"}


def test_online_the_arm_model_is_called_at_its_own_price() -> None:
    """With a key, a challenger lead's drafts go to its model on the endpoint, priced from the registry."""
    spec = example_spec().model_copy(update={"routing": {**example_spec().routing, "draft": ["gpt-4o-mini", "gpt-4o"]}})
    work = work_frame(spec, make_leads(4, spec)).assign(model=["gpt-4.1-nano", "gpt-4o-mini"] * 2)
    with serving({"gpt-4o-mini": 0.0, "gpt-4.1-nano": 0.0}, api_key="k") as server:
        environ = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": server.base_url}
        gw = ModelGateway(
            REGISTRY, resolve_routes(spec, REGISTRY, environ), RunContext("run-online", AT.date(), "c"), environ=environ
        )
        candidates, deferred = draft_candidates(gw, spec, work, arm_models=True)
        called = [model for path, model, _ in server.log if path.endswith("/chat/completions")]
    assert deferred == [] and called.count("gpt-4.1-nano") == called.count("gpt-4o-mini") == 2 * spec.drafting.candidates
    assert candidates.groupby("lead_id").model.first().tolist() == work.model.tolist()
    ledger = gw.ledger()
    expected = [REGISTRY.entry(r.model).cost_usd(r.tokens_in, r.tokens_out) for r in ledger.itertuples()]
    assert ledger.cost_usd.tolist() == pytest.approx(expected) and set(ledger.model) == {"gpt-4.1-nano", "gpt-4o-mini"}


def test_the_nano_tier_fails_the_gate_more_often_and_needs_more_repairs_but_drafts_cheaper(split_line) -> None:
    _, drafts, ledger = split_line
    first = drafts[drafts.attempt == 0]
    fail = {m: 1 - g.passed.mean() for m, g in first.groupby("model")}
    n = {m: len(g) for m, g in first.groupby("model")}
    pooled = (fail["offline-nano"] * n["offline-nano"] + fail["offline-cheap"] * n["offline-cheap"]) / sum(n.values())
    z = (fail["offline-nano"] - fail["offline-cheap"]) / math.sqrt(
        pooled * (1 - pooled) * (1 / n["offline-nano"] + 1 / n["offline-cheap"])
    )
    assert z > 3, (fail, z)
    # Leads whose first round failed altogether went on to a repair: more of them on the nano model.
    first_models = first.groupby("lead_id").model.first()
    rounds = drafts[drafts.attempt > 0].lead_id.map(first_models).value_counts()
    assert rounds.get("offline-nano", 0) > rounds.get("offline-cheap", 0), rounds
    # Per draft call the nano tier costs less (same prompts, a lower price).
    per_call = ledger[ledger.stage == "draft"].groupby("model").cost_usd.mean()
    assert per_call["offline-nano"] < 0.75 * per_call["offline-cheap"], per_call


# ---------------------------------------------------------------- marts.model_stage_quality


def _audit(
    con: duckdb.DuckDBPyConnection, audit_id: str, send_id: str, lead_id: str, status: str, passed: bool, scores: dict
) -> None:
    entries = ", ".join(f"'{k}': {v}" for k, v in scores.items())
    con.execute(
        f"""INSERT INTO raw.audits VALUES (?, ?, 'run-d1', 'c1', ?, ?, 'offline-premium', 'audit-v1', NULL, ?,
                                           MAP {{{entries}}}, ?, 'because', ?)""",
        [audit_id, D1, f"m-{send_id}", lead_id, status, passed, datetime(2025, 3, 3, 9)],
    )


def _populate(con: duckdb.DuckDBPyConnection) -> None:
    """Campaign c1 on D1. The nano model drafts L1-L4, the cheap one L5 (two candidates each):
    L1 passes first time (sent, positive reply, audit 4/5 passed); L2 needs a cheap repair (sent:
    a negative reply and an unsubscribe); L3 a failed repair and a premium escalation (sent on
    D1+5, too young to count; audit 2/3 failed); L4 fails everything (quarantined); L5 passes
    (sent, no reply; its judge gave no verdict). The latest event is on D1+9."""
    leads = {"L1": "s1", "L2": "s2", "L3": "s3", "L5": "s5"}
    _insert(con, "assignments", [_assignment(lead, D1, "smb", "armA") for lead in ("L1", "L2", "L3", "L4", "L5")])
    # (draft, lead, candidate, attempt, model, stage, cost, passed, selected)
    rows = [
        ("d1", "L1", 0, 0, "offline-nano", "draft", 0.001, True, True),
        ("d2", "L1", 1, 0, "offline-nano", "draft", 0.001, False, False),
        ("d3", "L2", 0, 0, "offline-nano", "draft", 0.001, False, False),
        ("d4", "L2", 1, 0, "offline-nano", "draft", 0.001, False, False),
        ("d5", "L2", 0, 1, "offline-cheap", "repair", 0.002, True, True),
        ("d6", "L3", 0, 0, "offline-nano", "draft", 0.001, False, False),
        ("d7", "L3", 1, 0, "offline-nano", "draft", 0.001, False, False),
        ("d8", "L3", 0, 1, "offline-cheap", "repair", 0.002, False, False),
        ("d9", "L3", 0, 2, "offline-premium", "escalate", 0.02, True, True),
        ("d10", "L4", 0, 0, "offline-nano", "draft", 0.001, False, False),
        ("d11", "L4", 1, 0, "offline-nano", "draft", 0.001, False, False),
        ("d12", "L4", 0, 1, "offline-cheap", "repair", 0.002, False, False),
        ("d13", "L4", 0, 2, "offline-premium", "escalate", 0.02, False, False),
        ("d14", "L5", 0, 0, "offline-cheap", "draft", 0.0015, True, True),
        ("d15", "L5", 1, 0, "offline-cheap", "draft", 0.0, True, False),  # a cache hit
    ]
    drafts = [  # each with its call's stage and cost, as drafting writes them
        {**_draft(d, lead, "armA", cand, att, model), "llm_call_id": f"k{d}", "stage": stage, "cost_usd": cost}
        for d, lead, cand, att, model, stage, cost, *_ in rows
    ]
    _insert(con, "drafts", drafts)
    _insert(con, "gate_results", [_gate(d, r[7], [] if r[7] else ["over_length"], r[8]) for d, r in zip(drafts, rows)])
    calls = [_llm_call(f"k{d}", "c1", D1, stage, model, 100, 50, cost) for d, _, _, _, model, stage, cost, *_ in rows]
    _insert(con, "llm_calls", [*calls, _llm_call("kplan", "c1", D1, "plan", "offline-premium", 900, 400, 0.03)])
    _insert(con, "messages", [_message(send, lead, D1, "armA") for lead, send in leads.items()])
    sends = [_send(send, lead, _day(5) if lead == "L3" else D1, "smb", "armA") for lead, send in leads.items()]
    _insert(con, "sends", sends)
    _insert(
        con,
        "events",
        [
            _event("e1", "s1", "positive_reply", _day(2)),
            _event("e2", "s2", "replied", _day(2)),
            _event("e3", "s2", "unsubscribed", _day(3)),
            _event("e4", "s3", "positive_reply", _day(7)),
            _event("e5", "s5", "opened", _day(9)),
        ],
    )
    _audit(con, "a1", "s1", "L1", "ok", True, {"relevance": 4, "tone": 5})
    _audit(con, "a3", "s3", "L3", "ok", False, {"relevance": 2, "tone": 3})
    _audit(con, "a5", "s5", "L5", "error", False, {"relevance": 1})


@pytest.fixture(scope="module")
def quality_frame(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """marts.model_stage_quality built by dbt (with its tests) from the hand-built warehouse."""
    root = tmp_path_factory.mktemp("quality")
    warehouse = root / "quality.duckdb"
    with connect(warehouse) as con:
        _populate(con)
    # Only the mart, what it reads and the tests on those (not the singular tests of other marts).
    command = [
        "build",
        "--select",
        "+model_stage_quality",
        "--indirect-selection",
        "cautious",
        "--exclude",
        f"tag:{INTEGRITY_TAG}",
    ]
    run = invoke(command, warehouse, root / "target")
    assert run.success, run.describe_failure()
    tests = {e["data"]["node_info"]["unique_id"] for e in run.results if e["data"]["node_info"]["unique_id"].startswith("test.")}
    assert sum(".row_contract_model_stage_quality." in t for t in tests) == 1, sorted(tests)  # its decision-guarding test ran
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute("SELECT * FROM marts.model_stage_quality").df()


@pytest.fixture(scope="module")
def quality(quality_frame: pd.DataFrame) -> dict[tuple[str, str], dict]:
    return {(r["stage"], r["model"]): r for r in quality_frame.to_dict("records")}


def _null(value) -> bool:
    return value is None or pd.isna(value)


def test_quality_charges_repairs_escalations_and_outcomes_to_the_draft_model(quality) -> None:
    assert set(quality) == {
        ("draft", "offline-nano"),
        ("draft", "offline-cheap"),
        ("repair", "offline-cheap"),
        ("escalate", "offline-premium"),
    }
    nano = quality["draft", "offline-nano"]
    assert (nano["leads"], nano["first_pass"], nano["accepted"], nano["repairs"], nano["escalations"]) == (4, 1, 3, 3, 2)
    assert nano["first_pass_rate"] == pytest.approx(0.25) and nano["acceptance_rate"] == pytest.approx(0.75)
    assert nano["repairs_per_accepted"] == pytest.approx(1.0)
    assert nano["escalations_per_accepted"] == pytest.approx(2 / 3)
    assert (nano["audited"], nano["audit_failure_rate"], nano["audit_mean_score"]) == (2, pytest.approx(0.5), pytest.approx(3.5))
    # s3 is four days old: its positive reply does not count yet.
    assert (nano["sends"], nano["mature_sends"], nano["positive_replies"], nano["negative_replies"]) == (3, 2, 1, 1)
    assert (nano["positive_reply_rate"], nano["unsubscribe_rate"], nano["complaint_rate"]) == (0.5, 0.5, 0.0)
    # Its own draft calls, then every repair and escalation they led to; not the plan call.
    assert nano["cost_usd"] == pytest.approx(8 * 0.001 + 3 * 0.002 + 2 * 0.02)
    assert nano["cost_per_accepted_usd"] == pytest.approx((8 * 0.001 + 3 * 0.002 + 2 * 0.02) / 3)


def test_quality_of_later_stages_and_of_a_clean_model(quality) -> None:
    repair = quality["repair", "offline-cheap"]
    assert (repair["leads"], repair["first_pass"], repair["accepted"], repair["repairs"], repair["escalations"]) == (
        3,
        1,
        2,
        0,
        2,
    )
    assert repair["cost_usd"] == pytest.approx(3 * 0.002 + 2 * 0.02)
    assert (repair["audited"], repair["audit_failure_rate"]) == (1, 1.0)
    escalate = quality["escalate", "offline-premium"]
    assert (escalate["leads"], escalate["first_pass"], escalate["accepted"]) == (2, 1, 1)
    assert escalate["cost_per_accepted_usd"] == pytest.approx(0.04)
    cheap = quality["draft", "offline-cheap"]
    assert (cheap["leads"], cheap["first_pass_rate"], cheap["accepted"], cheap["repairs"]) == (1, 1.0, 1, 0)
    # Its judge gave no verdict: no audit counts, so no failure rate.
    assert cheap["audited"] == 0 and _null(cheap["audit_failure_rate"]) and _null(cheap["audit_mean_score"])
    assert (cheap["mature_sends"], cheap["positive_replies"], cheap["positive_reply_rate"]) == (1, 0, 0.0)
    assert cheap["cost_per_accepted_usd"] == pytest.approx(0.0015)


def test_the_canaries_read_the_mart_as_built(quality_frame) -> None:
    """The mart has every column the canaries read; its four leads are far too thin for a canary."""
    frame = quality_frame.assign(campaign_id=example_spec().campaign_id)
    assert set(QUALITY_COLUMNS) <= set(frame.columns)
    assert "too thin: 4 leads" in assess(frame, example_spec(), "offline-nano").reason
    assert propose_routing_canaries(frame, REGISTRY, "offline-nano", example_spec(), AT) == []
    loosened = replace(DEFAULT_POLICY, min_leads=1, min_mature_sends=1, min_audited=1)
    (canary,) = propose_routing_canaries(frame, REGISTRY, "offline-nano", example_spec(), AT, policy=loosened)
    assert canary.challengers == ("offline-cheap",)  # a first-pass rate of 25% is poor: upshift
    assert canary.motivating_figures["cost_per_accepted_usd"]["offline-cheap"] == pytest.approx(0.0015)


# ---------------------------------------------------------------- routing canaries


def _quality_row(model: str, **figures) -> dict:
    row = {
        "campaign_id": example_spec().campaign_id,
        "stage": "draft",
        "model": model,
        "leads": 1200,
        "first_pass_rate": 0.99,
        "first_round_failure_rate": 0.12,
        "repairs_per_accepted": 0.01,
        "escalations_per_accepted": 0.002,
        "audited": 60,
        "audit_failure_rate": 0.0,
        "mature_sends": 800,
        "positive_reply_rate": 0.02,
        "unsubscribe_rate": 0.004,
        "complaint_rate": None,
        "negative_reply_rate": 0.03,
        "cost_per_accepted_usd": 0.0009,
    }
    return {**row, **figures}


def _frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(QUALITY_COLUMNS))


def _propose(quality: pd.DataFrame, current: str, **kwargs):
    return propose_routing_canaries(quality, REGISTRY, current, example_spec(), AT, **kwargs)


def test_a_model_holding_its_kpis_with_margin_gets_a_downshift_canary() -> None:
    (canary,) = _propose(_frame(_quality_row("offline-cheap")), "offline-cheap")
    assert (canary.kind, canary.state, canary.control, canary.challengers) == (
        "routing",
        "proposed",
        "offline-cheap",
        ("offline-nano",),
    )
    assert canary.primary_metric == PRIMARY_METRIC and canary.max_traffic_share == 0.2
    assert canary.target_segments == tuple(s.name for s in example_spec().segments)
    assert canary.stopping_rule.non_inferiority_margin == DEFAULT_POLICY.margin and canary.mde == DEFAULT_POLICY.margin
    assert canary.base_rate == 0.02 and canary.planned_sample_size > 1000
    rails = {g.metric: g for g in canary.guardrails}
    assert set(rails) == {"unsubscribe_rate", "complaint_rate", "negative_reply_rate", "first_round_failure_rate"}
    assert all(g.relative for g in rails.values())
    assert rails["unsubscribe_rate"].base_rate == 0.004
    # The stage's own KPI: the gate may reject the nano drafts at most 1.25 times as often (known the day they are written).
    first_round = rails["first_round_failure_rate"]
    assert first_round.limit == 0.25 and first_round.prior_events == 0.5
    assert first_round.base_rate == pytest.approx(0.12)  # the control's own rate
    assert rails["complaint_rate"].base_rate == 0.0005  # unknown: the floor
    figures = canary.motivating_figures
    assert figures["stage"] == "draft" and figures["direction"] == "downshift"
    # Never drafted here: the challenger's cost is estimated at its list price, and said so.
    costs = figures["cost_per_accepted_usd"]
    assert costs["offline-cheap"] == 0.0009 and costs["offline-nano"] == pytest.approx(0.0009 * 0.5 / 0.75)
    assert figures["challenger_cost_estimated"] is True and figures["challenger_figures"] is None
    assert "offline-nano" in canary.hypothesis and "67%" in canary.hypothesis
    # A person decides on routing, whatever the policy.
    assert not auto_approval(canary, {"prompt_version": {"max_share": 0.5}}).allowed


def test_measured_challenger_costs_are_used_as_measured() -> None:
    quality = _frame(_quality_row("offline-cheap"), _quality_row("offline-nano", leads=50, cost_per_accepted_usd=0.0008))
    (canary,) = _propose(quality, "offline-cheap")
    assert canary.motivating_figures["cost_per_accepted_usd"] == {"offline-cheap": 0.0009, "offline-nano": 0.0008}
    assert canary.motivating_figures["challenger_cost_estimated"] is False
    assert canary.motivating_figures["challenger_figures"]["leads"] == 50


@pytest.mark.parametrize(
    "figures",
    [{"first_pass_rate": 0.70}, {"audit_failure_rate": 0.3}],
    ids=["gate first-pass rate poor", "audit failures over the spec's limit"],
)
def test_a_poor_model_gets_an_upshift_canary(figures) -> None:
    (canary,) = _propose(_frame(_quality_row("offline-nano", **figures)), "offline-nano")
    assert (canary.control, canary.challengers) == ("offline-nano", ("offline-cheap",))
    assert canary.motivating_figures["direction"] == "upshift" and "poor" in canary.motivating_figures["assessment"]
    assert canary.stopping_rule.non_inferiority_margin == DEFAULT_POLICY.margin


def test_online_models_move_among_online_models() -> None:
    (canary,) = _propose(_frame(_quality_row("gpt-4o-mini")), "gpt-4o-mini")
    assert canary.challengers == ("gpt-4.1-nano",)


@pytest.mark.parametrize(
    ("rows", "current"),
    [
        ((), "offline-cheap"),  # no figures at all
        ((_quality_row("offline-cheap", leads=150),), "offline-cheap"),  # too few leads
        ((_quality_row("offline-cheap", mature_sends=40),), "offline-cheap"),  # too few mature sends to downshift
        ((_quality_row("offline-cheap", audited=3),), "offline-cheap"),  # too few audits to downshift
        ((_quality_row("offline-cheap", first_pass_rate=0.9),), "offline-cheap"),  # neither poor nor with margin
        ((_quality_row("offline-nano"),), "offline-nano"),  # no cheaper tier
        ((_quality_row("offline-premium", first_pass_rate=0.5),), "offline-premium"),  # no more capable tier
        ((_quality_row("offline-cheap", campaign_id="other"),), "offline-cheap"),  # another campaign's figures
        ((_quality_row("offline-cheap", stage="repair"),), "offline-cheap"),  # another stage's figures
    ],
)
def test_no_canary_when_the_figures_do_not_call_for_one(rows, current) -> None:
    assert _propose(_frame(*rows), current) == []


def test_assess_says_why() -> None:
    thin = assess(_frame(_quality_row("offline-cheap", leads=12)), example_spec(), "offline-cheap")
    assert thin.step == 0 and "too thin: 12 leads" in thin.reason
    good = assess(_frame(_quality_row("offline-cheap")), example_spec(), "offline-cheap")
    assert good.step == -1 and "holds with margin" in good.reason


def test_a_move_already_open_or_recently_turned_down_is_not_proposed_again() -> None:
    quality = _frame(_quality_row("offline-cheap"))
    (earlier,) = propose_routing_canaries(quality, REGISTRY, "offline-cheap", example_spec(), AT - timedelta(days=10))
    assert _propose(quality, "offline-cheap", history=[earlier]) == []  # still proposed
    running = transition(
        transition(earlier, "approved", "ana", "ok", {}, AT - timedelta(days=9))[0],
        "running",
        "step",
        "go",
        {},
        AT - timedelta(days=9),
    )[0]
    rolled_back = transition(running, "rolled_back", "decision step", "unsubscribes up", {}, AT - timedelta(days=2))[0]
    assert _propose(quality, "offline-cheap", history=[rolled_back]) == []
    long_ago = replace(rolled_back, updated_at=AT - timedelta(days=45))
    assert len(_propose(quality, "offline-cheap", history=[long_ago])) == 1
    # An experiment of another kind does not block it, nor one that concluded with a promotion.
    other = replace(rolled_back, kind="prompt_version")
    assert len(_propose(quality, "offline-cheap", history=[other])) == 1
    promoted = transition(running, "promoted", "decision step", "not worse", {"winner": "offline-nano"}, AT - timedelta(days=2))[
        0
    ]
    assert len(_propose(quality, "offline-cheap", history=[promoted])) == 1
    # Any open routing experiment does: one model change at a time.
    upshift = replace(running, control="offline-nano", challengers=("offline-cheap",))
    assert _propose(quality, "offline-cheap", history=[upshift]) == []


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match="cost_per_accepted_usd"):
        _propose(_frame(_quality_row("offline-cheap")).drop(columns=["cost_per_accepted_usd"]), "offline-cheap")


def test_stage_model_resolves_the_loops_choice_to_what_serves_it() -> None:
    spec = example_spec()  # routed to the offline models: draft is offline-cheap
    assert stage_model("draft", {}, spec, lambda name: REGISTRY.serving(name, {})) == "offline-cheap"
    assert stage_model("draft", {"draft": "gpt-4.1-nano"}, spec, lambda name: REGISTRY.serving(name, {})) == "offline-nano"
    assert (
        stage_model("draft", {"draft": "gpt-4.1-nano"}, spec, lambda name: REGISTRY.serving(name, {"OPENAI_API_KEY": "sk-x"}))
        == "gpt-4.1-nano"
    )
    assert stage_model("draft", {"draft": "offline-nano"}, spec, lambda name: REGISTRY.serving(name, {})) == "offline-nano"
