"""A junk model never stops the line.

The real `openai` client talks to the real local server on 127.0.0.1, which answers every
request with the same well-formed but unrelated JSON (`junk_json`) or with prose (`prose`):
the client stops paying for such a model, the gate quarantines every lead with reasons and
sends nothing, the demo names what served and what the model failed, and two real Dagster
days complete (held at the pass-rate gate, not stopped).
"""

from __future__ import annotations

import asyncio
import json
from datetime import date, timedelta

import dagster as dg
import pandas as pd
import pytest
from helpers_logic import example_spec, make_leads, work_frame

from factory_dagster.cli import main
from factory_dagster.definitions import build_definitions
from factory_dagster.demo import closing_lines, daily_summary, describe_models, run_days
from factory_dagster.drafting.draft import draft_candidates
from factory_dagster.gates.assets import pass_rate_hold_reason
from factory_dagster.gates.pipeline import run_gates
from factory_dagster.models.client import ChatClient, Endpoint
from factory_dagster.models.gateway import GatewaySettings, ModelGateway
from factory_dagster.models.local_server import Faults, serving
from factory_dagster.models.registry import load_registry
from factory_dagster.models.resilience import RetryPolicy
from factory_dagster.models.routing import resolve_routes
from factory_dagster.planning.plan import PlanAnswer
from factory_dagster.run_context import RunContext
from factory_dagster.settings import DEFAULT_SPEC_PATH, Paths
from factory_dagster.warehouse.store import connect

KEY = "local-test-key"
MODELS = {"gpt-4o": 0.0, "gpt-4o-mini": 0.15}
START = date(2026, 3, 2)
BRIEF = {"task": "plan", "segments": [{"name": "smb"}], "angles": [{"name": "close_speed", "claims": ["Close in 3 days."]}]}
MESSAGES = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": f"<brief>{json.dumps(BRIEF)}</brief>"}]
# Two calls in flight: the breaker sees the first unusable answers before most calls are sent.
FAST = GatewaySettings(retry=RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.02), timeout_s=5.0, max_concurrency=2)


def endpoint_environ(server) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.base_url}


def requested_models(server) -> set[str]:
    return {model for path, model, _ in server.log if path.endswith("/chat/completions")}


# --- the client: a model that only answers junk is skipped, not paid for all day ------------------------


def test_a_model_that_only_answers_junk_trips_its_breaker_and_is_then_skipped():
    with serving(MODELS, KEY, Faults(answer_mode="junk_json")) as server:

        async def go():
            async with ChatClient(breaker_threshold=2, max_reasks=1, breaker_cooldown_s=60) as client:
                return [
                    await client.complete([Endpoint("gpt-4o-mini", server.base_url, KEY)], MESSAGES, PlanAnswer) for _ in range(3)
                ]

        first, second, third = asyncio.run(go())
    assert (first.status, first.attempts, first.reasks) == ("invalid", 2, 1)  # two unusable answers: the breaker opens
    for skipped in (second, third):
        assert skipped.status == "error" and skipped.attempts == 0 and "circuit open" in skipped.error
        assert "unusable" in skipped.error and KEY not in skipped.error
    assert server.count(200) == 2


def test_a_usable_answer_resets_the_count_of_unusable_ones():
    with serving(MODELS, KEY, Faults(script={"gpt-4o": ["wrong_schema", "ok", "wrong_schema", "ok"]})) as server:

        async def go():
            async with ChatClient(breaker_threshold=2, max_reasks=1) as client:
                outcomes = [
                    await client.complete([Endpoint("gpt-4o", server.base_url, KEY)], MESSAGES, PlanAnswer) for _ in range(2)
                ]
                return outcomes, client.breaker(server.base_url, "gpt-4o").state

        outcomes, state = asyncio.run(go())
    assert [(o.status, o.reasks) for o in outcomes] == [("ok", 1), ("ok", 1)] and state == "closed"


# --- the gate: every lead of a junk model is quarantined with its reasons, and the day is held ----------


@pytest.mark.parametrize("mode", ["junk_json", "prose"])
def test_drafting_and_the_gate_quarantine_every_lead_of_a_junk_model_with_reasons(mode):
    spec = example_spec().model_copy(
        update={
            "routing": {
                "plan": "gpt-4o",
                "draft": ["gpt-4o-mini", "gpt-4o"],
                "repair": ["gpt-4o-mini", "gpt-4o"],
                "escalate": "gpt-4o",
                "audit": "gpt-4o",
            }
        }
    )
    work = work_frame(spec, make_leads(12, spec))
    with serving(MODELS, KEY, Faults(answer_mode=mode)) as server:
        environ, registry = endpoint_environ(server), load_registry()
        run = RunContext("run-junk", START, spec.campaign_id)
        gw = ModelGateway(registry, resolve_routes(spec, registry, environ), run, environ=environ, settings=FAST)
        candidates, deferred = draft_candidates(gw, spec, work)
        output = run_gates(gw, spec, work, candidates)
    assert deferred == [] and len(candidates) == 12 * spec.drafting.candidates and candidates.parse_error.notna().all()
    assert output.messages == [] and output.deferred == [] and output.postponed == []
    assert sorted(q["lead_id"] for q in output.quarantine) == sorted(work.lead_id)
    assert all(q["reason_codes"] and q["reason"].strip() for q in output.quarantine)
    ledger = gw.ledger()
    assert set(ledger.provider) == {"openai"} and set(ledger.model) <= requested_models(server) <= set(MODELS)
    assert set(ledger.status) <= {"invalid", "error"}
    # The breaker keeps a junk model from being paid for every call: far fewer requests than calls x chain x re-asks.
    # The breaker keeps a junk model from being paid for all day: without it every call costs 2-4 requests
    # (a re-ask on each model of the chain), with it the calls after the first few are not sent.
    assert server.requests < len(ledger)
    reason = pass_rate_hold_reason(0, len(output.quarantine), spec)
    assert reason and "0 of 12" in reason and "held" in reason
    assert pass_rate_hold_reason(9, 1, spec) is None and pass_rate_hold_reason(0, 0, spec) is None


# --- the banner: what serves each stage, from the line's own routing ------------------------------------


def test_the_banner_names_the_offline_models_without_a_key():
    spec, registry = example_spec().model_copy(update={"routing": {}}), load_registry()
    banner = describe_models(resolve_routes(spec, registry, {}), registry, {})
    assert banner.startswith("models: offline stand-ins, no language model runs")
    assert "plan offline-premium (for gpt-4o)" in banner and "draft offline-cheap (for gpt-4o-mini)" in banner


def test_the_banner_names_the_endpoint_host_and_models_never_the_key():
    spec, registry = example_spec().model_copy(update={"routing": {}}), load_registry()
    environ = {"OPENAI_API_KEY": "sk-very-secret-1234", "OPENAI_BASE_URL": "http://ops:hunter2@10.1.2.3:8089/v1?token=abc"}
    banner = describe_models(resolve_routes(spec, registry, environ), registry, environ)
    assert banner.startswith("models: the OpenAI-compatible endpoint at 10.1.2.3:8089: plan gpt-4o then gpt-4o-mini, ")
    assert "escalate gpt-4o" in banner and "audit gpt-4o" in banner and "offline" not in banner
    for secret in ("sk-very-secret", "hunter2", "ops", "token", "abc"):
        assert secret not in banner


def test_the_demo_command_prints_the_banner_from_the_line_routing(tmp_path, monkeypatch, capsys, dbt_manifest):
    monkeypatch.setenv("FACTORY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-1234")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert main(["demo", "--days", "0"]) == 0
    out = capsys.readouterr().out
    assert "models: the OpenAI-compatible endpoint at 127.0.0.1:9: plan gpt-4o then gpt-4o-mini" in out
    assert "sk-very-secret" not in out and "no language model" not in out


# --- two real Dagster days against a junk-JSON server ---------------------------------------------------


def test_two_days_against_a_junk_json_server_complete_send_nothing_unfit_and_account_for_every_lead(
    tmp_path, monkeypatch, dbt_manifest
):
    paths = Paths.under(tmp_path / "home", spec=DEFAULT_SPEC_PATH)
    with serving(MODELS, KEY, Faults(answer_mode="junk_json")) as server:
        for name, value in endpoint_environ(server).items():
            monkeypatch.setenv(name, value)
        results = run_days(build_definitions(paths), dg.DagsterInstance.ephemeral(), paths, START, 2, 25, progress=lambda _: None)
    assert [r.completed for r in results] == [True, True], [r.error for r in results]
    assert all(r.held and "gate passed 0 of" in r.held for r in results)

    def query(sql: str) -> pd.DataFrame:
        with connect(paths.warehouse, read_only=True) as con:
            return con.execute(sql).df()

    unfit = query(
        """SELECT s.send_id FROM raw.sends s LEFT JOIN raw.messages m USING (message_id)
           LEFT JOIN raw.gate_results g ON g.draft_id = m.draft_id AND g.passed AND g.selected
           WHERE g.draft_id IS NULL OR s.lead_id IN (SELECT lead_id FROM raw.messages_quarantine)"""
    )
    assert unfit.empty
    fates = query(
        """SELECT l.lead_id, s.send_id, q.reason, q.reason_codes FROM raw.leads l
           JOIN raw.assignments a USING (lead_id)
           LEFT JOIN raw.sends s USING (lead_id) LEFT JOIN raw.messages_quarantine q USING (lead_id)"""
    )
    assert len(fates) == query("SELECT count(*) AS n FROM raw.leads").n[0] > 40
    quarantined = fates[fates.send_id.isna()]
    assert quarantined.reason.str.strip().str.len().gt(0).all() and quarantined.reason_codes.map(len).gt(0).all()

    calls = query("SELECT DISTINCT stage, provider, model FROM raw.llm_calls")
    assert {"plan", "draft", "repair", "escalate"} <= set(calls.stage) and set(calls.provider) == {"openai"}
    assert set(calls.model) <= requested_models(server) <= set(MODELS)
    plans = query("SELECT kind, detail FROM raw.incidents WHERE kind = 'plan_fallback'")
    assert len(plans) == 2 and plans.detail.str.contains("built from the spec alone").all()

    summary = daily_summary(paths, START, START + timedelta(days=1))
    assert (
        summary.unusable.tolist()
        == query("SELECT count(*) AS n FROM raw.messages_quarantine GROUP BY partition_day ORDER BY partition_day").n.tolist()
    )
    assert summary.held.tolist() == ["yes", "yes"] and summary.sends.sum() == 0
    ran, unusable = closing_lines(results, summary, 2)
    assert ran.startswith("2/2 days ran") and "2 held" in ran
    assert unusable.startswith(f"{int(summary.unusable.sum())} leads were quarantined because the model's answers were unusable")
