"""dbt in-process: builds against real DuckDB files, releases the file lock, and the split
between the daily tests and the weekly `integrity` ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from factory_dagster.definitions import build_definitions
from factory_dagster.learning.assets import dbt_marts
from factory_dagster.learning.dbt_project import INTEGRITY_TAG
from factory_dagster.learning.dbt_runner import invoke
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import connect

OPEN_FOR_WRITE = "import duckdb, sys; duckdb.connect(sys.argv[1]).execute('CREATE TABLE IF NOT EXISTS raw.probe (x INT)')"


def _empty_warehouse(tmp_path: Path) -> Paths:
    paths = Paths.under(tmp_path / "factory")
    with connect(paths.warehouse):
        pass
    return paths


def test_build_in_process_then_another_process_can_write(tmp_path: Path, dbt_manifest: Path) -> None:
    paths = _empty_warehouse(tmp_path)
    run = invoke(["build", "--exclude", f"tag:{INTEGRITY_TAG}"], paths.warehouse, paths.home / "dbt_target")
    assert run.success, run.describe_failure()
    statuses = {event["data"]["node_info"]["unique_id"]: event["data"]["node_info"]["node_status"] for event in run.results}
    assert statuses["model.factory.daily_kpis"] == "success"
    assert not any(INTEGRITY_TAG in uid for uid in statuses)
    # dbt-duckdb keeps its handle open between invocations unless the runner closes it.
    probe = subprocess.run([sys.executable, "-c", OPEN_FOR_WRITE, str(paths.warehouse)], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    with connect(paths.warehouse, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM marts.daily_kpis").fetchone() == (0,)


def test_a_failing_test_is_reported_by_name(tmp_path: Path, dbt_manifest: Path) -> None:
    paths = _empty_warehouse(tmp_path)
    with connect(paths.warehouse) as con:
        con.execute(
            """INSERT INTO raw.events (event_id, send_id, event_type, occurred_at, partition_day, run_id, campaign_id,
                                       source_file, source_row, imported_at)
               VALUES ('e1', 's1', 'exploded', now(), DATE '2026-01-01', 'r', 'c', 'f.csv', 1, now())"""
        )
    run = invoke(["build", "--exclude", f"tag:{INTEGRITY_TAG}"], paths.warehouse, paths.home / "dbt_target")
    assert not run.success
    assert any("accepted_values_raw_events_event_type" in failure for failure in run.failures), run.failures


def test_integrity_tests_only_repeat_constraints_raw_enforces(tmp_path: Path, dbt_manifest: Path) -> None:
    """A test may leave the daily build only if raw's DDL already guarantees what it checks."""
    manifest = json.loads(dbt_manifest.read_text())
    paths = _empty_warehouse(tmp_path)
    with connect(paths.warehouse, read_only=True) as con:
        rows = con.execute(
            "SELECT table_name, constraint_type, constraint_column_names FROM duckdb_constraints() WHERE schema_name = 'raw'"
        ).fetchall()
    enforced = {(table, kind, tuple(columns)) for table, kind, columns in rows}
    tagged = [node for node in manifest["nodes"].values() if node["resource_type"] == "test" and INTEGRITY_TAG in node["tags"]]
    assert len(tagged) >= 30
    for test in tagged:
        (parent,) = test["depends_on"]["nodes"]
        parent_node = manifest["sources"].get(parent) or manifest["nodes"][parent]
        if parent_node["resource_type"] == "model":  # a staging view: passes raw's table through
            (source,) = parent_node["depends_on"]["nodes"]
            parent_node = manifest["sources"][source]
        table = parent_node["name"]
        kind = test["test_metadata"]["name"]
        kwargs = test["test_metadata"]["kwargs"]
        if kind == "not_null_columns":  # each column on its own must be NOT NULL (or the key) in raw
            checks = [("not_null", (column,)) for column in kwargs["columns"]]
        else:
            checks = [(kind, tuple(kwargs.get("combination") or [kwargs["column_name"]]))]
        wanted = {"not_null": ["NOT NULL"], "unique": ["PRIMARY KEY", "UNIQUE"], "unique_combination_of_columns": ["PRIMARY KEY"]}
        for rule, columns in checks:
            assert any(
                (table, constraint, columns) in enforced or (rule == "not_null" and (table, "PRIMARY KEY", columns) in enforced)
                for constraint in wanted[rule]
            ), f"{test['name']} is tagged {INTEGRITY_TAG} but raw.{table} does not enforce {rule} on {columns}"


def test_the_daily_build_checks_exclude_integrity_tests(dbt_manifest: Path) -> None:
    manifest = json.loads(dbt_manifest.read_text())
    integrity = {n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "test" and INTEGRITY_TAG in n["tags"]}
    daily = {spec.name for spec in dbt_marts.check_specs}
    assert daily and not daily & integrity
    # Nulls in the marts the line decides from are still checked every day, in one query per model.
    for model in ("int_send_outcomes", "anomalies"):
        assert any(name.startswith(f"not_null_columns_{model}") for name in daily), model


@pytest.fixture
def integrity_job(tmp_path: Path, dbt_manifest: Path) -> tuple[Paths, dg.JobDefinition]:
    paths = _empty_warehouse(tmp_path)
    return paths, build_definitions(paths).resolve_job_def("warehouse_integrity")


def test_integrity_job_passes_on_a_warehouse_built_from_the_contracts(integrity_job) -> None:
    _, job = integrity_job
    assert job.execute_in_process(instance=dg.DagsterInstance.ephemeral()).success


def test_integrity_job_fails_and_raises_an_incident_when_a_constraint_is_gone(integrity_job) -> None:
    """A warehouse restored without raw's keys: the weekly job finds the duplicate the DDL would have refused."""
    paths, job = integrity_job
    with connect(paths.warehouse) as con:
        con.execute("CREATE TABLE raw.leads_copy AS SELECT * FROM raw.leads")
        con.execute("DROP TABLE raw.leads")
        con.execute("ALTER TABLE raw.leads_copy RENAME TO leads")
        for row in (1, 2):
            con.execute(
                """INSERT INTO raw.leads (lead_id, partition_day, run_id, campaign_id, source_file, source_row, email,
                                          first_name, company, industry, company_size, role, seniority, region, segment,
                                          imported_at)
                   VALUES ('lead_dup', DATE '2026-01-01', 'r', 'c', 'f.csv', ?, 'a@b.co', 'A', 'B', 'saas', 10, 'cfo',
                           'c_level', 'emea', 'midmarket', now())""",
                [row],
            )
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    with connect(paths.warehouse, read_only=True) as con:
        (detail,) = con.execute("SELECT detail FROM raw.incidents WHERE kind = 'warehouse_integrity_failed'").fetchone()
    assert "source_unique_raw_leads_lead_id" in detail


def test_model_level_column_tests_name_the_bad_columns(tmp_path: Path, dbt_manifest: Path) -> None:
    """One query per model still says which column broke its rule and on how many rows."""
    paths = _empty_warehouse(tmp_path)
    target = paths.home / "dbt_target"
    assert invoke(["build", "--select", "+daily_kpis", "--indirect-selection", "empty"], paths.warehouse, target).success
    with connect(paths.warehouse) as con:
        con.execute(
            "INSERT INTO marts.daily_kpis (campaign_id, day, reply_rate, gate_pass_rate) VALUES (NULL, DATE '2026-01-01', 1.5, 0.5)"
        )
    run = invoke(["test", "--select", "daily_kpis", "--exclude", f"tag:{INTEGRITY_TAG}"], paths.warehouse, target)
    failed = {failure.split(" (")[0]: failure for failure in run.failures}
    assert any(name.startswith("proportion_columns_daily_kpis") for name in failed), failed
    assert any(name.startswith("not_null_columns_daily_kpis") for name in failed), failed
    # not_null_columns returns a row per column with nulls: campaign_id and every count left empty.
    (not_null,) = [f for name, f in failed.items() if name.startswith("not_null_columns_daily_kpis")]
    assert "failing rows" in not_null and ", 1 failing rows" not in not_null


def test_a_model_error_is_reported_in_dbts_words(tmp_path: Path, dbt_manifest: Path) -> None:
    paths = _empty_warehouse(tmp_path)
    run = invoke(["build", "--select", "daily_kpis", "--indirect-selection", "empty"], paths.warehouse, paths.home / "dbt_target")
    assert not run.success
    assert "does not exist" in run.describe_failure()  # its staging views were never built
