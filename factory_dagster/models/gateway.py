"""One door for all model traffic: routes a call to its provider and writes the ledger.

Every call becomes a row for `raw.llm_calls` (stage, model, prompt version, tokens,
cost from the registry, latency, status). A gateway is created per asset execution,
so usage counts never leak between assets that run in one process.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pandas as pd

from factory_dagster.models.offline import OfflineModel, estimate_tokens
from factory_dagster.models.registry import ModelRegistry


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


def utcnow() -> datetime:
    """Naive UTC, as DuckDB TIMESTAMP columns store it."""
    return datetime.now(UTC).replace(tzinfo=None)


class ModelGateway:
    def __init__(self, registry: ModelRegistry, run: RunContext) -> None:
        self.registry = registry
        self.run = run
        self._calls: list[dict] = []

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
        provider = OfflineModel(model, entry.defect_rate)
        started = time.perf_counter()
        text = provider.complete(messages, seed_key=seed_key)
        latency_ms = (time.perf_counter() - started) * 1000
        tokens_in = sum(estimate_tokens(m["content"]) for m in messages)
        tokens_out = estimate_tokens(text)
        cost = entry.cost_usd(tokens_in, tokens_out)
        call_id = (
            "call_"
            + hashlib.sha256(
                f"{self.run.run_id}|{stage}|{model}|{prompt_version}|{lead_id}|{seed_key}|{len(self._calls)}".encode()
            ).hexdigest()[:20]
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
                "tokens_in": tokens_in,
                "tokens_out": tokens_out,
                "cost_usd": cost,
                "latency_ms": latency_ms,
                "status": "ok",
                "retries": 0,
                "cache_hit": False,
                "fallback_used": False,
                "error": None,
                "created_at": utcnow(),
            }
        )
        return CallResult(call_id=call_id, text=text, model=model, cost_usd=cost, status="ok")

    def ledger(self) -> pd.DataFrame:
        """The calls made so far, shaped as `raw.llm_calls`."""
        return pd.DataFrame(self._calls)

    def usage(self) -> dict[str, float]:
        """Totals for the asset's Dagster metadata."""
        return {
            "llm_calls": len(self._calls),
            "tokens_in": sum(c["tokens_in"] for c in self._calls),
            "tokens_out": sum(c["tokens_out"] for c in self._calls),
            "cost_usd": round(sum(c["cost_usd"] for c in self._calls), 6),
        }
