"""The dbt project as Dagster sees it: how dbt nodes map to asset keys (the manifest itself: `manifest.py`).

Sources written earlier in the same daily run (events, suppression) map to the
Python assets that write them. The other sources (sends, drafts, …) are written
*later* in the line, so for the learn stage they are what earlier days wrote: they
map to `prior_days/<table>` keys, which keeps the asset graph acyclic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator

SAME_RUN_SOURCES = {"events": dg.AssetKey("outcome_events"), "suppression": dg.AssetKey("suppression_list")}
# Tests that only repeat a constraint raw's DDL enforces on every insert: the daily build
# skips them, the weekly integrity job and the test suite run them.
INTEGRITY_TAG = "integrity"


class FactoryDbtTranslator(DagsterDbtTranslator):
    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        name = dbt_resource_props["name"]
        if dbt_resource_props["resource_type"] == "source":
            return SAME_RUN_SOURCES.get(name, dg.AssetKey(["prior_days", name]))
        return dg.AssetKey([dbt_resource_props["schema"], name])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str:
        return "learn"


def prior_day_specs(manifest: Mapping[str, Any]) -> list[dg.AssetSpec]:
    """Descriptions for the `prior_days/*` keys, so the UI explains them instead of showing bare stubs."""
    names = sorted({s["name"] for s in manifest["sources"].values()} - SAME_RUN_SOURCES.keys())
    return [
        dg.AssetSpec(
            key=dg.AssetKey(["prior_days", name]),
            group_name="learn",
            description=f"`raw.{name}` as earlier days left it. The line writes it after the learn stage, so dbt sees the days before.",
            kinds={"duckdb"},
        )
        for name in names
    ]
