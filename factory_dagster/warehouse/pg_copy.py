"""Copy the `raw` contract tables of a DuckDB warehouse into a PostgreSQL one, through the store's own writes.

Why: a warehouse that grew on the DuckDB file moves to PostgreSQL (issue 13) by copying its raw facts; the marts are
dbt's to rebuild there. The rows go through `store.insert_rows`, the same path the line writes by, so a value the
PostgreSQL contracts cannot take fails here, naming its table and column, instead of arriving altered. The copy is
one transaction and only into a warehouse whose raw tables are empty: a half copy or a doubled one cannot happen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

from factory_dagster.warehouse import store
from factory_dagster.warehouse.contracts import RAW_TABLES
from factory_dagster.warehouse.postgres import contract_columns

if TYPE_CHECKING:
    import psycopg

VECTORS_PER_CHUNK = 50  # DuckDB vectors of 2,048 rows: about 100,000 rows in memory at a time


class CopyTargetNotEmptyError(RuntimeError):
    """The PostgreSQL warehouse already holds raw rows; copying would double them."""


def copy_raw(source: duckdb.DuckDBPyConnection, target: psycopg.Connection) -> dict[str, int]:
    """Copy every contract table of `source` (DuckDB) into `target` (PostgreSQL); rows copied per table.

    Columns a newer contract added and the source's tables lack stay null, as the DuckDB store leaves them.
    """
    store.ensure_raw_schema(target)
    present = store.raw_columns(source)
    tables = [name for name in RAW_TABLES if name in present]
    filled = [name for name in tables if target.execute(f'SELECT EXISTS (SELECT 1 FROM raw."{name}")').fetchone()[0]]
    if filled:
        raise CopyTargetNotEmptyError(f"the PostgreSQL warehouse already has rows in raw.{', raw.'.join(filled)}")
    copied: dict[str, int] = {}
    with store.transaction(target):
        for name in tables:
            columns = ", ".join(f'"{c.name}"' for c in contract_columns(name) if c.name in present[name])
            result = source.execute(f"SELECT {columns} FROM raw.{name}")
            copied[name] = 0
            while not (chunk := result.fetch_df_chunk(VECTORS_PER_CHUNK)).empty:
                copied[name] += store.insert_rows(target, name, chunk)
    return copied
