"""All-or-nothing blocks on a DuckDB connection, in a module of its own so that a light process
(the SMTP send loop) can use it without importing pandas with the rest of warehouse/store.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: commit on success (DuckDB writes and syncs its WAL at COMMIT), roll back on any error.

    A psycopg connection (the PostgreSQL warehouse) uses its own transaction block, a savepoint when nested.
    """
    if not isinstance(con, duckdb.DuckDBPyConnection):
        with con.transaction():
            yield con
        return
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
