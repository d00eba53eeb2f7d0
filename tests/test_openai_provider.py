"""The model layer's OpenAI-compatible path: the real `openai` client against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pandas as pd
import pytest

from factory_dagster.campaign.runs import execute_campaign_day
from factory_dagster.campaign.spec import SpecError, load_spec
from factory_dagster.definitions import build_definitions
from factory_dagster.intake.sample_leads import write_sample_file
from factory_dagster.models.gateway import CallRequest, ModelGateway
from factory_dagster.models.local_server import serving
from factory_dagster.models.prompts import build_messages
from factory_dagster.models.registry import ModelRegistry, load_registry
from factory_dagster.models.routing import resolve_routes
from factory_dagster.planning.plan import PLAN_PROMPT_VERSION, PlanAnswer, parse_plan, plan_brief, plan_violations
from factory_dagster.run_context import RunContext
from factory_dagster.settings import DEFAULT_SPEC_PATH, Paths
from factory_dagster.warehouse.store import connect

RUN = RunContext("run-1", date(2026, 1, 5), "brightwave-close")
KEY = "local-test-key"


@pytest.fixture(scope="module")
def server():
    with serving({"gpt-4o": 0.0, "gpt-4o-mini": 0.15}, api_key=KEY) as srv:
        yield srv


def plan_messages() -> list[dict[str, str]]:
    spec = load_spec(DEFAULT_SPEC_PATH)
    return build_messages(PLAN_PROMPT_VERSION, plan_brief(spec, pd.DataFrame(columns=["segment", "angle", "sends", "replies"])))


def test_without_a_key_the_offline_stand_ins_serve():
    routes = resolve_routes(load_spec(DEFAULT_SPEC_PATH), load_registry(), environ={})
    assert {stage: r.primary for stage, r in routes.items()} == {
        "plan": "offline-premium",
        "draft": "offline-cheap",
        "repair": "offline-cheap",
        "escalate": "offline-premium",
        "audit": "offline-premium",
        "improve": "offline-premium",
        "classify": "offline-cheap",
        "classify_escalate": "offline-premium",
    }
    assert all("offline stand-in" in r.source for r in routes.values())
    assert routes["draft"].served == ("offline-cheap", "offline-premium")  # the chain keeps its fallback


def test_with_a_key_the_registry_models_serve():
    routes = resolve_routes(load_spec(DEFAULT_SPEC_PATH), load_registry(), environ={"OPENAI_API_KEY": "sk-anything"})
    assert routes["draft"].served == ("gpt-4o-mini", "gpt-4o") and routes["escalate"].served == ("gpt-4o",)
    assert all(r.source == "spec" for r in routes.values())


def test_the_routing_table_serves_stages_the_spec_does_not_override():
    spec = load_spec(DEFAULT_SPEC_PATH).model_copy(update={"routing": {}})
    routes = resolve_routes(spec, load_registry(), environ={"OPENAI_API_KEY": "sk-anything"})
    assert routes["plan"].served == ("gpt-4o", "gpt-4o-mini") and routes["plan"].source == "routing table"


def test_routing_to_an_unknown_model_names_the_field():
    spec = load_spec(DEFAULT_SPEC_PATH).model_copy(
        update={"routing": {"plan": "gpt-9", "draft": "gpt-4o-mini", "escalate": "gpt-4o"}}
    )
    with pytest.raises(SpecError, match=r"routing\.plan.*gpt-9"):
        resolve_routes(spec, load_registry(), environ={})


def online_gateway(server, key: str = KEY, registry: ModelRegistry | None = None) -> ModelGateway:
    environ = {"OPENAI_API_KEY": key, "OPENAI_BASE_URL": server.base_url}
    registry = registry or load_registry()
    routes = resolve_routes(load_spec(DEFAULT_SPEC_PATH), registry, environ)
    return ModelGateway(registry, routes, RUN, environ=environ)


def plan_request(seed: int = 0) -> CallRequest:
    return CallRequest("plan", PLAN_PROMPT_VERSION, plan_messages(), seed=seed, response_model=PlanAnswer)


def test_a_call_goes_over_http_and_is_priced_from_the_registry(server):
    gateway = online_gateway(server)
    before = server.requests
    result = gateway.complete(plan_request())
    assert server.requests == before + 1 and result.status == "ok" and result.model == "gpt-4o"
    assert plan_violations(parse_plan(result.text), load_spec(DEFAULT_SPEC_PATH)) == []
    row = gateway.ledger().iloc[0]
    assert row.provider == "openai" and row["mode"] == "online" and row.tokens_in > 0 and row.tokens_out > 0
    assert row.cost_usd == pytest.approx((row.tokens_in * 2.50 + row.tokens_out * 10.00) / 1e6)


def test_a_failing_call_is_logged_as_an_error_not_raised_and_never_leaks_the_key(server):
    secret = "sk-this-must-never-be-logged"
    gateway = online_gateway(server, key=secret)
    result = gateway.complete(plan_request())
    assert result.status == "error" and result.text == ""
    row = gateway.ledger().iloc[0]
    assert "401" in row.error and secret not in row.error and row.cost_usd == 0


def test_one_day_of_the_line_runs_against_the_openai_compatible_server(server, tmp_path, monkeypatch, dbt_manifest):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    paths = Paths.under(tmp_path)
    day = date(2026, 2, 2)
    write_sample_file(paths.leads_inbox, day, n=40)
    result = execute_campaign_day(build_definitions(paths), dg.DagsterInstance.ephemeral(), paths.default_campaign, day)
    assert result.success
    with connect(paths.warehouse) as con:
        calls = con.execute("SELECT provider, model, count(*) AS n FROM raw.llm_calls GROUP BY 1, 2").df()
        sends = con.execute("SELECT count(*) FROM raw.sends").fetchall()[0][0]
        routing = con.execute("SELECT stage, model, source FROM raw.routing").df()
    assert set(calls.provider) == {"openai"} and {"gpt-4o", "gpt-4o-mini"} <= set(calls.model)
    assert sends > 0 and (routing.source == "spec").all()
