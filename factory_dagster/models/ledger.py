"""The model layer's DuckDB side: what the day has spent, and the ledger and cache after the calls."""

from __future__ import annotations

import duckdb
import pandas as pd

from factory_dagster.models import cache
from factory_dagster.models.gateway import ModelGateway
from factory_dagster.models.prompts import prompt
from factory_dagster.run_context import RunContext, utcnow
from factory_dagster.warehouse.store import insert_rows


def spent_today(con: duckdb.DuckDBPyConnection, run: RunContext) -> float:
    """What the campaign's model calls of this day have cost so far (every run of the day counts)."""
    return con.execute(
        "SELECT coalesce(sum(cost_usd), 0) FROM raw.llm_calls WHERE partition_day = ? AND campaign_id = ?",
        [run.partition_day, run.campaign_id],
    ).fetchall()[0][0]


def write_ledger(con: duckdb.DuckDBPyConnection, gateway: ModelGateway) -> int:
    """After the calls: append them (the ledger is append-only: every call made is spent),
    register the prompt versions and keep the new valid answers in the response cache."""
    calls = gateway.ledger()
    cache.store(con, gateway.new_cache_entries)
    if calls.empty:
        return 0
    versions = pd.DataFrame(
        [
            {
                "prompt_version": v,
                "stage": prompt(v).stage,
                "template_sha256": prompt(v).sha256,
                "template": prompt(v).system,
                "first_seen_at": utcnow(),
            }
            for v in sorted(calls.prompt_version.unique())
        ]
    )
    insert_rows(con, "prompt_versions", versions, skip_existing=True)
    return insert_rows(con, "llm_calls", calls)


def flush_ledger(con: duckdb.DuckDBPyConnection, gateway: ModelGateway) -> int:
    """`write_ledger`, then the gateway lets the written rows go: a stage that writes batch by batch, each in
    its own transaction, holds one batch's calls and answers at a time instead of the whole day's."""
    written = write_ledger(con, gateway)
    gateway.release_written()
    return written
