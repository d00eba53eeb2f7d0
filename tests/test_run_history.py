"""The local Dagster instance's SQLite files skip fsync (other SQLite files keep SQLite's default) and are opened once
per process, in the files and schema Dagster's default storage reads."""

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from factory_dagster.controls.run_history import KEEP_FSYNC_ENV, PooledSqliteStorage, for_local_instance, write_without_fsync
from factory_dagster.demo import prepare_dagster_home
from factory_dagster.settings import Paths

FULL, OFF = 2, 0


def _synchronous(path: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("PRAGMA synchronous")).scalar_one()
    finally:
        engine.dispose()


def test_only_files_under_the_registered_home_skip_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEEP_FSYNC_ENV, raising=False)
    home, elsewhere = tmp_path / "dagster_home", tmp_path / "other"
    (home / "history" / "runs").mkdir(parents=True)
    elsewhere.mkdir()
    assert write_without_fsync(home)
    assert _synchronous(home / "history" / "runs" / "run.db") == OFF
    assert _synchronous(elsewhere / "run.db") == FULL
    # A sibling whose name merely starts like the home is not under it.
    sibling = tmp_path / "dagster_home2"
    sibling.mkdir()
    assert _synchronous(sibling / "run.db") == FULL


def test_the_environment_keeps_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEEP_FSYNC_ENV, "1")
    home = tmp_path / "kept"
    home.mkdir()
    assert not write_without_fsync(home)
    assert _synchronous(home / "run.db") == FULL


def test_definitions_apply_it_only_to_the_data_folders_own_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEEP_FSYNC_ENV, raising=False)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(theirs))
    assert not for_local_instance(ours)
    assert _synchronous(ours / "run.db") == FULL
    monkeypatch.setenv("DAGSTER_HOME", str(ours))
    assert for_local_instance(ours)
    assert _synchronous(ours / "run.db") == OFF


def _one_asset_job() -> dg.JobDefinition:
    @dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="numbers")])
    def numbers() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"rows": 3}, check_results=[dg.AssetCheckResult(check_name="positive", passed=True)])

    job = dg.define_asset_job("numbers_job", executor_def=dg.in_process_executor)
    return dg.Definitions(assets=[numbers], jobs=[job]).resolve_job_def("numbers_job")


def test_the_pooled_storage_writes_the_files_dagsters_default_storage_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the demo records, the UI (any Dagster process on the folder) sees: same files, same schema, both ways."""
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    paths = Paths(tmp_path, tmp_path / "warehouse.duckdb", tmp_path / "inbox", tmp_path / "spec.yaml")
    job = _one_asset_job()
    with prepare_dagster_home(paths) as pooled:
        assert isinstance(pooled.get_ref().storage, PooledSqliteStorage)
        first = job.execute_in_process(instance=pooled)
        assert first.success
    default_yaml = tmp_path / "default"
    default_yaml.mkdir()
    (default_yaml / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {home}\n")
    with dg.DagsterInstance.from_config(str(default_yaml)) as stock:
        assert not isinstance(stock.get_ref().storage, PooledSqliteStorage)
        assert [r.run_id for r in stock.get_runs()] == [first.run_id]
        assert stock.get_run_by_id(first.run_id).is_success
        record = stock.get_latest_materialization_event(dg.AssetKey("numbers"))
        assert record is not None and record.run_id == first.run_id
        assert stock.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(dg.AssetKey("numbers"), "positive"))
        second = job.execute_in_process(instance=stock)
    with dg.DagsterInstance.from_config(str(home)) as pooled_again:
        assert {r.run_id for r in pooled_again.get_runs()} == {first.run_id, second.run_id}
        events = pooled_again.all_logs(second.run_id)
        assert any(e.dagster_event and e.dagster_event.is_step_success for e in events)
    # Closing the instance closed its connections: SQLite folded the write-ahead logs back into the files.
    assert not list(home.rglob("*.db-wal"))


def test_the_demo_keeps_dagster_yaml_current_but_not_a_persons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "dagster_home"
    paths = Paths(tmp_path, tmp_path / "warehouse.duckdb", tmp_path / "inbox", tmp_path / "spec.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    home.mkdir()
    config = home / "dagster.yaml"
    config.write_text(
        "# Written by Factory. Every DuckDB-touching step runs in the `duckdb` pool\ntelemetry:\n  enabled: false\n"
    )
    prepare_dagster_home(paths).dispose()
    assert "PooledSqliteStorage" in config.read_text() and str(home.resolve()) in config.read_text()
    config.write_text(config.read_text().replace(str(home.resolve()), "/where/it/was/before"))  # the data folder moved
    prepare_dagster_home(paths).dispose()
    assert "/where/it/was/before" not in config.read_text()
    own = "telemetry:\n  enabled: false\n"
    config.write_text(own)
    prepare_dagster_home(paths).dispose()
    assert config.read_text() == own


def test_a_table_is_looked_up_in_the_file_until_it_is_there_then_remembered(tmp_path: Path) -> None:
    """Dagster asks before every asset check event whether the index has a table; the answer is the file's."""
    storage = PooledSqliteStorage.from_local(str(tmp_path)).event_log_storage
    index = storage.path_for_shard("index")
    assert storage.has_table("asset_check_executions")
    assert not storage.has_table("added_later")
    engine = sa.create_engine(f"sqlite:///{index}")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE added_later (id INTEGER)"))
        assert storage.has_table("added_later")  # asked again: not there before
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE asset_check_executions"))
    finally:
        engine.dispose()
    assert storage.has_table("asset_check_executions")  # remembered: a table, once there, is not asked for again
    storage.wipe()
    storage.dispose()
