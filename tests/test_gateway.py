"""The model gateway end to end: real `openai` client, real HTTP server on 127.0.0.1, real DuckDB cache.

What the model layer promises, checked at the gateway where the stages use it: faults are
retried or fall back and are priced per model, the budget is never exceeded and defers
instead of dropping, re-running costs nothing (cache), batch mode round-trips, and no lead
is ever lost.
"""

from __future__ import annotations

from datetime import date

import pytest
from helpers_logic import example_spec, make_leads, work_frame

from factory_dagster.drafting.draft import draft_candidates
from factory_dagster.gates.pipeline import run_gates
from factory_dagster.models import cache
from factory_dagster.models.budget import Budget
from factory_dagster.models.gateway import DEFERRED, GatewaySettings, ModelGateway
from factory_dagster.models.ledger import write_ledger
from factory_dagster.models.local_server import Faults, serving
from factory_dagster.models.registry import load_registry
from factory_dagster.models.resilience import RetryPolicy
from factory_dagster.models.routing import RoutingTable, StageRouting, load_routing_table, resolve_routes
from factory_dagster.run_context import RunContext
from factory_dagster.warehouse.store import connect

KEY = "local-test-key"
RUN = RunContext("run-gw", date(2026, 4, 6), "brightwave-close")
FAST = GatewaySettings(retry=RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.05), timeout_s=2.0, breaker_cooldown_s=60.0)
ONLINE_SPEC = example_spec().model_copy(
    update={
        "routing": {
            "draft": ["gpt-4o-mini", "gpt-4o"],
            "repair": ["gpt-4o-mini", "gpt-4o"],
            "escalate": "gpt-4o",
            "plan": "gpt-4o",
        }
    }
)


@pytest.fixture
def server():
    with serving({"gpt-4o": 0.0, "gpt-4o-mini": 0.15}, api_key=KEY, faults=Faults()) as srv:
        yield srv


def gateway(server, *, mode: str = "online", budget: Budget | None = None, cache_loader=None) -> ModelGateway:
    environ = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url}
    registry = load_registry()
    table = load_routing_table()
    table = RoutingTable(stages={**table.stages, "draft": StageRouting(chain=["gpt-4o-mini", "gpt-4o"], mode=mode)})
    routes = resolve_routes(ONLINE_SPEC, registry, environ, table)
    return ModelGateway(registry, routes, RUN, environ=environ, budget=budget, cache_loader=cache_loader, settings=FAST)


def work(n: int):
    spec = ONLINE_SPEC
    return work_frame(spec, make_leads(n, spec)).assign(model="gpt-4o-mini")


def test_drafting_over_http_prices_every_call_from_the_registry(server):
    gw = gateway(server)
    candidates, deferred = draft_candidates(gw, ONLINE_SPEC, work(6))
    ledger = gw.ledger()
    assert deferred == [] and len(candidates) == 18 and len(ledger) == 18 and server.count(200) == 18
    assert set(ledger.model) == {"gpt-4o-mini"} and set(ledger["mode"]) == {"online"}
    expected = (ledger.tokens_in * 0.15 + ledger.tokens_out * 0.60) / 1e6
    assert ledger.cost_usd.tolist() == pytest.approx(expected.tolist())
    # The candidates differ: the seed reaches the server.
    assert candidates.groupby("lead_id").body.nunique().max() > 1 or candidates.parse_error.notna().any()


def test_a_429_with_retry_after_is_retried_and_counted(server):
    server.faults.retry_after_s = 0.2
    server.faults.script["gpt-4o-mini"] = ["429"]
    gw = gateway(server)
    candidates, _ = draft_candidates(gw, ONLINE_SPEC, work(1))
    ledger = gw.ledger()
    assert server.count(429) == 1 and ledger.retries.sum() == 1 and set(ledger.status) == {"ok"}
    assert candidates.parse_error.isna().all()


def test_a_dead_cheap_model_falls_back_to_premium_priced_as_premium(server):
    server.faults.script["gpt-4o-mini"] = ["500"] * 100
    gw = gateway(server)
    candidates, deferred = draft_candidates(gw, ONLINE_SPEC, work(2))
    ledger = gw.ledger()
    assert deferred == [] and len(candidates) == 6
    assert set(ledger.model) == {"gpt-4o"} and ledger.fallback_used.all() and set(ledger.status) == {"ok"}
    expected = (ledger.tokens_in * 2.50 + ledger.tokens_out * 10.00) / 1e6
    assert ledger.cost_usd.tolist() == pytest.approx(expected.tolist())
    assert set(candidates.model) == {"gpt-4o"}


def test_junk_answers_never_crash_and_every_lead_ends_messaged_or_quarantined(server):
    server.faults.script["gpt-4o-mini"] = ["malformed", "junk_body", "wrong_schema", "truncated", "refusal", "500"] * 3
    gw = gateway(server)
    leads = work(8)
    candidates, deferred = draft_candidates(gw, ONLINE_SPEC, leads)
    out = run_gates(gw, ONLINE_SPEC, leads, candidates)
    ledger = gw.ledger()
    assert deferred == [] and out.deferred == []
    done = {m["lead_id"] for m in out.messages} | {q["lead_id"] for q in out.quarantine}
    assert done == set(leads.lead_id)
    assert ledger.reasks.sum() > 0 and (ledger.fallback_used | (ledger.reasks > 0) | (ledger.retries > 0)).any()


def test_the_budget_is_never_exceeded_and_the_rest_is_deferred(server):
    # One lead's worst case (3 candidates, each possibly re-asked and failed over to gpt-4o at
    # full length) is about $0.12; its real cost about $0.0005. So the waves shrink to one lead
    # near the limit and stop once even one more lead's worst case no longer fits.
    leads = work(30)
    probe = gateway(server)
    worst_lead = 3 * probe.worst_case_usd(_request(leads))
    limit = worst_lead + 0.005
    gw = gateway(server, budget=Budget(limit))
    candidates, deferred = draft_candidates(gw, ONLINE_SPEC, leads)
    ledger = gw.ledger()
    assert ledger.cost_usd.sum() <= limit
    assert 0 < len(deferred) < 30 and gw.budget.exhausted
    drafted = set(candidates.lead_id)
    assert drafted | set(deferred) == set(leads.lead_id) and not drafted & set(deferred)
    # Leads are deferred in order: the first ones got their drafts.
    assert list(leads.lead_id[: len(drafted)]) == sorted(drafted, key=list(leads.lead_id).index)
    assert gw.complete_many([]) == []
    later = gw.complete(_request(leads))
    assert later.status == DEFERRED and later.call_id is None


def test_rerunning_costs_nothing_the_cache_answers(server, tmp_path):
    path = tmp_path / "w.duckdb"

    def loader(keys):
        with connect(path) as con:
            return cache.lookup(con, keys)

    first = gateway(server, cache_loader=loader)
    leads = work(5)
    before, _ = draft_candidates(first, ONLINE_SPEC, leads)
    with connect(path) as con:
        write_ledger(con, first)
    requests_after_first = server.requests
    again = gateway(server, cache_loader=loader)
    after, _ = draft_candidates(again, ONLINE_SPEC, leads)
    ledger = again.ledger()
    assert server.requests == requests_after_first
    assert ledger.cache_hit.all() and ledger.cost_usd.sum() == 0 and set(ledger["mode"]) == {"cache"}
    assert after.body.tolist() == before.body.tolist()


def test_batch_mode_round_trips_at_the_batch_price_and_retries_failures_online(server):
    server.faults.script["gpt-4o-mini"] = ["ok", "500"]  # the second batch line fails
    gw = gateway(server, mode="batch")
    gw.settings = GatewaySettings(retry=FAST.retry, timeout_s=2.0, batch_poll_s=0.0)
    leads = work(4)
    candidates, deferred = draft_candidates(gw, ONLINE_SPEC, leads)
    ledger = gw.ledger()
    assert deferred == [] and len(candidates) == 12 and candidates.parse_error.isna().all()
    batch = ledger[ledger["mode"] == "batch"]
    assert len(batch) == 12 and (batch.status == "ok").sum() == 11
    ok = batch[batch.status == "ok"]
    assert ok.cost_usd.tolist() == pytest.approx(((ok.tokens_in * 0.075 + ok.tokens_out * 0.30) / 1e6).tolist())
    online = ledger[ledger["mode"] == "online"]
    assert len(online) == 1 and online.status.iloc[0] == "ok"
    assert any(path.startswith("/v1/batches") for path, _, _ in server.log)


def _request(leads):
    from factory_dagster.drafting.draft import draft_brief, draft_request

    lead = next(leads.itertuples())
    brief = draft_brief(ONLINE_SPEC, lead.angle, lead.hook, list(lead.claims), lead.prompt_version)
    return draft_request("draft", lead.prompt_version, brief, lead, 9, 9)
