"""The documented production instance (deploy/dagster.production.yaml) is one the pinned Dagster accepts.

These checks need no server; tests/test_dagster_postgres_instance.py runs the file against a real PostgreSQL and daemon.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.ref import InstanceRef
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import pg_url_from_config
from sqlalchemy.engine import make_url

from factory_dagster.settings import PROJECT_ROOT

PRODUCTION = PROJECT_ROOT / "deploy" / "dagster.production.yaml"


def test_the_production_instance_config_loads_with_its_queue_limits_and_run_monitoring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = yaml.safe_load(PRODUCTION.read_text(encoding="utf-8"))
    assert set(config["storage"]) == {"postgres"}  # the shared instance: PostgreSQL, not the demo's SQLite files
    # Everything but the storage, without a server: SQLite in its place.
    config["storage"] = {"sqlite": {"base_dir": str(tmp_path / "storage")}}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    instance = dg.DagsterInstance.get()
    try:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs >= 2
        assert instance.get_concurrency_config().pool_config.default_pool_limit is None  # pools set one by one
    finally:
        instance.dispose()


def test_the_production_storage_reaches_postgresql_through_psycopg2_with_its_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = {
        "DAGSTER_PG_HOST": "db.internal",
        "DAGSTER_PG_PORT": "5433",
        "DAGSTER_PG_DB": "dagster",
        "DAGSTER_PG_USER": "dagster",
        "DAGSTER_PG_PASSWORD": "from-the-secret-store",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "dagster.yaml").write_text(PRODUCTION.read_text(encoding="utf-8"), encoding="utf-8")
    storage = InstanceRef.from_dir(str(tmp_path)).storage_data
    assert (storage.module_name, storage.class_name) == ("dagster_postgres", "DagsterPostgresStorage")
    config = process_config(resolve_to_config_type(DagsterPostgresStorage.config_type()), storage.config_dict)
    assert config.success, config.errors
    url = make_url(pg_url_from_config(config.value))
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, on which Dagster's event NOTIFY fails.
    assert url.get_dialect().driver == "psycopg2"
    assert (url.host, url.port, url.database, url.username, url.password) == (
        "db.internal",
        5433,
        "dagster",
        "dagster",
        "from-the-secret-store",
    )
    assert "from-the-secret-store" not in storage.config_yaml  # the file names the variable, never the secret
