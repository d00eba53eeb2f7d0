"""The raw contracts and the store's write primitives on PostgreSQL (the many-writer warehouse, issue 13).

Why a second engine: DuckDB allows one writing process, so runs of many campaigns wait in one queue;
PostgreSQL takes many writers. The contracts stay single-sourced in `contracts.py` (DuckDB DDL text):
`postgres_ddl` renders each one as PostgreSQL DDL in the schema `raw`, and an unknown type raises
naming the table and column instead of guessing. DuckDB's nested types have no PostgreSQL twin and
become JSONB (a MAP an object, a list of STRUCTs an array of objects).

`store.insert_rows`, `store.replace_partition`, `store.ensure_raw_schema` and `transaction` hand a
psycopg connection to the functions here, so the stations keep one API for both warehouses.
Connections are in autocommit, as DuckDB's are: a statement outside `transaction` commits alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from factory_dagster.warehouse.contracts import RAW_TABLES
from factory_dagster.warehouse.store import backfills, raw_columns

SCALAR_TYPES = {
    "VARCHAR": "TEXT",
    "TEXT": "TEXT",
    "DOUBLE": "DOUBLE PRECISION",
    "INTEGER": "INTEGER",
    "BIGINT": "BIGINT",
    "SMALLINT": "SMALLINT",
    "BOOLEAN": "BOOLEAN",
    "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP",  # naive, UTC by the line's convention: timestamp without time zone
    "JSON": "JSONB",
}
NESTED_PREFIXES = ("MAP(", "STRUCT(")  # and lists of them: JSONB
COLUMN_CONSTRAINTS = re.compile(r"\s(NOT\s+NULL|NULL|PRIMARY\s+KEY|UNIQUE|DEFAULT|CHECK|REFERENCES)\b", re.IGNORECASE)
TABLE_CONSTRAINTS = {"PRIMARY", "UNIQUE", "CHECK", "FOREIGN", "CONSTRAINT"}
SCHEMA_LOCK = 0x46414354  # pg_advisory_xact_lock key: one process at a time creates or migrates `raw`
STAGING_TABLE = "_factory_rows"


class ContractTypeError(ValueError):
    """A contract column whose DuckDB type has no PostgreSQL mapping here."""


class WarehouseConnectionError(ConnectionError):
    """The PostgreSQL warehouse cannot be reached; the message carries the URL with its password masked."""


@dataclass(frozen=True)
class Column:
    """One contract column: its DuckDB type, the PostgreSQL type it maps to, and its column constraints as written."""

    name: str
    duckdb_type: str
    postgres_type: str
    constraints: str


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses: `STRUCT(a VARCHAR, b VARCHAR)[]` and `PRIMARY KEY (a, b)` stay whole."""
    parts, depth, current = [], 0, []
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _first_constraint(rest: str) -> int:
    """Where the column constraints start in `TYPE [constraints]` (outside any parentheses), or len(rest)."""
    for match in COLUMN_CONSTRAINTS.finditer(rest):
        if rest[: match.start()].count("(") == rest[: match.start()].count(")"):
            return match.start()
    return len(rest)


def postgres_type(duckdb_type: str, table: str, column: str) -> str:
    """The PostgreSQL type of a contract's DuckDB type; raises naming the table and column when there is none."""
    normal = re.sub(r"\s+", " ", duckdb_type.strip().upper())
    if normal in SCALAR_TYPES:
        return SCALAR_TYPES[normal]
    if normal.startswith(NESTED_PREFIXES):
        return "JSONB"
    if normal.endswith("[]") and normal[:-2] in SCALAR_TYPES and SCALAR_TYPES[normal[:-2]] != "JSONB":
        return SCALAR_TYPES[normal[:-2]] + "[]"
    raise ContractTypeError(
        f"raw.{table}.{column}: the contract's type {duckdb_type!r} has no PostgreSQL mapping "
        "(factory_dagster/warehouse/postgres.py SCALAR_TYPES); add one there or change the contract"
    )


def contract_columns(table: str, contract: str | None = None) -> list[Column]:
    """The columns of `RAW_TABLES[table]` (or of `contract`), in order, with their PostgreSQL types."""
    text = RAW_TABLES[table] if contract is None else contract
    columns = []
    for part in _split_top_level(text):
        name, rest = (part.split(None, 1) + [""])[:2]
        if name.upper() in TABLE_CONSTRAINTS:
            continue
        cut = _first_constraint(rest)
        duckdb_type, constraints = rest[:cut].strip(), rest[cut:].strip()
        columns.append(Column(name, duckdb_type, postgres_type(duckdb_type, table, name), constraints))
    return columns


def _table_constraints(contract: str) -> list[str]:
    return [p for p in _split_top_level(contract) if p.split(None, 1)[0].upper() in TABLE_CONSTRAINTS]


def postgres_ddl(table: str, contract: str | None = None) -> str:
    """`CREATE TABLE IF NOT EXISTS raw.<table> (...)` for one contract, rendered from its DuckDB text."""
    text = RAW_TABLES[table] if contract is None else contract
    lines = [f'"{c.name}" {c.postgres_type} {c.constraints}'.rstrip() for c in contract_columns(table, text)]
    lines += _table_constraints(text)
    body = ",\n    ".join(lines)
    return f'CREATE TABLE IF NOT EXISTS raw."{table}" (\n    {body}\n)'


@cache
def _types(table: str) -> dict[str, str]:
    if table not in RAW_TABLES:
        raise KeyError(f"raw.{table} is not a contract table (factory_dagster/warehouse/contracts.py RAW_TABLES)")
    return {c.name: c.postgres_type for c in contract_columns(table)}


# ---- connections ----


def mask_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ***, for errors and logs (URL and key=value forms)."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            credentials, _, host = netloc.rpartition("@")
            user, colon, _password = credentials.partition(":")
            netloc = f"{user}:***@{host}" if colon else netloc
        query = urlencode(
            [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn, flags=re.IGNORECASE)


def _password(dsn: str) -> str | None:
    if "://" in dsn:
        parts = urlsplit(dsn)
        return parts.password or dict(parse_qsl(parts.query)).get("password")
    match = re.search(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn, flags=re.IGNORECASE)
    return match.group(1).strip("'") if match else None


def connect_postgres(dsn: str, ensure_schema: bool = True, connect_timeout_s: int = 10) -> psycopg.Connection:
    """An autocommit connection in UTC, with the `raw` schema created or migrated (unless `ensure_schema` is False).

    A failure names the server by its URL with the password masked; the driver's own exception is not chained,
    so no traceback repeats the DSN.
    """
    try:
        con = psycopg.connect(dsn, autocommit=True, connect_timeout=connect_timeout_s)
    except psycopg.Error as exc:
        detail = str(exc)
        secret = _password(dsn)
        if secret:
            detail = detail.replace(secret, "***")
        raise WarehouseConnectionError(f"cannot connect to the PostgreSQL warehouse {mask_dsn(dsn)}: {detail}") from None
    con.execute("SET TIME ZONE 'UTC'")
    if ensure_schema:
        ensure_raw_schema(con)
    return con


def ensure_raw_schema(con: psycopg.Connection) -> None:
    """Create the `raw` contract tables that do not exist yet, and add columns a newer contract introduced (nullable
    there: old rows have no value, unless a `BACKFILLS` entry fills them, in the same transaction), as the DuckDB store
    does; under an advisory lock, since many processes may try."""
    with con.transaction():
        con.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK])
        con.execute("CREATE SCHEMA IF NOT EXISTS raw")
        existing = raw_columns(con)
        statements, added = [], {}
        for name in RAW_TABLES:
            if name not in existing:
                statements.append(postgres_ddl(name))
                continue
            added[name] = [c for c in contract_columns(name) if c.name not in existing[name]]
            statements += [f'ALTER TABLE raw."{name}" ADD COLUMN IF NOT EXISTS "{c.name}" {c.postgres_type}' for c in added[name]]
        statements += backfills({name: [c.name for c in columns] for name, columns in added.items()})
        if statements:  # one round trip: a fresh warehouse has some fifty tables
            con.execute(";\n".join(statements))


@contextmanager
def transaction(con: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """All or nothing: commit on success, roll back on any error (a savepoint when already inside one)."""
    with con.transaction():
        yield con


# ---- writes ----


def plain(value: Any) -> Any:
    """A nested value as JSON-ready Python: numpy scalars and arrays unboxed, NaN/NaT as None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _naive_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _values(table: str, column: str, series: pd.Series, pg_type: str) -> list[Any]:
    """One frame column as Python values for COPY: NaN/NaT -> None, timestamps naive UTC, lists as arrays, nested as JSONB."""
    if pg_type == "TIMESTAMP" and isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pg_type == "DATE" and pd.api.types.is_datetime64_any_dtype(series.dtype):
        series = series.dt.date
    elif pg_type in ("INTEGER", "BIGINT", "SMALLINT") and pd.api.types.is_float_dtype(series.dtype):
        try:  # pandas turns an integer column with a missing value into floats; 3.0 must go in as 3
            series = series.astype("Int64")
        except TypeError:
            bad = series[series.notna() & (series % 1 != 0)]
            raise ValueError(
                f"{table}.{column} is {pg_type}: row {bad.index[0]} of the frame has the non-integer value {bad.iloc[0]}"
            ) from None
    values = series.astype(object).where(series.notna(), None).tolist()
    if pg_type.endswith("[]"):
        return [None if v is None else [plain(x) for x in v] for v in values]
    if pg_type == "JSONB":
        return [None if v is None else (v if isinstance(v, str) else Jsonb(plain(v))) for v in values]
    if pg_type == "TIMESTAMP":
        return [_naive_utc(v) for v in values]
    if pg_type == "DATE":
        return [v.date() if isinstance(v, datetime) else v for v in values]
    return values


def copy_rows(
    con: psycopg.Connection, target: str, label: str, columns: list[str], rows: pd.DataFrame, types: dict[str, str]
) -> None:
    """COPY the frame's `columns` into `target`; `label` names the table in errors."""
    names = ", ".join(f'"{c}"' for c in columns)
    data = [_values(label, c, rows[c], types[c]) for c in columns]
    with con.cursor() as cursor, cursor.copy(f"COPY {target} ({names}) FROM STDIN") as copy:
        for row in zip(*data):
            copy.write_row(row)


def frame_type(series: pd.Series) -> str:
    """The PostgreSQL type for a frame column that has no contract (a registered frame): from its dtype, or from
    its first value when it holds Python objects; lists of text become TEXT[], other nested values JSONB."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "BOOLEAN"
    if pd.api.types.is_integer_dtype(dtype):
        return "BIGINT"
    if pd.api.types.is_float_dtype(dtype):
        return "DOUBLE PRECISION"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "TIMESTAMP"
    present = series.dropna()
    if present.empty:
        return "TEXT"
    first = present.iloc[0]
    if isinstance(first, bool | np.bool_):
        return "BOOLEAN"
    if isinstance(first, int | np.integer):
        return "BIGINT"
    if isinstance(first, float | np.floating):
        return "DOUBLE PRECISION"
    if isinstance(first, datetime):
        return "TIMESTAMP"
    if isinstance(first, date):
        return "DATE"
    if isinstance(first, list | tuple | np.ndarray) and all(isinstance(v, str) for v in first):
        return "TEXT[]"
    if isinstance(first, list | tuple | np.ndarray | dict):
        return "JSONB"
    return "TEXT"


def create_temp_table(con: psycopg.Connection, name: str, rows: pd.DataFrame) -> None:
    """`rows` as the temporary table `name` (replacing one of that name): DuckDB's `register` of a frame."""
    types = {str(c): frame_type(rows[c]) for c in rows.columns}
    body = ", ".join(f'"{c}" {t}' for c, t in types.items())
    con.execute(f'DROP TABLE IF EXISTS pg_temp."{name}"; CREATE TEMPORARY TABLE "{name}" ({body})')
    if not rows.empty:
        copy_rows(con, f'"{name}"', name, list(types), rows.set_axis(list(types), axis=1), types)


def insert_rows(con: psycopg.Connection, table: str, rows: pd.DataFrame, skip_existing: bool = False) -> int:
    """Append a frame to `raw.<table>` matching columns by name (COPY); the number of rows written.

    With `skip_existing`, rows whose key (or a unique column) is already present, or repeats an earlier row of
    the frame, are left out: the frame goes to a temporary table first and then in with ON CONFLICT DO NOTHING.
    """
    if rows.empty:
        return 0
    types = _types(table)
    unknown = [c for c in rows.columns if c not in types]
    if unknown:
        raise ValueError(f"raw.{table} has no column {', '.join(map(repr, unknown))} (factory_dagster/warehouse/contracts.py)")
    columns = [str(c) for c in rows.columns]
    if not skip_existing:
        copy_rows(con, f'raw."{table}"', f"raw.{table}", columns, rows, types)
        return len(rows)
    names = ", ".join(f'"{c}"' for c in columns)
    with con.transaction():
        con.execute(f'CREATE TEMPORARY TABLE {STAGING_TABLE} (LIKE raw."{table}" INCLUDING DEFAULTS)')
        copy_rows(con, STAGING_TABLE, f"raw.{table}", columns, rows, types)
        written = con.execute(
            f'INSERT INTO raw."{table}" ({names}) SELECT {names} FROM {STAGING_TABLE} ON CONFLICT DO NOTHING'
        ).rowcount
        con.execute(f"DROP TABLE {STAGING_TABLE}")
    return written


def replace_partition(con: psycopg.Connection, table: str, day: date, rows: pd.DataFrame, campaign_id: str) -> int:
    """Overwrite one day of one campaign in `raw.<table>` (call inside a transaction)."""
    _types(table)
    con.execute(f'DELETE FROM raw."{table}" WHERE partition_day = %s AND campaign_id = %s', [day, campaign_id])
    return insert_rows(con, table, rows)
