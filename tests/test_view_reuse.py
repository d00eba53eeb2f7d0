"""The daily dbt build leaves the views in place only while they are the ones the current project built, and still
runs every test, the views' own included.

One warehouse serves the module: its first build is made once, and each test starts from a state in which the
views are reusable (every test's own builds leave it so; the one that breaks the record works on a copy)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from factory_dagster.campaign.runs import register_campaigns
from factory_dagster.definitions import build_definitions
from factory_dagster.learning import view_reuse
from factory_dagster.learning.dbt_project import INTEGRITY_TAG
from factory_dagster.learning.dbt_runner import invoke
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import connect

DAY = "brightwave_close|2026-01-05"  # the default campaign's day


@dataclass(frozen=True)
class Built:
    """The module's warehouse after its first daily build, and what that build recorded."""

    paths: Paths
    job: dg.JobDefinition
    manifest: dict
    first_status: dict[str, str]
    first_checks: set[str]


def _build(job: dg.JobDefinition) -> tuple[dict[str, str], set[str]]:
    """One learn stage: each dbt model's materialization status, and the checks (dbt tests) evaluated."""
    instance = dg.DagsterInstance.ephemeral()
    register_campaigns(instance, [DAY.split("|")[0]])
    result = job.execute_in_process(partition_key=DAY, instance=instance)
    assert result.success
    statuses = {
        m.asset_key.to_user_string(): m.metadata["status"].value
        for m in result.asset_materializations_for_node("dbt_marts")
        if "status" in m.metadata
    }
    checks = {
        e.asset_check_evaluation_data.check_name for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    return statuses, checks


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, dbt_manifest: Path) -> Built:
    paths = Paths.under(tmp_path_factory.mktemp("view-reuse") / "factory")
    with connect(paths.warehouse):
        pass
    job = build_definitions(paths).resolve_job_def("refresh_marts")
    return Built(paths, job, json.loads(dbt_manifest.read_text()), *_build(job))


def _views(manifest: dict) -> set[str]:
    return {f"{schema}/{name}" for schema, name in view_reuse.view_nodes(manifest).values()}


def test_the_first_build_builds_the_views_and_the_second_reuses_them_and_runs_every_test(built: Built) -> None:
    views = _views(built.manifest)
    assert views and views <= built.first_status.keys()
    assert {built.first_status[v] for v in views} == {"success"}
    assert (built.paths.home / "dbt_target" / view_reuse.MARKER_NAME).exists()

    second_status, second_checks = _build(built.job)
    assert second_status.keys() == built.first_status.keys()  # every model is still recorded for the day
    assert {second_status[v] for v in views} == {"reused"}
    assert {s for k, s in second_status.items() if k not in views} == {"success"}  # the tables are rebuilt
    assert second_checks == built.first_checks and len(built.first_checks) >= 20
    view_tests = {c for c in built.first_checks if "stg_" in c or "int_send_outcomes" in c}
    assert view_tests <= second_checks and view_tests


def test_a_view_changed_in_the_warehouse_makes_the_build_rebuild_them_all(built: Built) -> None:
    paths, views = built.paths, view_reuse.view_nodes(built.manifest)
    assert view_reuse.reusable(paths.warehouse, paths.home / "dbt_target", views)
    with connect(paths.warehouse) as con:
        con.execute("CREATE OR REPLACE VIEW staging.stg_sends AS SELECT 1 AS send_id")
    assert not view_reuse.reusable(paths.warehouse, paths.home / "dbt_target", views)
    statuses, _ = _build(built.job)
    assert {statuses[v] for v in _views(built.manifest)} == {"success"}
    with connect(paths.warehouse, read_only=True) as con:
        columns = {row[0] for row in con.execute("DESCRIBE staging.stg_sends").fetchall()}
    assert {"send_id", "message_id", "sent_at"} <= columns


def test_another_project_or_database_is_not_reused(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "factory"  # a copy: renaming the file and forgetting the record would spoil the module's
    shutil.copytree(built.paths.home, home, ignore=shutil.ignore_patterns("*.wal"))
    paths, views = Paths.under(home), view_reuse.view_nodes(built.manifest)
    target = paths.home / "dbt_target"
    assert view_reuse.reusable(paths.warehouse, target, views)
    monkeypatch.setattr(view_reuse, "project_fingerprint", lambda: "a project edited since")
    assert not view_reuse.reusable(paths.warehouse, target, views)
    monkeypatch.undo()
    renamed = paths.warehouse.with_name("other.duckdb")
    paths.warehouse.rename(renamed)
    assert not view_reuse.reusable(renamed, target, views)
    view_reuse.forget(target)
    assert not view_reuse.reusable(paths.warehouse, target, views)


def test_building_without_the_views_runs_every_daily_test_and_every_other_model(built: Built) -> None:
    """dbt drops a test with an excluded parent, so the views are left out by selecting everything else instead: the
    build still runs every test of the daily build (all but the weekly integrity ones)."""
    paths, manifest = built.paths, built.manifest
    without = invoke(
        ["build", *view_reuse.build_args_without_views(manifest, f"tag:{INTEGRITY_TAG}")],
        paths.warehouse,
        paths.home / "dbt_target",
    )
    assert without.success

    def ran(kind: str) -> set[str]:
        return {e["data"]["node_info"]["unique_id"] for e in without.results if e["data"]["node_info"]["resource_type"] == kind}

    def defined(kind: str) -> set[str]:
        return {
            unique_id
            for unique_id, node in manifest["nodes"].items()
            if node["resource_type"] == kind and node["config"].get("enabled", True) and INTEGRITY_TAG not in node["tags"]
        }

    assert ran("test") == defined("test") and any("stg_" in unique_id for unique_id in ran("test"))
    assert ran("model") == defined("model") - view_reuse.view_nodes(manifest).keys()


def test_models_come_after_what_they_select_from(dbt_manifest: Path) -> None:
    manifest = json.loads(dbt_manifest.read_text())
    order = {unique_id: rank for rank, unique_id in enumerate(view_reuse.model_order(manifest))}
    for unique_id, rank in order.items():
        for parent in manifest["nodes"][unique_id]["depends_on"]["nodes"]:
            assert order.get(parent, -1) < rank
