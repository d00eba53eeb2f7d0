"""Persist a gateway's calls: `raw.llm_calls` rows and the prompt versions they used."""

from __future__ import annotations

import duckdb
import pandas as pd

from factory_dagster.models.gateway import ModelGateway, utcnow
from factory_dagster.models.prompts import prompt
from factory_dagster.warehouse.store import insert_rows


def write_ledger(con: duckdb.DuckDBPyConnection, gateway: ModelGateway) -> int:
    """Append the calls (the ledger is append-only: every call made is spent) and register prompt versions."""
    calls = gateway.ledger()
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
