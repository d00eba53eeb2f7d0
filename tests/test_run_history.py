"""The local Dagster instance's SQLite files skip fsync; other SQLite files keep SQLite's default."""

from pathlib import Path

import pytest
import sqlalchemy as sa

from factory_dagster.controls.run_history import KEEP_FSYNC_ENV, for_local_instance, write_without_fsync

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
