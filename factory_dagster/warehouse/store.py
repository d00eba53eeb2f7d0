"""DuckDB access for the line: one short-lived connection per unit of work.

DuckDB allows a single writing process, so connections are opened late, closed
early, and opening retries while another process (dbt, the UI) holds the lock.
Inside `hold` (one Dagster run of the line) the file stays open and each unit of work
gets a cursor of it instead: the same transactions, without a file open and a
checkpoint each time.

With a PostgreSQL warehouse URL (`FACTORY_WAREHOUSE_URL`), `connect` and `hold` hand out a
`pg_connection.PgConnection` instead: the same DuckDB-connection surface over psycopg. The write
primitives (`ensure_raw_schema`, `insert_rows`, `replace_partition`, and `transaction`) take it, or a
bare psycopg connection, and hand it to `warehouse/postgres.py`; the DuckDB path below is unchanged,
and psycopg is imported only when a URL or such a connection comes.
"""

from __future__ import annotations

import functools
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import duckdb
import pandas as pd

from factory_dagster.warehouse.contracts import BACKFILLS, RAW_TABLES
from factory_dagster.warehouse.transactions import transaction  # noqa: F401  (the line imports it from here)

if TYPE_CHECKING:
    import psycopg

    from factory_dagster.settings import Paths
    from factory_dagster.warehouse.pg_connection import PgConnection

    Connection = duckdb.DuckDBPyConnection | PgConnection

LOCK_RETRY_SECONDS = 60.0
P = ParamSpec("P")
R = TypeVar("R")
_ENSURED: set[str] = set()  # PostgreSQL warehouse URLs whose `raw` schema this process has created or migrated
_HELD: dict[Path | str, duckdb.DuckDBPyConnection | PgConnection] = {}  # by resolved file path, or by URL


def _open(path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _column_definitions(columns: str) -> dict[str, str]:
    """name -> type of a contract's column list (table constraints such as PRIMARY KEY (...) left out)."""
    parts, depth, current = [], 0, ""
    for char in columns:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    definitions = {}
    for part in (p.strip() for p in parts if p.strip()):
        name, rest = part.split(None, 1)
        if name.upper() not in {"PRIMARY", "UNIQUE", "CHECK", "FOREIGN"}:
            # The type is everything before the first column constraint.
            definitions[name] = rest.split(" NOT NULL")[0].split(" PRIMARY KEY")[0].split(" UNIQUE")[0].strip()
    return definitions


@functools.cache
def contract_columns() -> dict[str, dict[str, str]]:
    """Each `raw` contract's columns, name -> type, parsed once per process (every write connection checks them)."""
    return {name: _column_definitions(columns) for name, columns in RAW_TABLES.items()}


def raw_columns(con: duckdb.DuckDBPyConnection | psycopg.Connection) -> dict[str, set[str]]:
    """The columns of each table in the `raw` schema as the warehouse has them (either engine).

    On DuckDB from `duckdb_columns()`: its `information_schema` view over the same catalog takes twice as long, and
    every write connection asks."""
    query = (
        "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = 'raw'"
        if isinstance(con, duckdb.DuckDBPyConnection)
        else "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'raw'"
    )
    existing: dict[str, set[str]] = {}
    for table, column in con.execute(query).fetchall():
        existing.setdefault(table, set()).add(column)
    return existing


def ensure_raw_schema(con: duckdb.DuckDBPyConnection | psycopg.Connection) -> None:
    """Create the `raw` contract tables that do not exist yet, add columns a newer contract
    introduced to tables an older version created (nullable there: old rows have no value, unless
    a `BACKFILLS` entry fills them, in the same transaction), and re-key tables whose contract's
    primary key changed (`_rekey`)."""
    if not isinstance(con, duckdb.DuckDBPyConnection):
        return _postgres().ensure_raw_schema(_psycopg(con))
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    existing = raw_columns(con)
    added = {
        name: {c: t for c, t in columns.items() if c not in existing[name]}
        for name, columns in contract_columns().items()
        if name in existing
    }
    for name, columns in RAW_TABLES.items():
        if name not in existing:
            con.execute(f"CREATE TABLE raw.{name} ({columns})")
    if any(added.values()):
        with transaction(con):
            for name, columns in added.items():
                for column, column_type in columns.items():
                    con.execute(f"ALTER TABLE raw.{name} ADD COLUMN {column} {column_type}")
            for sql in backfills(added):
                con.execute(sql)
    for name, key in _stale_keys(con).items():
        _rekey(con, name, key)


def backfills(added: Mapping[str, Iterable[str]]) -> list[str]:
    """The `BACKFILLS` statements due once `added` (table -> the columns just added to it) are added."""
    return [fill.sql for name, fill in BACKFILLS.items() if set(fill.columns) & set(added.get(name, ()))]


def contract_key(columns: str) -> list[str]:
    """The primary key columns a contract declares (a column's own PRIMARY KEY or a table-level one)."""
    table_level = re.search(r"PRIMARY\s+KEY\s*\(([^)]*)\)", columns, re.IGNORECASE)
    if table_level:
        return [c.strip() for c in table_level.group(1).split(",")]
    inline = re.search(r"^\s*(\w+)\s[^,\n]*PRIMARY\s+KEY", columns, re.IGNORECASE | re.MULTILINE)
    return [inline.group(1)] if inline else []


@functools.cache
def _contract_keys() -> dict[str, list[str]]:
    return {name: contract_key(columns) for name, columns in RAW_TABLES.items()}


def _stale_keys(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Tables whose primary key in the warehouse differs from their contract's (an older version made them)."""
    keys = {
        table: list(columns)
        for table, columns in con.execute(
            """SELECT table_name, constraint_column_names FROM duckdb_constraints()
               WHERE schema_name = 'raw' AND constraint_type = 'PRIMARY KEY'"""
        ).fetchall()
    }
    wanted = _contract_keys()
    return {name: key for name, key in wanted.items() if key and name in keys and keys[name] != key}


def _rekey(con: duckdb.DuckDBPyConnection, name: str, key: list[str]) -> None:
    """Rebuild one table with its contract's primary key, keeping every row (DuckDB cannot alter a key in place).

    Why: a newer contract widened the key (e.g. `leads` from lead_id to campaign_id + lead_id when a
    person became able to be a lead of several campaigns); the old rows satisfy the wider key.
    """
    columns = ", ".join(contract_columns()[name])
    with transaction(con):
        con.execute(f"CREATE TABLE raw._rekey_{name} ({RAW_TABLES[name]})")
        con.execute(f"INSERT INTO raw._rekey_{name} ({columns}) SELECT {columns} FROM raw.{name}")
        con.execute(f"DROP TABLE raw.{name}")
        con.execute(f"ALTER TABLE raw._rekey_{name} RENAME TO {name}")


@contextmanager
def hold(path: Path, wait_s: float = LOCK_RETRY_SECONDS, url: str | None = None) -> Iterator[None]:
    """Keep the warehouse open in this process for the block; `connect` hands out cursors of it.

    Why: a day's run connects about fifty times, and each open and close of the file costs some
    20 ms (a close checkpoints it). The price: the file stays locked for the whole block, so other
    processes wait for it (up to their own retry limit); hold it for one run, not longer.
    Inside the block a read-only request gets a read-write cursor (DuckDB shares one database
    instance per file and mode in a process). Re-entrant: an inner `hold` of the same file is a no-op.
    With `url` (the PostgreSQL warehouse) one session serves the block, for the same reason (a
    connection and the schema check cost some 10 ms each); it locks nothing.
    """
    key = url or Path(path).resolve()
    if key in _HELD:
        yield
        return
    if url:
        con = _postgres_connect(url)
    else:
        key.parent.mkdir(parents=True, exist_ok=True)
        con = _open(Path(path), False, wait_s)
    try:
        if not url:
            ensure_raw_schema(con)
        _HELD[key] = con
        yield
    finally:
        _HELD.pop(key, None)
        con.close()


@contextmanager
def connect(
    path: Path, read_only: bool = False, wait_s: float = LOCK_RETRY_SECONDS, url: str | None = None
) -> Iterator[Connection]:
    """Open the warehouse (creating it and its `raw` schema on first use), or a cursor of the held one.

    With `url`, the PostgreSQL warehouse there instead of the file at `path` (`read_only` makes its
    transactions read-only, outside a `hold`).
    """
    held = _HELD.get(url or Path(path).resolve()) if _HELD else None
    if held is not None:
        cursor = held.cursor()
        try:
            yield cursor
        finally:
            cursor.close()
        return
    if url:
        con = _postgres_connect(url, read_only)
    else:
        path = Path(path)
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        con = _open(path, read_only, wait_s)
    try:
        if not read_only and not url:
            ensure_raw_schema(con)
        yield con
    finally:
        con.close()


def open_warehouse(paths: Paths, read_only: bool = False) -> AbstractContextManager[Connection]:
    """`connect` to the warehouse a data folder's settings name: PostgreSQL when `paths.warehouse_url` is set, else the
    DuckDB file (the commands use this, so FACTORY_WAREHOUSE_URL moves them with the line)."""
    return connect(paths.warehouse, read_only=read_only, url=paths.warehouse_url)


def warehouse_name(paths: Paths) -> str:
    """The warehouse `open_warehouse` opens, as the commands name it: the DuckDB file, or the PostgreSQL URL with its
    password masked."""
    return str(paths.warehouse) if not paths.warehouse_url else _postgres().mask_dsn(paths.warehouse_url)


@contextmanager
def exclusive(con: Connection, name: str) -> Iterator[None]:
    """Hold the warehouse-wide lock `name` for the block: one holder at a time, across processes.

    Why: on the PostgreSQL warehouse several campaigns' runs write at once, and a few jobs must not
    overlap: importing a shared inbox (two importers would both read a file as new and collide on its
    rows) and the dbt build (two would replace the same relations). A session advisory lock keyed by
    the name makes the second wait. The DuckDB file has one writing process, so there it is a no-op.
    """
    if isinstance(con, duckdb.DuckDBPyConnection):
        yield
        return
    key = lock_key(name)
    con.execute("SELECT pg_advisory_lock(?)", [key]).fetchall()
    try:
        yield
    finally:
        con.execute("SELECT pg_advisory_unlock(?)", [key]).fetchall()


def lock_key(name: str) -> int:
    """The PostgreSQL advisory lock key of the warehouse lock `name` (pg_locks shows it as `objid`)."""
    return zlib.crc32(f"factory:{name}".encode())


DBT_BUILD_LOCK = "dbt-build"  # held `exclusive` by a dbt build, `shared` by the readers of what dbt builds


@contextmanager
def shared(con: Connection, name: str) -> Iterator[None]:
    """Hold the warehouse-wide lock `name` in shared mode for the block: any number of sharers at once, but never
    while someone holds it `exclusive` (a waiting `exclusive` holder goes before sharers that come after it).

    Why: on PostgreSQL a dbt build replaces relations in place, and dropping a replaced table drops the views on it
    until the build makes them again; a station reading the marts then meanwhile fails ("relation does not exist")
    or, checking first, takes a missing mart for "nothing learned yet". Readers share `DBT_BUILD_LOCK`; the build
    holds it exclusive. Inside a transaction the lock lasts until the transaction ends, as the locks its reads took
    on the relations do (released earlier, a build's DROP would wait for them while the transaction's next read
    waited for the build). A no-op on the DuckDB file, whose one writing process runs a build or a read at a time.
    """
    if isinstance(con, duckdb.DuckDBPyConnection):
        yield
        return
    import psycopg

    key = lock_key(name)
    if _psycopg(con).info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        con.execute("SELECT pg_advisory_xact_lock_shared(?)", [key]).fetchall()
        yield
        return
    con.execute("SELECT pg_advisory_lock_shared(?)", [key]).fetchall()
    try:
        yield
    finally:
        con.execute("SELECT pg_advisory_unlock_shared(?)", [key]).fetchall()


def reads_dbt_relations(read: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """Decorate a function whose first argument is a warehouse connection and which reads what dbt builds: it runs
    holding `DBT_BUILD_LOCK` shared, so no build replaces those relations while it reads them."""

    @functools.wraps(read)
    def reading(con: Any, *args: P.args, **kwargs: P.kwargs) -> R:
        with shared(con, DBT_BUILD_LOCK):
            return read(con, *args, **kwargs)

    return reading


def insert_rows(
    con: duckdb.DuckDBPyConnection | psycopg.Connection, table: str, rows: pd.DataFrame, skip_existing: bool = False
) -> int:
    """Append a frame to `raw.<table>`, matching columns by name; the number of rows written.

    With `skip_existing`, rows that collide with a key already present are left out
    (append-only registers such as the suppression list and prompt versions).
    """
    if not isinstance(con, duckdb.DuckDBPyConnection):
        return _postgres().insert_rows(_psycopg(con), table, rows, skip_existing)
    if rows.empty:
        return 0
    conflict = " ON CONFLICT DO NOTHING" if skip_existing else ""
    con.register("_rows", rows)
    try:
        return con.execute(f"INSERT INTO raw.{table} BY NAME SELECT * FROM _rows{conflict}").fetchall()[0][0]
    finally:
        # After a failed INSERT inside a transaction, unregister raises "transaction is aborted"
        # and would hide the real error; the caller's ROLLBACK drops the view anyway.
        with suppress(duckdb.TransactionException):
            con.unregister("_rows")


def replace_partition(
    con: duckdb.DuckDBPyConnection | psycopg.Connection, table: str, day: date, rows: pd.DataFrame, campaign_id: str
) -> int:
    """Overwrite one day of one campaign in `raw.<table>` (call inside a transaction)."""
    if not isinstance(con, duckdb.DuckDBPyConnection):
        return _postgres().replace_partition(_psycopg(con), table, day, rows, campaign_id)
    con.execute(f"DELETE FROM raw.{table} WHERE partition_day = ? AND campaign_id = ?", [day, campaign_id])
    return insert_rows(con, table, rows)


def _postgres() -> ModuleType:
    """The PostgreSQL side, imported on first use: a DuckDB-only process never loads psycopg."""
    from factory_dagster.warehouse import postgres

    return postgres


def _psycopg(con: PgConnection | psycopg.Connection) -> psycopg.Connection:
    """The psycopg connection under an adapter (the write primitives use psycopg's own placeholders and COPY)."""
    from factory_dagster.warehouse.pg_connection import PgConnection

    return con.connection if isinstance(con, PgConnection) else con


def _postgres_connect(url: str, read_only: bool = False) -> PgConnection:
    """A session on the PostgreSQL warehouse; its `raw` schema is checked once per process and URL."""
    from factory_dagster.warehouse.pg_connection import PgConnection

    connection = _postgres().connect_postgres(url, ensure_schema=url not in _ENSURED and not read_only)
    if not read_only:
        _ENSURED.add(url)
    else:
        connection.execute("SET default_transaction_read_only = on")
    return PgConnection(connection)


def fetch_one(con: duckdb.DuckDBPyConnection, sql: str, params: list | dict | None = None) -> tuple | None:
    """The first row of a query, with the result fully consumed.

    DuckDB 2 refuses `register` on a connection whose last result was only partly
    fetched, so the line never leaves a result half-read.
    """
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None
