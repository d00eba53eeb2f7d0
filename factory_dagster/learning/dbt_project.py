"""The dbt project as Dagster sees it: manifest, and how dbt nodes map to asset keys.

Sources written earlier in the same daily run (events, suppression) map to the
Python assets that write them. The other sources (sends, drafts, …) are written
*later* in the line, so for the learn stage they are what earlier days wrote: they
map to `prior_days/<table>` keys, which keeps the asset graph acyclic.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource

from factory_dagster.settings import DBT_PROJECT_DIR, Paths

MANIFEST_PATH = DBT_PROJECT_DIR / "target" / "manifest.json"
SAME_RUN_SOURCES = {"events": dg.AssetKey("outcome_events"), "suppression": dg.AssetKey("suppression_list")}
_PROJECT_SUFFIXES = {".sql", ".yml", ".yaml"}


def dbt_resource() -> DbtCliResource:
    """dbt from this interpreter's environment (the venv need not be activated)."""
    beside_python = Path(sys.executable).with_name("dbt")
    executable = str(beside_python) if beside_python.exists() else shutil.which("dbt") or "dbt"
    return DbtCliResource(project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=executable)


def _newest_project_file() -> float:
    return max(
        p.stat().st_mtime
        for p in DBT_PROJECT_DIR.rglob("*")
        if p.suffix in _PROJECT_SUFFIXES and "target" not in p.relative_to(DBT_PROJECT_DIR).parts
    )


def ensure_manifest() -> Path:
    """Parse the dbt project when the manifest is missing or older than a project file (a few seconds, once)."""
    if MANIFEST_PATH.exists() and MANIFEST_PATH.stat().st_mtime >= _newest_project_file():
        return MANIFEST_PATH
    os.environ.setdefault("FACTORY_WAREHOUSE", str(Paths.from_env().warehouse))
    dbt_resource().cli(["parse", "--quiet"], target_path=MANIFEST_PATH.parent).wait()
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
