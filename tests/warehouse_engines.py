"""Fixtures that run a test on both warehouses: the DuckDB file and a fresh database of the test PostgreSQL server.

`engine_con` is a connection, `engine_paths` a data folder whose settings name the warehouse (`warehouse_url` set
for PostgreSQL); conftest.py imports both. A test module whose tests take a DuckDB `con` (or `paths`) makes its own
fixture return one of these, and each of its tests then runs once per engine (ids `duckdb` and `postgres`), through
`store.connect` as the line opens either warehouse.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import connect

if TYPE_CHECKING:
    from factory_dagster.warehouse.store import Connection

ENGINES = ["duckdb", "postgres"]


@pytest.fixture(params=ENGINES)
def engine_url(request: pytest.FixtureRequest) -> str | None:
    """None for the DuckDB file, else the URL of a fresh PostgreSQL database holding the raw schema (as the store's
    first connection leaves it; DuckDB's file gets it from that first connection too)."""
    return request.getfixturevalue("postgres_raw_schema_dsn") if request.param == "postgres" else None


@pytest.fixture
def engine_con(engine_url: str | None, tmp_path: Path) -> Iterator[Connection]:
    with connect(tmp_path / "warehouse.duckdb", url=engine_url) as connection:
        yield connection


@pytest.fixture
def engine_paths(engine_url: str | None, tmp_path: Path) -> Paths:
    base = Paths.under(tmp_path / "data")
    return Paths(base.home, base.warehouse, base.leads_inbox, base.spec, engine_url)
