"""Reply classification through the real `openai` client against the local OpenAI-compatible server on 127.0.0.1.

The shipped spec routes `classify` to gpt-4o-mini and `classify_escalate` to gpt-4o; with a key and
OPENAI_BASE_URL set, the gateway calls them over HTTP (structured output by JSON schema), and the
server answers as the offline models would.
"""

from __future__ import annotations

from datetime import date

import pytest

from factory_dagster.campaign.spec import load_spec
from factory_dagster.models.gateway import GatewaySettings, ModelGateway
from factory_dagster.models.local_server import Faults, serving
from factory_dagster.models.registry import load_registry
from factory_dagster.models.resilience import RetryPolicy
from factory_dagster.models.routing import resolve_routes
from factory_dagster.replies.classify import ClassifySettings, classify_replies
from factory_dagster.replies.labelled import load_labelled
from factory_dagster.run_context import RunContext
from factory_dagster.settings import DEFAULT_SPEC_PATH

KEY = "local-test-key"
RUN = RunContext("run-replies-openai", date(2026, 3, 16), "brightwave-close")
FAST = GatewaySettings(retry=RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.05), timeout_s=10.0)
SPEC = load_spec(DEFAULT_SPEC_PATH)
SETTINGS = ClassifySettings(own_texts=(SPEC.required.unsubscribe_footer,))


def sample():
    """Ten labelled replies the rules do not all settle: two of each human class, one out-of-office, one bounce."""
    labelled = load_labelled()
    wanted = {"positive": 2, "question": 2, "not_now": 2, "negative": 2, "out_of_office": 1, "auto_reply": 1}
    return labelled.groupby("label", group_keys=False).apply(lambda g: g.head(wanted.get(g.name, 0))).reset_index(drop=True)


def online_gateway(server) -> ModelGateway:
    environ = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url}
    registry = load_registry()
    return ModelGateway(registry, resolve_routes(SPEC, registry, environ), RUN, environ=environ, settings=FAST)


def test_ten_replies_are_classified_over_http_through_the_routed_models():
    replies = sample()
    with serving({"gpt-4o": 0.0, "gpt-4o-mini": 0.15}, api_key=KEY) as server:
        gateway = online_gateway(server)
        out = classify_replies(gateway, gateway.run, replies, SETTINGS)
        requests = server.requests
    ledger = gateway.ledger()
    assert len(out) == 10 and out["class"].notna().all()
    assert set(ledger.provider) == {"openai"} and set(ledger["mode"]) == {"online"}
    assert set(ledger[ledger.stage == "classify"].model) == {"gpt-4o-mini"}
    assert set(ledger[ledger.stage == "classify_escalate"].model) <= {"gpt-4o"}
    assert requests >= len(ledger) == (out.decided_by != "rule").sum() + (out.decided_by == "premium").sum()
    assert (ledger.tokens_in > 0).all() and (ledger.cost_usd > 0).all()
    correct = (out["class"].values == replies.label.values).sum()
    assert correct >= 8, list(zip(replies.label, out["class"], out.decided_by, strict=True))


def test_a_cheap_model_that_answers_prose_is_caught_by_the_chain_or_escalated():
    replies = sample()
    faults = Faults(answer_mode="prose", answer_mode_models=["gpt-4o-mini"])
    alone = SPEC.model_copy(update={"routing": {**SPEC.routing, "classify": "gpt-4o-mini"}})
    with serving({"gpt-4o": 0.0, "gpt-4o-mini": 0.15}, api_key=KEY, faults=faults) as server:
        # The shipped chain (gpt-4o-mini, then gpt-4o): the client re-asks, then falls back within the stage.
        chained = online_gateway(server)
        out_chained = classify_replies(chained, chained.run, replies, SETTINGS)
        # The cheap model alone: its unusable answers reach the classifier, which escalates every one.
        environ = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url}
        registry = load_registry()
        single = ModelGateway(registry, resolve_routes(alone, registry, environ), RUN, environ=environ, settings=FAST)
        out_single = classify_replies(single, single.run, replies, SETTINGS)
    first = chained.ledger()
    cheap_stage = first[first.stage == "classify"]
    assert len(cheap_stage) and cheap_stage.fallback_used.all() and set(cheap_stage.model) == {"gpt-4o"}
    assert (cheap_stage.reasks >= 1).all() and out_chained["class"].notna().all()
    ledger = single.ledger()
    cheap, premium = ledger[ledger.stage == "classify"], ledger[ledger.stage == "classify_escalate"]
    assert len(cheap) and set(cheap.status) == {"invalid"} and set(cheap.model) == {"gpt-4o-mini"}
    assert sorted(premium.lead_id.fillna("")) == sorted(cheap.lead_id.fillna("")) and len(premium) == len(cheap)
    read_by_models = out_single[out_single.decided_by != "rule"]
    assert set(read_by_models.decided_by) == {"premium"} and set(read_by_models.model) == {"gpt-4o"}
    assert out_single["class"].notna().all()


@pytest.mark.parametrize("key", ["sk-wrong-and-secret"])
def test_a_refused_key_quarantines_with_the_reason_and_never_leaks_the_key(key):
    replies = sample().head(3)
    with serving({"gpt-4o": 0.0, "gpt-4o-mini": 0.15}, api_key=KEY) as server:
        environ = {"OPENAI_API_KEY": key, "OPENAI_BASE_URL": server.base_url}
        registry = load_registry()
        gateway = ModelGateway(registry, resolve_routes(SPEC, registry, environ), RUN, environ=environ, settings=FAST)
        out = classify_replies(gateway, gateway.run, replies, SETTINGS)
    models = out[out.decided_by != "rule"]
    assert len(models) and models["class"].isna().all()
    assert models.quarantine_reason.str.contains("no usable model answer").all()
    assert not out.astype(str).apply(lambda column: column.str.contains(key)).any().any()
    assert not gateway.ledger().astype(str).apply(lambda column: column.str.contains(key)).any().any()
