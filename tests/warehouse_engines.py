"""The `engine_con` fixture: both warehouses: the DuckDB file and a fresh database of the test PostgreSQL server.

A test module whose tests take a DuckDB `con` makes its `con` fixture return `engine_con` (conftest.py imports
it), and each of its tests then runs once per engine (ids `duckdb` and `postgres`), through `store.connect` as
the line opens either warehouse.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from factory_dagster.warehouse.store import connect

if TYPE_CHECKING:
    from factory_dagster.warehouse.store import Connection

ENGINES = ["duckdb", "postgres"]


@pytest.fixture(params=ENGINES)
def engine_con(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Connection]:
    url = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    with connect(tmp_path / "warehouse.duckdb", url=url) as connection:
        yield connection
