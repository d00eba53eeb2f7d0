"""Copy a DuckDB warehouse (raw tables, and the dbt schemas' tables and views as tables) into a PostgreSQL database.

Why: until the dbt project builds on PostgreSQL, the stations' reads of `staging`, `intermediate` and `marts` can only
be tried on PostgreSQL against marts DuckDB built; a copy gives both warehouses the same state to run a day from.
"""

from __future__ import annotations

import re

import duckdb
import psycopg

from factory_dagster.warehouse import postgres
from factory_dagster.warehouse.store import insert_rows

DBT_SCHEMAS = ("staging", "intermediate", "marts")
# dbt's column types that the contracts never use (postgres.postgres_type maps the contracts' own).
EXTRA_TYPES = {"HUGEINT": "NUMERIC", "FLOAT": "REAL", "UBIGINT": "NUMERIC", "UINTEGER": "BIGINT", "TINYINT": "SMALLINT"}


def _pg_type(duckdb_type: str, table: str, column: str) -> str:
    if re.fullmatch(r"DECIMAL\(\d+,\s*\d+\)", duckdb_type):
        return "NUMERIC"
    return EXTRA_TYPES.get(duckdb_type) or postgres.postgres_type(duckdb_type, table, column)


def copy_warehouse(duck: duckdb.DuckDBPyConnection, pg: psycopg.Connection) -> dict[str, int]:
    """Every row of `raw` through the store's insert, and each dbt relation as a table of the same types; the number
    of rows copied per relation (schema.name)."""
    copied = {}
    relations = duck.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN ('raw', ?, ?, ?) ORDER BY 1, 2",
        list(DBT_SCHEMAS),
    ).fetchall()
    for schema, table in relations:
        rows = duck.execute(f'SELECT * FROM {schema}."{table}"').df()
        if schema == "raw":
            insert_rows(pg, table, rows)
        else:
            types = {
                name: _pg_type(kind, table, name)
                for name, kind in duck.execute(
                    """SELECT column_name, data_type FROM information_schema.columns
                       WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position""",
                    [schema, table],
                ).fetchall()
            }
            body = ", ".join(f'"{c}" {t}' for c, t in types.items())
            pg.execute(f'CREATE SCHEMA IF NOT EXISTS {schema}; CREATE TABLE {schema}."{table}" ({body})')
            if not rows.empty:
                postgres.copy_rows(pg, f'{schema}."{table}"', f"{schema}.{table}", list(types), rows, types)
        copied[f"{schema}.{table}"] = len(rows)
    return copied
