"""The dbt project as Dagster sees it: manifest, and how dbt nodes map to asset keys.

Sources written earlier in the same daily run (events, suppression) map to the
Python assets that write them. The other sources (sends, drafts, …) are written
*later* in the line, so for the learn stage they are what earlier days wrote: they
map to `prior_days/<table>` keys, which keeps the asset graph acyclic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator

from factory_dagster import file_lock
from factory_dagster.learning.dbt_runner import MANIFEST_PATH, PARSE_TARGET, newest_project_file, write_manifest
from factory_dagster.settings import Paths

SAME_RUN_SOURCES = {"events": dg.AssetKey("outcome_events"), "suppression": dg.AssetKey("suppression_list")}
# Tests that only repeat a constraint raw's DDL enforces on every insert: the daily build
# skips them, the weekly integrity job and the test suite run them.
INTEGRITY_TAG = "integrity"
PARSE_LOCK_NAME = ".parse.lock"  # in dbt_project/target, beside the manifest


def _manifest_is_current() -> bool:
    return MANIFEST_PATH.exists() and MANIFEST_PATH.stat().st_mtime >= newest_project_file()


def ensure_manifest() -> Path:
    """Parse the dbt project when the manifest is missing or older than a project file (a few seconds, once).

    Processes that start together on a fresh checkout (the test workers, a webserver and a daemon) take turns on a
    lock file: the first parses, the others wait and then find the manifest current instead of each parsing again."""
    if not _manifest_is_current():
        with file_lock.exclusive(PARSE_TARGET / PARSE_LOCK_NAME):
            if not _manifest_is_current():
                write_manifest(Paths.from_env().warehouse)
    return MANIFEST_PATH


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
