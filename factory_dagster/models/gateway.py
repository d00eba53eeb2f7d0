"""One door for all model traffic: routes a call to its provider and writes the ledger.

Every call becomes a row for `raw.llm_calls` (stage, model, prompt version, tokens,
cost from the registry, latency, status). A gateway is created per asset execution,
so usage counts never leak between assets that run in one process. A failed call is
not raised: it comes back with status "error" and empty text, and the stage decides
(repair, escalate, quarantine) — it is never silently dropped.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

import openai
import pandas as pd

from factory_dagster.models.offline import OfflineModel, estimate_tokens
from factory_dagster.models.registry import ModelEntry, ModelRegistry

OPENAI_TIMEOUT_S = 60.0
OPENAI_MAX_RETRIES = 3


def utcnow() -> datetime:
    """Naive UTC, as DuckDB TIMESTAMP columns store it."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class CallResult:
    call_id: str
    text: str
    model: str
    cost_usd: float
    status: str


@dataclass(frozen=True)
class RunContext:
    """The ids every ledger row carries."""

    run_id: str
    partition_day: date
    campaign_id: str

    def stamp(self, rows: pd.DataFrame, time_column: str = "created_at") -> pd.DataFrame:
        """The rows with this run's ids and a timestamp, ready for a `raw` table."""
        return rows.assign(
            run_id=self.run_id, partition_day=self.partition_day, campaign_id=self.campaign_id, **{time_column: utcnow()}
        )


@dataclass(frozen=True)
class _Answer:
    text: str
    tokens_in: int
    tokens_out: int
    status: str = "ok"
    error: str | None = None


class ModelGateway:
    def __init__(self, registry: ModelRegistry, run: RunContext, environ: Mapping[str, str] | None = None) -> None:
        self.registry = registry
        self.run = run
        self.environ = os.environ if environ is None else environ
        self._calls: list[dict] = []
        self._clients: dict[tuple[str | None, str], openai.OpenAI] = {}

    def complete(
        self,
        stage: str,
        model: str,
        prompt_version: str,
        messages: list[dict[str, str]],
        lead_id: str | None = None,
        seed_key: str = "",
    ) -> CallResult:
        entry = self.registry.entry(model)
        started = time.perf_counter()
        answer = (
            self._offline(model, entry, messages, seed_key)
            if entry.provider == "offline"
            else self._openai(model, entry, messages)
        )
        latency_ms = (time.perf_counter() - started) * 1000
        cost = entry.cost_usd(answer.tokens_in, answer.tokens_out)
        call_id = (
            "call_"
            + hashlib.sha256(f"{self.run.run_id}|{stage}|{model}|{lead_id}|{seed_key}|{len(self._calls)}".encode()).hexdigest()[
                :20
            ]
        )
        self._calls.append(
            {
                "call_id": call_id,
                "run_id": self.run.run_id,
                "partition_day": self.run.partition_day,
                "campaign_id": self.run.campaign_id,
                "stage": stage,
                "provider": entry.provider,
                "model": model,
                "prompt_version": prompt_version,
                "lead_id": lead_id,
                "tokens_in": answer.tokens_in,
                "tokens_out": answer.tokens_out,
                "cost_usd": cost,
                "latency_ms": latency_ms,
                "status": answer.status,
                "retries": 0,
                "cache_hit": False,
                "fallback_used": False,
                "error": answer.error,
                "created_at": utcnow(),
            }
        )
        return CallResult(call_id=call_id, text=answer.text, model=model, cost_usd=cost, status=answer.status)

    @staticmethod
    def _offline(model: str, entry: ModelEntry, messages: list[dict[str, str]], seed_key: str) -> _Answer:
        text = OfflineModel(model, entry.defect_rate).complete(messages, seed_key=seed_key)
        return _Answer(text, sum(estimate_tokens(m["content"]) for m in messages), estimate_tokens(text))

    def _client(self, entry: ModelEntry) -> openai.OpenAI:
        key = (entry.base_url, entry.api_key_env)
        if key not in self._clients:
            # A model without its own base_url follows OPENAI_BASE_URL, as the openai package does.
            self._clients[key] = openai.OpenAI(
                api_key=self.environ[entry.api_key_env],
                base_url=entry.base_url or self.environ.get("OPENAI_BASE_URL"),
                timeout=OPENAI_TIMEOUT_S,
                max_retries=OPENAI_MAX_RETRIES,
            )
        return self._clients[key]

    def _openai(self, model: str, entry: ModelEntry, messages: list[dict[str, str]]) -> _Answer:
        try:
            response = self._client(entry).chat.completions.create(
                model=model, messages=messages, response_format={"type": "json_object"}, temperature=0.7
            )
        except openai.OpenAIError as exc:
            # The exception text names the status and the server's message, never the key.
            return _Answer("", 0, 0, status="error", error=f"{type(exc).__name__}: {exc}"[:500])
        usage = response.usage
        text = (response.choices[0].message.content or "") if response.choices else ""
        return _Answer(text, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)

    def ledger(self) -> pd.DataFrame:
        """The calls made so far, shaped as `raw.llm_calls`."""
        return pd.DataFrame(self._calls)

    def usage(self) -> dict[str, float]:
        """Totals for the asset's Dagster metadata."""
        return {
            "llm_calls": len(self._calls),
            "llm_errors": sum(c["status"] != "ok" for c in self._calls),
            "tokens_in": sum(c["tokens_in"] for c in self._calls),
            "tokens_out": sum(c["tokens_out"] for c in self._calls),
            "cost_usd": round(sum(c["cost_usd"] for c in self._calls), 6),
        }
