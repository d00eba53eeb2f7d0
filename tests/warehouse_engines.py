"""The `con` fixture on both warehouses: the DuckDB file and a fresh database of the test PostgreSQL server.

A test module whose functions already take a DuckDB `con` imports this fixture instead of defining its own,
and each of its tests then runs once per engine (ids `duckdb` and `postgres`), through `store.connect`
as the line opens either warehouse.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from factory_dagster.warehouse.store import Connection, connect

ENGINES = ["duckdb", "postgres"]


@pytest.fixture(params=ENGINES)
def con(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Connection]:
    url = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    with connect(tmp_path / "warehouse.duckdb", url=url) as connection:
        yield connection
