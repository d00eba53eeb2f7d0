"""The few SQL phrases DuckDB and PostgreSQL cannot share, rendered for the connection at hand.

Why a module and not two copies of a query: almost all of the line's SQL runs on both engines as
written (standard SQL, FILTER, CTEs, `= ANY(list)`, `unnest(?::VARCHAR[])`); each function here
renders one phrase that has no common spelling, so the query around it stays single-sourced.
"""

from __future__ import annotations

import duckdb


def is_postgres(con: object) -> bool:
    """Whether `con` is the PostgreSQL warehouse (a `PgConnection`) rather than a DuckDB connection."""
    return not isinstance(con, duckdb.DuckDBPyConnection)


def insertion_order(con: object) -> str:
    """An ORDER BY phrase putting a table's rows in the order they were written, oldest first (add DESC per
    column for newest first): DuckDB's `rowid`; on PostgreSQL the writing transaction, then the row's place in
    the table (rows of one append-only transaction lie in the order it wrote them)."""
    return "xmin::text::bigint {0}, ctid {0}" if is_postgres(con) else "rowid {0}"
