"""The documented production instance (deploy/dagster.production.yaml) is one the pinned Dagster accepts."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from factory_dagster.settings import PROJECT_ROOT

PRODUCTION = PROJECT_ROOT / "deploy" / "dagster.production.yaml"


def test_the_production_instance_config_loads_with_its_queue_limits_and_run_monitoring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = yaml.safe_load(PRODUCTION.read_text(encoding="utf-8"))
    assert set(config["storage"]) == {"postgres"}  # the shared instance: PostgreSQL, not the demo's SQLite files
    # dagster-postgres is not a dependency of the demo: check everything else against the pinned Dagster.
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
