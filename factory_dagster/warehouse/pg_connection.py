"""A PostgreSQL warehouse connection with the surface of a DuckDB connection, so the stations run on either.

Why an adapter and not two code paths: the stations call `con.execute(sql, params)` with DuckDB's `?` and
`$name` placeholders and read the result with `.fetchall()`, `.fetchone()`, `.df()` or `.description`; this
class turns those placeholders into psycopg's (`%s`, `%(name)s`, outside string literals, quoted names and
comments) and gives results the same shapes: an INSERT, UPDATE or DELETE answers one row with its row count
as DuckDB's do, NUMERIC comes back as float (DuckDB's sums and averages are DOUBLE or integers, never
Decimal), and `.df()` has DuckDB's column types (dates and timestamps as datetime64[us], integers with a
NULL as nullable Int64, lists as object arrays). `register(name, frame)` copies a frame into a temporary
table of that name, which DuckDB would scan in place. Statements outside `transaction` commit alone
(autocommit), as on DuckDB.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb
from psycopg.types.numeric import FloatLoader

from factory_dagster.warehouse import postgres

# One token the placeholder rewrite must see whole: literals, quoted names and comments keep their ? and $.
_TOKEN = re.compile(
    r"""'(?:[^']|'')*'          # a string literal
      | "(?:[^"]|"")*"          # a quoted name
      | --[^\n]*                # a line comment
      | /\*.*?\*/               # a block comment
      | \$(?P<name>[A-Za-z_]\w*)  # $name
      | (?P<qmark>\?)           # ?
      | %                       # a literal %: doubled for psycopg
    """,
    re.VERBOSE | re.DOTALL,
)
_COUNTED = ("INSERT", "UPDATE", "DELETE")  # DuckDB answers these with one row: the count of rows they touched
_DATETIME_OIDS = {1082, 1114}  # date, timestamp: datetime64[us] in a frame, as DuckDB's .df() gives them
_INTEGER_OIDS = {20, 21, 23}


@lru_cache(maxsize=4096)
def translate(sql: str) -> tuple[str, tuple[str, ...], int]:
    """The statement with psycopg placeholders, the `$name`s it uses, and its number of `?` placeholders.

    Cached on the text: the line runs the same few hundred statements every day.
    """
    names: list[str] = []
    qmarks = 0

    def rewrite(match: re.Match[str]) -> str:
        nonlocal qmarks
        if match.group("name"):
            names.append(match.group("name"))
            return f"%({match.group('name')})s"
        if match.group("qmark"):
            qmarks += 1
            return "%s"
        return match.group(0).replace("%", "%%")  # psycopg reads % even inside literals and comments

    return _TOKEN.sub(rewrite, sql), tuple(dict.fromkeys(names)), qmarks


def _value(value: Any) -> Any:
    """A parameter as psycopg takes it: numpy arrays as lists, NaT as NULL, dicts as JSONB (DuckDB MAP/STRUCT)."""
    if isinstance(value, np.ndarray):
        return [_value(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_value(v) for v in value]
    if value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, dict):
        return Jsonb(postgres.plain(value))
    return value


def _params(sql: str, params: Sequence[Any] | dict[str, Any] | None) -> tuple[str, Any]:
    query, names, qmarks = translate(sql)
    if not names and not qmarks:
        if params:
            raise ValueError(f"parameters given to a statement without placeholders: {sql[:200]}")
        return sql, None
    if names:
        if not isinstance(params, dict):
            raise ValueError(f"the statement uses $name placeholders and needs a dict of parameters: {sql[:200]}")
        return query, {k: _value(v) for k, v in params.items()}
    if params is None or isinstance(params, dict) or len(params) != qmarks:
        raise ValueError(f"the statement has {qmarks} ? placeholders and got {params!r:.200}")
    return query, [_value(v) for v in params]


class PgResult:
    """One statement's result, read as DuckDB's connection-as-result is read."""

    def __init__(self, cursor: psycopg.Cursor, counted: bool) -> None:
        self._cursor = cursor
        self._counted = counted and cursor.description is None

    @property
    def description(self) -> list[tuple] | None:
        if self._counted:
            return [("Count", None, None, None, None, None, None)]
        return self._cursor.description

    def fetchall(self) -> list[tuple]:
        if self._counted:
            self._counted = False
            return [(self._cursor.rowcount,)]
        return self._cursor.fetchall()

    def fetchone(self) -> tuple | None:
        if self._counted:
            self._counted = False
            return (self._cursor.rowcount,)
        return self._cursor.fetchone()

    def df(self) -> pd.DataFrame:
        """The rows as a frame with the column types DuckDB's `.df()` gives."""
        description = self._cursor.description or []
        names = [c.name for c in description]
        rows = self.fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        frame = {}
        for position, (column, values) in enumerate(zip(description, columns, strict=True)):
            frame[position] = _series(column.type_code, values)
        result = pd.DataFrame(frame)
        result.columns = names
        return result


def _series(oid: int, values: Sequence[Any]) -> pd.Series:
    if oid in _DATETIME_OIDS:
        return pd.Series(pd.to_datetime(list(values)), dtype="datetime64[us]")
    if oid in _INTEGER_OIDS and None in values:
        return pd.Series(list(values), dtype="Int64")
    if any(isinstance(v, list) for v in values):
        array = np.empty(len(values), dtype=object)
        array[:] = [np.array(v, dtype=object) if isinstance(v, list) else v for v in values]
        return pd.Series(array)
    if oid in _INTEGER_OIDS or oid == 701 or oid == 16:  # integers, double, boolean: numpy's own dtypes
        return pd.Series(list(values))
    return pd.Series(list(values), dtype=object)


class PgConnection:
    """The DuckDB-connection surface of one psycopg connection (autocommit, UTC, `raw` schema in place)."""

    def __init__(self, connection: psycopg.Connection, owned: bool = True) -> None:
        self.connection = connection
        self._owned = owned
        if owned:  # a cursor() handle shares its owner's connection, loaders included
            connection.adapters.register_loader("numeric", FloatLoader)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> PgResult:
        query, values = _params(sql, params)
        cursor = self.connection.cursor()
        cursor.execute(query, values)
        return PgResult(cursor, sql.lstrip().upper().startswith(_COUNTED))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any] | dict[str, Any]]) -> None:
        for row in rows:
            self.execute(sql, row)

    def register(self, name: str, frame: pd.DataFrame) -> None:
        """Make `frame` readable as the table `name` (a temporary table, replaced if it exists)."""
        postgres.create_temp_table(self.connection, name, frame)

    def unregister(self, name: str) -> None:
        self.connection.execute(f'DROP TABLE IF EXISTS pg_temp."{name}"')

    @contextmanager
    def transaction(self) -> Iterator[PgConnection]:
        """All or nothing (a savepoint when already inside one), as `store.transaction` expects."""
        with self.connection.transaction():
            yield self

    def cursor(self) -> PgConnection:
        """Another handle on the same session: unlike a DuckDB cursor, it shares the open transaction."""
        return PgConnection(self.connection, owned=False)

    def close(self) -> None:
        if self._owned:
            self.connection.close()

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
