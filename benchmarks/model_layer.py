"""Model-layer throughput: 5,000 drafts through the gateway against the local OpenAI-compatible server.

The server runs in its own process, so it does not share the GIL with the client, and
answers every chat completion after 200 ms. With 50 calls in flight the ideal wall time
is 5,000 × 0.2 s / 50 = 20 s. The benchmark reports how close the real client comes, with
retries, token buckets, cache lookups and ledger accounting all in the path.

The second run sets the server to enforce a requests-per-minute limit and gives the
registry the same limit; the client's token bucket should keep almost every request
under it. That run measures the share of requests answered 429.
"""

from __future__ import annotations

import time
from datetime import date
from types import SimpleNamespace

from factory_dagster.campaign.spec import load_spec
from factory_dagster.drafting.draft import draft_brief, draft_request
from factory_dagster.intake.sample_leads import generate_leads
from factory_dagster.models.gateway import GatewaySettings, ModelGateway
from factory_dagster.models.local_server import Faults, fetch_stats, serving_in_subprocess
from factory_dagster.models.registry import ModelRegistry, load_registry
from factory_dagster.models.routing import resolve_routes
from factory_dagster.run_context import RunContext
from factory_dagster.settings import DEFAULT_SPEC_PATH

DRAFTS = 5000
LATENCY_S = 0.2
CONCURRENCY = 50
RPM_DRAFTS = 1500
RPM_LIMIT = 1200
KEY = "bench-key"


def _requests(n: int) -> list:
    spec = load_spec(DEFAULT_SPEC_PATH)
    angle = spec.angles[0]
    leads = generate_leads(date(2026, 5, 4), n=n, defect_rate=0.0)
    requests = []
    for i, row in enumerate(leads.itertuples()):
        lead = SimpleNamespace(**row._asdict(), lead_id=f"lead_{i:05d}", arm_id=f"{angle.name}|draft-v1|gpt-4o-mini")
        brief = draft_brief(spec, angle.name, "Month-end is where finance teams lose the most time.", angle.claims, "draft-v1")
        requests.append(draft_request("draft", "draft-v1", brief, lead, 0, i))
    return requests


def _gateway(base_url: str, registry: ModelRegistry) -> ModelGateway:
    environ = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": base_url}
    spec = load_spec(DEFAULT_SPEC_PATH).model_copy(update={"routing": {"draft": "gpt-4o-mini"}})
    routes = resolve_routes(spec, registry, environ)
    return ModelGateway(
        registry,
        routes,
        RunContext("bench", date(2026, 5, 4), spec.campaign_id),
        environ=environ,
        settings=GatewaySettings(max_concurrency=CONCURRENCY, timeout_s=30.0),
    )


def _with_rpm(registry: ModelRegistry, model: str, rpm: int) -> ModelRegistry:
    models = {name: entry.model_dump() for name, entry in registry.models.items()}
    models[model]["rpm"] = rpm
    return ModelRegistry.model_validate({"models": models})


def run() -> dict:
    registry = load_registry()
    requests = _requests(DRAFTS)
    with serving_in_subprocess({"gpt-4o-mini": 0.15}, api_key=KEY, faults=Faults(latency_s=LATENCY_S)) as base_url:
        gateway = _gateway(base_url, registry)
        started = time.perf_counter()
        results = gateway.complete_many(requests)
        wall = time.perf_counter() - started
    ok = sum(r.status == "ok" for r in results)

    rpm_requests = _requests(RPM_DRAFTS)
    limited = _with_rpm(registry, "gpt-4o-mini", RPM_LIMIT)
    with serving_in_subprocess({"gpt-4o-mini": 0.15}, api_key=KEY, faults=Faults(rpm_limit=RPM_LIMIT)) as base_url:
        gateway = _gateway(base_url, limited)
        started = time.perf_counter()
        rpm_results = gateway.complete_many(rpm_requests)
        rpm_wall = time.perf_counter() - started
        stats = fetch_stats(base_url)
    chat = [entry for entry in stats["log"] if entry[0].endswith("/chat/completions")]
    answered_429 = sum(1 for entry in chat if entry[2] == 429)
    ideal = DRAFTS * LATENCY_S / CONCURRENCY
    return {
        "drafts": DRAFTS,
        "latency_s": LATENCY_S,
        "concurrency": CONCURRENCY,
        "ideal_s": round(ideal, 2),
        "wall_s": round(wall, 2),
        "ratio": round(wall / ideal, 3),
        "ok": ok,
        "rpm_limit": RPM_LIMIT,
        "rpm_drafts": RPM_DRAFTS,
        "rpm_wall_s": round(rpm_wall, 1),
        "rpm_requests": len(chat),
        "rpm_ok": sum(r.status == "ok" for r in rpm_results),
        "share_429": round(answered_429 / max(1, len(chat)), 4),
    }
