"""dbt in-process: builds against real DuckDB files, releases the file lock, and the split
between the daily tests and the weekly `integrity` ones."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from factory_dagster.definitions import build_definitions
from factory_dagster.learning import dbt_runner, manifest
from factory_dagster.learning.assets import dbt_marts
from factory_dagster.learning.dbt_project import INTEGRITY_TAG
from factory_dagster.learning.dbt_runner import duckdb_target, invoke, postgres_target
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
    # The project's table materialization, not dbt-duckdb's (tests/test_duckdb_table_materialization.py).
    ran = paths.home / "dbt_target" / "run" / "factory" / "models" / "marts" / "daily_kpis.sql"
    assert 'create or replace table "warehouse"."marts"."daily_kpis"' in ran.read_text()
    # dbt-duckdb keeps its handle open between invocations unless the runner closes it.
    probe = subprocess.run([sys.executable, "-c", OPEN_FOR_WRITE, str(paths.warehouse)], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    with connect(paths.warehouse, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM marts.daily_kpis").fetchone() == (0,)


def test_processes_starting_together_parse_the_project_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever finds the manifest missing parses under the lock; the others wait, then find it current."""
    target = tmp_path / "target"
    parses = []

    def slow_parse(warehouse: Path) -> Path:
        parses.append(warehouse)
        time.sleep(0.3)  # the others arrive meanwhile
        (target / "manifest.json").write_text("{}")
        return target / "manifest.json"

    monkeypatch.setattr(manifest, "PARSE_TARGET", target)
    monkeypatch.setattr(manifest, "MANIFEST_PATH", target / "manifest.json")
    monkeypatch.setattr(manifest, "newest_project_file", lambda: 0.0)
    monkeypatch.setattr(dbt_runner, "write_manifest", slow_parse)
    start = threading.Barrier(4)

    def starting_process() -> Path:  # each opens the lock file itself, as another process would
        start.wait()
        return manifest.ensure_manifest()

    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda _: starting_process(), range(4)))
    assert found == [target / "manifest.json"] * 4
    assert len(parses) == 1


def test_a_stale_manifest_is_parsed_in_a_process_of_its_own_and_a_current_one_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dbt_manifest: Path
) -> None:
    """`parse_in_background` looks at the manifest here; the process it starts runs `ensure_manifest` on the real
    project, whose manifest the session has already parsed: it finds it current and ends at once, without an error."""
    monkeypatch.setattr(manifest, "MANIFEST_PATH", tmp_path / "manifest.json")  # missing here: stale
    started = manifest.parse_in_background()
    assert started is not None
    assert started.wait(timeout=60) == 0
    monkeypatch.setattr(manifest, "MANIFEST_PATH", dbt_manifest)
    assert manifest.parse_in_background() is None


def test_the_background_parse_and_its_starter_load_neither_dagster_nor_dbt() -> None:
    """The point of the background parse is to run beside the caller's own imports: its module must be light."""
    probe = "import sys, factory_dagster.learning.manifest; print(sorted({'dagster', 'dbt'} & sys.modules.keys()))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stderr


def test_a_new_data_folder_parses_from_the_shared_parse_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dbt keeps its parse state per target and database name, not per warehouse path: a process parsing for another
    data folder reads the state instead of every project file again."""
    monkeypatch.setattr(dbt_runner, "_MANIFESTS", {})  # as a new process: nothing parsed in memory

    def files_parsed(target: Path) -> int:
        return json.loads((target / "perf_info.json").read_text())["parsed_path_count"]

    dbt_runner.parse(tmp_path / "one" / "warehouse.duckdb", tmp_path / "one_target")
    dbt_runner._MANIFESTS.clear()
    parsed = dbt_runner.parse(tmp_path / "two" / "warehouse.duckdb", tmp_path / "two_target")
    assert files_parsed(tmp_path / "two_target") == 0
    assert {node.database for node in parsed.nodes.values() if node.resource_type == "model"} == {"warehouse"}


def test_a_parse_reads_neither_the_address_nor_the_password_and_on_postgresql_not_the_database(tmp_path: Path) -> None:
    sales, other = postgres_target("postgresql://ann:s3cret@db.example:6543/sales"), postgres_target("postgresql:///other")
    environ = sales.parse_environ
    assert environ["DBT_ENV_SECRET_FACTORY_PG_PASSWORD"] == ""
    assert not {"s3cret", "db.example", "6543", "ann", "sales"} & set(environ.values())
    assert environ == other.parse_environ and sales.parse_state_name == other.parse_state_name
    one, two = duckdb_target(tmp_path / "one" / "sales.duckdb"), duckdb_target(tmp_path / "two" / "sales.duckdb")
    assert one.parse_environ == two.parse_environ and one.parse_state_name == "local-sales.msgpack"


def test_a_new_postgresql_database_parses_from_the_shared_state_and_its_nodes_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every PostgreSQL database parses from one shared state (a parse needs no server); the parsed nodes then carry
    the build's own database, in their relation names too, which dbt-postgres puts in every `ref` and `source`."""
    monkeypatch.setattr(dbt_runner, "_MANIFESTS", {})

    def files_parsed(target: Path) -> int:
        return json.loads((target / "perf_info.json").read_text())["parsed_path_count"]

    dbt_runner.parse(tmp_path / "unused.duckdb", tmp_path / "sales_target", "postgresql://ann@127.0.0.1:1/sales")
    parsed = dbt_runner.parse(tmp_path / "unused.duckdb", tmp_path / "other_target", "postgresql://ann@127.0.0.1:1/other")
    assert files_parsed(tmp_path / "other_target") == 0
    model = parsed.nodes["model.factory.daily_kpis"]
    assert (model.database, model.relation_name) == ("other", '"other"."marts"."daily_kpis"')
    source = next(s for s in parsed.sources.values() if s.name == "sends")
    assert (source.database, source.relation_name) == ("other", '"other"."raw"."sends"')
    graph = parsed.flat_graph["nodes"]["model.factory.daily_kpis"]
    assert graph["database"] == "other" and graph["relation_name"] == '"other"."marts"."daily_kpis"'
    sales = dbt_runner._MANIFESTS[("postgres", "sales", dbt_runner.newest_project_file())]
    assert sales.nodes["model.factory.daily_kpis"].relation_name == '"sales"."marts"."daily_kpis"'


def test_behaviour_flags_name_the_source_dbt_common_would_without_inspecting_the_stack(
    tmp_path: Path, dbt_manifest: Path
) -> None:
    """Once the runner has run dbt, a flag's source is still the first calling module outside dbt-common's flags."""
    from dbt_common.behavior_flags import BehaviorFlagRendered

    paths = _empty_warehouse(tmp_path)
    assert invoke(["run", "--select", "stg_leads"], paths.warehouse, paths.home / "dbt_target").success
    flag = BehaviorFlagRendered({"name": "a_flag", "default": False, "description": "a flag of the test"}, {})
    # dbt-common's own way: the modules of the stack's frames, as inspect finds them.
    modules = (inspect.getmodule(frame.frame) for frame in inspect.stack())
    expected = next(m.__name__ for m in modules if m is not None and m.__name__ != "dbt_common.behavior_flags")
    assert flag._behavior_change_event.flag_source == expected == __name__  # noqa: SLF001
    assert BehaviorFlagRendered._default_source.__module__ == "factory_dagster.learning.dbt_runner"  # noqa: SLF001


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
    failures = [failure for failure in run.failures if failure.startswith("row_contract_stg_events ")]
    assert failures and "rule=accepted_values, columns=event_type, bad_rows=1, examples=exploded" in failures[0], run.failures


def test_integrity_tests_only_repeat_constraints_raw_enforces(tmp_path: Path, dbt_manifest: Path) -> None:
    """A test may leave the daily build only if raw's DDL already guarantees what it checks."""
    project = json.loads(dbt_manifest.read_text())
    paths = _empty_warehouse(tmp_path)
    with connect(paths.warehouse, read_only=True) as con:
        rows = con.execute(
            "SELECT table_name, constraint_type, constraint_column_names FROM duckdb_constraints() WHERE schema_name = 'raw'"
        ).fetchall()
    enforced = {(table, kind, tuple(columns)) for table, kind, columns in rows}
    tagged = [node for node in project["nodes"].values() if node["resource_type"] == "test" and INTEGRITY_TAG in node["tags"]]
    assert len(tagged) >= 30
    for test in tagged:
        (parent,) = test["depends_on"]["nodes"]
        parent_node = project["sources"].get(parent) or project["nodes"][parent]
        if parent_node["resource_type"] == "model":  # a staging view: passes raw's table through
            (source,) = parent_node["depends_on"]["nodes"]
            parent_node = project["sources"][source]
        table = parent_node["name"]
        kind = test["test_metadata"]["name"]
        kwargs = test["test_metadata"]["kwargs"]
        if kind == "row_contract":  # the key must be raw's primary key, each not_null column NOT NULL (or the key)
            assert not kwargs.get("proportions") and not kwargs.get("accepted_values"), f"{test['name']}: raw enforces no ranges"
            checks = [("key", tuple(kwargs["key"]))] if kwargs.get("key") else []
            checks += [("not_null", (column,)) for column in kwargs.get("not_null", [])]
        else:
            checks = [(kind, (kwargs["column_name"],))]
        wanted = {"not_null": ["NOT NULL"], "unique": ["PRIMARY KEY", "UNIQUE"], "key": ["PRIMARY KEY"]}
        for rule, columns in checks:
            assert any(
                (table, constraint, columns) in enforced or (rule == "not_null" and (table, "PRIMARY KEY", columns) in enforced)
                for constraint in wanted[rule]
            ), f"{test['name']} is tagged {INTEGRITY_TAG} but raw.{table} does not enforce {rule} on {columns}"


def test_the_daily_build_checks_exclude_integrity_tests(dbt_manifest: Path) -> None:
    project = json.loads(dbt_manifest.read_text())
    integrity = {n["name"] for n in project["nodes"].values() if n["resource_type"] == "test" and INTEGRITY_TAG in n["tags"]}
    daily = {spec.name for spec in dbt_marts.check_specs}
    assert daily and not daily & integrity
    # The row rules of every mart (and of int_experiment_arms) are still checked every day, in one test per model.
    # experiment_results' rows are int_experiment_arms' rows with counts grouped per arm: checked there; int_send_outcomes'
    # are stg_sends' with their arms and events, and what can break them is checked on its inputs.
    assert "assert_each_send_has_its_arms_one_definition" in daily
    contracts = [
        node
        for node in project["nodes"].values()
        if node["resource_type"] == "test"
        and node.get("test_metadata", {}).get("name") == "row_contract"
        and node["name"] in daily
    ]
    contracted = [project["nodes"][test["attached_node"]] for test in contracts]
    names = [model["name"] for model in contracted]
    assert len(names) == len(set(names)), names
    marts = {n["name"] for n in project["nodes"].values() if n["resource_type"] == "model" and n["schema"] == "marts"}
    wanted = marts - {"experiment_results"} | {"int_experiment_arms"}
    assert wanted <= set(names), sorted(wanted - set(names))
    for test, model in zip(contracts, contracted, strict=True):
        if model["schema"] != "staging":  # a staging view's key is raw's: the weekly tests check it
            assert test["test_metadata"]["kwargs"]["key"], f"{model['name']} has no key"
    (test,) = [t for t in contracts if t["attached_node"] == "model.factory.anomalies"]
    assert "campaign_id" in test["test_metadata"]["kwargs"]["not_null"]


def test_every_daily_test_is_an_asset_check_on_the_model_it_guards(dbt_manifest: Path) -> None:
    """Singular tests reading several tables name their mart in `meta.dagster.ref`: checks, not bare observations."""
    manifest = json.loads(dbt_manifest.read_text())
    daily = {
        node["name"]
        for node in manifest["nodes"].values()
        if node["resource_type"] == "test" and INTEGRITY_TAG not in node["tags"]
    }
    checks = {spec.name: spec.asset_key for spec in dbt_marts.check_specs}
    assert set(checks) == daily
    assert checks["assert_daily_kpis_match_raw"] == dg.AssetKey(["marts", "daily_kpis"])
    assert checks["assert_segment_arm_performance_sends_match_raw"] == dg.AssetKey(["marts", "segment_arm_performance"])
    assert checks["assert_events_belong_to_a_send_of_their_campaign"] == dg.AssetKey(["staging", "stg_events"])
    assert checks["assert_each_send_has_its_arms_one_definition"] == dg.AssetKey(["staging", "stg_sends"])


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
    assert "row_contract_raw_leads" in detail


def _kpi_row(campaign_id: str | None, **values: object) -> dict[str, object]:
    """A daily_kpis row with every count 0 and both rates 0.5, except `values`."""
    counts = "leads_in leads_accepted leads_quarantined drafts drafts_passed messages messages_quarantined sends replies"
    counts += " positive_replies booked bounces unsubscribes complaints llm_calls tokens_in tokens_out cost_usd"
    row = {"campaign_id": campaign_id, "day": date(2026, 1, 1), "gate_pass_rate": 0.5, "reply_rate": 0.5}
    return {**row, **dict.fromkeys(counts.split(), 0), **values}


def test_a_failing_row_contract_names_each_broken_rule(tmp_path: Path, dbt_manifest: Path) -> None:
    """One test per model, and its failure still says which rule broke, on which columns, how often, with examples."""
    paths = _empty_warehouse(tmp_path)
    target = paths.home / "dbt_target"
    assert invoke(["build", "--select", "+daily_kpis", "--indirect-selection", "empty"], paths.warehouse, target).success
    rows = [_kpi_row("c1"), _kpi_row("c1", reply_rate=1.5), _kpi_row("c2", tokens_in=None, sends=4)]
    with connect(paths.warehouse) as con:
        for row in rows:
            con.execute(
                f"INSERT INTO marts.daily_kpis ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})", list(row.values())
            )
    run = invoke(["test", "--select", "daily_kpis", "--exclude", f"tag:{INTEGRITY_TAG}"], paths.warehouse, target)
    assert not run.success
    failed = {failure.split(" (")[0]: failure for failure in run.failures}
    assert set(failed) == {"row_contract_daily_kpis", "assert_daily_kpis_match_raw"}, failed
    contract = failed["row_contract_daily_kpis"]
    assert "(fail, 3 failing rows)" in contract, contract
    assert "rule=duplicate_key, columns=campaign_id, day, bad_rows=2, examples=(campaign_id=c1, day=2026-01-01)" in contract
    assert "rule=not_null, columns=tokens_in, bad_rows=1" in contract
    assert "rule=proportion, columns=reply_rate, bad_rows=1, examples=1.5" in contract
    assert "columns=campaign_id," not in contract.replace("columns=campaign_id, day", "")  # only the broken columns
    # The merged reconciliation says which total disagrees.
    assert failed["assert_daily_kpis_match_raw"].endswith("measure=sends, mart_total=4.0, raw_total=0.0"), failed
    assert "rule=duplicate_key" in run.describe_failure()


def test_row_contract_checks_accepted_values_and_names_the_strays(tmp_path: Path, dbt_manifest: Path) -> None:
    paths = _empty_warehouse(tmp_path)
    with connect(paths.warehouse) as con:
        con.execute(
            """INSERT INTO raw.audits (audit_id, partition_day, run_id, campaign_id, message_id, lead_id, model, prompt_version,
                                       status, scores, passed, reasons, created_at)
               VALUES ('a1', DATE '2026-01-01', 'r', 'c', 'm', 'l', 'judge', 'v1', 'ok',
                       MAP {'tone': 7, 'clarity': 4, 'fit': 0}, false, 'x', now())"""
        )
    run = invoke(
        ["build", "--select", "stg_audits", "--exclude", f"tag:{INTEGRITY_TAG}"], paths.warehouse, paths.home / "dbt_target"
    )
    assert not run.success
    (failure,) = run.failures
    assert (
        failure
        == "row_contract_stg_audits (fail, 1 failing rows): rule=accepted_values, columns=score, bad_rows=2, examples=0, 7"
    )


def test_a_send_whose_arm_is_defined_twice_or_not_at_all_fails_the_build_by_name(tmp_path: Path, dbt_manifest: Path) -> None:
    """int_send_outcomes gives each send its arm's prompt version and model from the assignments: an arm defined twice
    would duplicate its sends there, one without assignments would leave them without. Both fail the daily build."""
    paths = _empty_warehouse(tmp_path)
    with connect(paths.warehouse) as con:
        for lead, prompt in (("l1", "v1"), ("l2", "v2")):
            con.execute(
                """INSERT INTO raw.assignments (partition_day, run_id, campaign_id, spec_version, lead_id, segment, arm_id,
                                                angle, prompt_version, model, propensity, policy_version, reason, assigned_at)
                   VALUES (DATE '2026-01-01', 'r', 'c', '1', ?, 'seg', 'arm-a', 'angle', ?, 'm', 1.0, 'p', 'x', now())""",
                [lead, prompt],
            )
        for send, arm in (("s1", "arm-a"), ("s2", "arm-b")):
            con.execute(
                """INSERT INTO raw.sends (send_id, message_id, partition_day, message_day, run_id, campaign_id, spec_version,
                                          lead_id, to_email, segment, arm_id, angle, prompt_version, model, subject,
                                          body_sha256, transport, transport_ref, sent_at)
                   VALUES (?, ?, DATE '2026-01-01', DATE '2026-01-01', 'r', 'c', '1', 'l1', 'a@example.com', 'seg', ?,
                           'angle', 'v1', 'm', 'hi', 'h', 'file', 't', now())""",
                [send, f"m-{send}", arm],
            )
    target = paths.home / "dbt_target"
    run = invoke(["build", "--select", "+int_send_outcomes", "--exclude", f"tag:{INTEGRITY_TAG}"], paths.warehouse, target)
    assert not run.success
    (failure,) = [f for f in run.failures if f.startswith("assert_each_send_has_its_arms_one_definition ")]
    assert "(fail, 2 failing rows)" in failure, failure
    assert "send_id=s1, campaign_id=c, arm_id=arm-a, prompt_versions=2, models=1" in failure, failure
    assert "send_id=s2, campaign_id=c, arm_id=arm-b, prompt_versions=0, models=0" in failure, failure


def test_the_experiment_arms_contract_names_an_arm_listed_twice_and_a_broken_look(tmp_path: Path, dbt_manifest: Path) -> None:
    """marts.experiment_results shows int_experiment_arms' rows: an experiment listing its control again as a challenger
    and a look out of range fail the daily build there, by rule."""
    paths = _empty_warehouse(tmp_path)
    with connect(paths.warehouse) as con:
        con.execute(
            """INSERT INTO raw.experiments (experiment_id, campaign_id, run_id, partition_day, design_key, kind, state,
                   hypothesis, control, challengers, target_segments, primary_metric, guardrails_json, max_traffic_share,
                   base_rate, mde, alpha, power, planned_sample_size, stopping_rule_json, motivating_figures_json,
                   proposed_by, proposed_at, updated_at)
               VALUES ('exp1', 'c', 'r', DATE '2026-01-01', 'k', 'prompt_version', 'running', 'h', 'v1', ['v2', 'v1'],
                   ['seg'], 'positive_reply', '{}', 0.2, 0.03, 0.5, 0.05, 0.8, 100, '{}', '{}', 'p', now(), now())"""
        )
        con.execute(
            """INSERT INTO raw.experiment_looks (experiment_id, campaign_id, partition_day, run_id, arm, role, assigned,
                   mature_sends, primary_events, posterior_mean, interval_low, interval_high, p_better, guardrails_json,
                   days_running, decision, reasons, rule_version, looked_at)
               VALUES ('exp1', 'c', DATE '2026-01-02', 'r', 'v2', 'challenger', 10, 5, 1, 0.1, 0.05, 0.2, 1.5, '{}', 1,
                   'maybe', 'x', '1', now())"""
        )
    run = invoke(
        ["build", "--select", "+experiment_results", "--exclude", f"tag:{INTEGRITY_TAG}"],
        paths.warehouse,
        paths.home / "dbt_target",
    )
    assert not run.success
    (failure,) = [f for f in run.failures if f.startswith("row_contract_int_experiment_arms ")]
    assert "rule=duplicate_key, columns=experiment_id, arm, bad_rows=2, examples=(experiment_id=exp1, arm=v1)" in failure, failure
    assert "rule=proportion, columns=p_better, bad_rows=1, examples=1.5" in failure, failure
    assert "rule=accepted_values, columns=decision, bad_rows=1, examples=maybe" in failure, failure


def test_a_model_error_is_reported_in_dbts_words(tmp_path: Path, dbt_manifest: Path) -> None:
    paths = _empty_warehouse(tmp_path)
    run = invoke(["build", "--select", "daily_kpis", "--indirect-selection", "empty"], paths.warehouse, paths.home / "dbt_target")
    assert not run.success
    assert "does not exist" in run.describe_failure()  # its staging views were never built
