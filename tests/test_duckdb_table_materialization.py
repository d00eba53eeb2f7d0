"""The project's `table` materialization on DuckDB (dbt_project/macros/table_on_duckdb.sql), on a project of one model.

It replaces a table in one statement instead of dbt-duckdb's build-rename-swap: what must still hold is what the swap
gave. The rows are the query's; a query that fails leaves the old table and its rows; no temporary or backup relation
is left behind; a view of the same name becomes the table; what it does not support is refused by name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
import yaml

from factory_dagster.learning.dbt_runner import release_warehouse
from factory_dagster.settings import DBT_PROJECT_DIR

MACRO = DBT_PROJECT_DIR / "macros" / "table_on_duckdb.sql"


def warehouse(project: Path) -> str:
    """The project's DuckDB file (beside the project folder, as its profile says)."""
    return str(project.parent / "check.duckdb")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A dbt project with the materialization and one table model over `src.numbers`, on a DuckDB file."""
    root = tmp_path / "project"
    (root / "macros").mkdir(parents=True)
    (root / "models").mkdir()
    shutil.copy(MACRO, root / "macros")
    (root / "dbt_project.yml").write_text(
        yaml.safe_dump(
            {
                "name": "materialization_check",
                "version": "1.0.0",
                "config-version": 2,
                "profile": "materialization_check",
                "flags": {"send_anonymous_usage_stats": False},
                "models": {"materialization_check": {"+materialized": "table"}},
            }
        )
    )
    (root / "profiles.yml").write_text(
        yaml.safe_dump(
            {
                "materialization_check": {
                    "target": "dev",
                    "outputs": {"dev": {"type": "duckdb", "path": warehouse(root), "threads": 1}},
                }
            }
        )
    )
    (root / "models" / "numbers.sql").write_text("select n, n * n as square from src.numbers\n")
    with duckdb.connect(warehouse(root)) as con:
        con.execute("CREATE SCHEMA src; CREATE TABLE src.numbers AS SELECT * FROM range(1, 4) AS t(n)")
    return root


def dbt_run(project: Path) -> tuple[bool, str]:
    """`dbt run` of the project in this process: its verdict and what it said about the failed nodes."""
    from dbt.cli.main import dbtRunner

    messages: list[str] = []

    def keep_errors(event) -> None:  # noqa: ANN001 - dbt's event message
        if event.info.name == "RunResultError":
            messages.append(event.data.msg)

    target = project / "target"
    outcome = dbtRunner(callbacks=[keep_errors]).invoke(
        [
            "run",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
            "--target-path",
            str(target),
            "--log-path",
            str(target),
        ]
    )
    release_warehouse()  # dbt-duckdb keeps the file open otherwise
    return bool(outcome.success), " ".join(messages)


def relations(project: Path) -> dict[str, str]:
    with duckdb.connect(warehouse(project), read_only=True) as con:
        return dict(
            con.execute("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'main'").fetchall()
        )


def rows(project: Path) -> list[tuple[int, int]]:
    with duckdb.connect(warehouse(project), read_only=True) as con:
        return con.execute("SELECT n, square FROM main.numbers ORDER BY n").fetchall()


def test_a_rebuild_replaces_the_rows_and_a_failed_query_keeps_the_old_table(project: Path) -> None:
    assert dbt_run(project)[0]
    assert rows(project) == [(1, 1), (2, 4), (3, 9)]
    ran = (project / "target" / "run" / "materialization_check" / "models" / "numbers.sql").read_text()
    assert "create or replace table" in ran  # the project's materialization, not dbt-duckdb's
    with duckdb.connect(warehouse(project)) as con:
        con.execute("INSERT INTO src.numbers VALUES (4)")
    assert dbt_run(project)[0]
    assert rows(project) == [(1, 1), (2, 4), (3, 9), (4, 16)]
    with duckdb.connect(warehouse(project)) as con:
        con.execute("DROP TABLE src.numbers")
    ok, errors = dbt_run(project)
    assert not ok and "numbers" in errors
    assert rows(project) == [(1, 1), (2, 4), (3, 9), (4, 16)]  # the last good table, whole
    assert relations(project) == {"numbers": "BASE TABLE"}  # nothing temporary or backed up left beside it


def test_a_view_of_the_same_name_becomes_the_table(project: Path) -> None:
    with duckdb.connect(warehouse(project)) as con:
        con.execute("CREATE VIEW main.numbers AS SELECT 0 AS n, 0 AS square")
    assert dbt_run(project)[0]
    assert relations(project) == {"numbers": "BASE TABLE"}
    assert rows(project) == [(1, 1), (2, 4), (3, 9)]


def test_an_enforced_contract_is_refused_by_name_not_built_without_it(project: Path) -> None:
    contract = {
        "config": {"contract": {"enforced": True}},
        "columns": [{"name": "n", "data_type": "bigint"}, {"name": "square", "data_type": "bigint"}],
    }
    (project / "models" / "numbers.yml").write_text(yaml.safe_dump({"version": 2, "models": [{"name": "numbers", **contract}]}))
    ok, errors = dbt_run(project)
    assert not ok
    assert "model numbers: enforced contracts and indexes are not supported" in errors
    assert "numbers" not in relations(project)
