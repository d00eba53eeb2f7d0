"""The PostgreSQL adapter (warehouse/pg_connection.py) against a real server, beside DuckDB where both must agree.

The stations call one connection surface; these tests hold the adapter to what DuckDB's connection does with the
same statements: placeholders, result shapes, frame types, registered frames, transactions, and the store's
`connect`/`hold` and the resource's `warehouse()` choosing the engine from the warehouse URL.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import psycopg
import pytest

from factory_dagster.resources import FactoryResource
from factory_dagster.settings import Paths
from factory_dagster.warehouse.pg_connection import PgConnection, translate
from factory_dagster.warehouse.store import connect, hold, insert_rows, transaction

DAY = date(2026, 3, 2)


@pytest.fixture
def pg(postgres_dsn: str, tmp_path: Path):
    with connect(tmp_path / "unused.duckdb", url=postgres_dsn) as con:
        yield con


@pytest.fixture
def duck(tmp_path: Path):
    with connect(tmp_path / "warehouse.duckdb") as con:
        con.execute("SET TimeZone = 'UTC'")
        yield con


def _suppression(emails: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"email": emails, "reason": "bounced", "source": "test", "partition_day": DAY, "added_at": datetime(2026, 3, 2, 9)}
    )


def test_placeholders_are_rewritten_outside_literals_names_and_comments() -> None:
    sql = """SELECT '?' || "a?b" || ? -- what?
             , $day::DATE, 'x%' LIKE '%' /* $not_a_name ? */, 'it''s $x' FROM t WHERE a = $day AND b = $gap"""
    rewritten, names, qmarks = translate(sql)
    assert names == ("day", "gap") and qmarks == 1
    assert "'?' || \"a?b\" || %s -- what?" in rewritten
    assert "%(day)s::DATE, 'x%%' LIKE '%%' /* $not_a_name ? */, 'it''s $x'" in rewritten
    assert rewritten.endswith("a = %(day)s AND b = %(gap)s")


def test_both_engines_answer_the_same_statements_with_the_same_values(duck, pg) -> None:
    for con in (duck, pg):
        insert_rows(con, "suppression", _suppression(["a@x.com", "b@x.com", "c@y.com"]))
    statements = [
        ("SELECT email FROM raw.suppression WHERE email LIKE '%@x.com' AND added_at >= ? ORDER BY 1", [DAY]),
        ("SELECT count(*) FILTER (WHERE email LIKE $pattern), count(*) FROM raw.suppression", {"pattern": "%y.com"}),
        ("SELECT sum(length(email)), avg(length(email)) FROM raw.suppression", None),
        ("SELECT ?::DATE - ?::INTEGER, ?::VARCHAR[]", [DAY, 3, np.array(["a", "b"], dtype=object)]),
        ("UPDATE raw.suppression SET reason = 'complaint' WHERE email <> ?", ["a@x.com"]),
        (
            "INSERT INTO raw.suppression SELECT 'd@z.com', reason, source, partition_day, added_at FROM raw.suppression LIMIT 1",
            [],
        ),
        ("DELETE FROM raw.suppression WHERE email = $email", {"email": "nobody@x.com"}),
    ]
    for sql, params in statements:
        assert duck.execute(sql, params).fetchall() == pg.execute(sql, params).fetchall(), sql
    total, mean = pg.execute("SELECT sum(length(email)), avg(length(email)) FROM raw.suppression").fetchone()
    assert isinstance(total, float | int) and isinstance(mean, float)  # NUMERIC comes back as float, never Decimal
    cursor = pg.execute("SELECT email, reason FROM raw.suppression ORDER BY email")
    assert [d[0] for d in cursor.description] == ["email", "reason"]
    assert cursor.fetchone() == ("a@x.com", "bounced") and cursor.fetchall() == [
        ("b@x.com", "complaint"),
        ("c@y.com", "complaint"),
        ("d@z.com", "bounced"),
    ]
    with pytest.raises(ValueError, match="2 \\? placeholders"):
        pg.execute("SELECT ?, ?", [1])


def test_frames_have_the_column_types_duckdb_gives(duck, pg) -> None:
    sql = """SELECT DATE '2026-03-02' AS d, TIMESTAMP '2026-03-02 09:30' AS t, 7 AS i, 1.5::DOUBLE PRECISION AS f,
                    'x' AS s, true AS b, ['a', 'b']::VARCHAR[] AS l, CAST(NULL AS INTEGER) AS n
             UNION ALL
             SELECT DATE '2026-03-03', TIMESTAMP '2026-03-03 10:00', 8, 2.5, 'y', false, []::VARCHAR[], 4"""
    pg_sql = sql.replace("['a', 'b']::VARCHAR[]", "ARRAY['a', 'b']::VARCHAR[]").replace("[]::VARCHAR[]", "'{}'::VARCHAR[]")
    expected, got = duck.execute(sql).df(), pg.execute(pg_sql).df()
    assert list(got.columns) == list(expected.columns)
    for column in ("d", "t", "f", "s", "b", "l"):
        assert got[column].dtype == expected[column].dtype, column
    assert got.i.dtype.kind == expected.i.dtype.kind == "i" and str(got.n.dtype) == "Int64"
    assert got.d.tolist() == expected.d.tolist() and got.t.tolist() == expected.t.tolist()
    assert [list(v) for v in got.l] == [list(v) for v in expected.l] and isinstance(got.l[0], np.ndarray)
    empty = pg.execute("SELECT DATE '2026-03-02' AS d, 1 AS i WHERE false").df()
    assert empty.empty and str(empty.d.dtype) == "datetime64[us]" and list(empty.columns) == ["d", "i"]


def test_a_registered_frame_reads_as_a_table_until_replaced_or_unregistered(duck, pg) -> None:
    frame = pd.DataFrame(
        {
            "name": ["a", None],
            "n": [1, 2],
            "share": [0.25, np.nan],
            "seen_at": pd.to_datetime(["2026-03-02 09:00", None]),
            "day": [DAY, DAY],
            "tags": [["x", "y"], []],
            "detail": [{"k": 1}, {"k": 2}],
        }
    )
    sql = "SELECT name, n, share, seen_at, day, tags FROM rows_in ORDER BY n"
    for con in (duck, pg):
        con.register("rows_in", frame)
    expected = [("a", 1, 0.25, datetime(2026, 3, 2, 9), DAY, ["x", "y"]), (None, 2, None, None, DAY, [])]
    assert pg.execute(sql).fetchall() == duck.execute(sql).fetchall() == expected
    assert pg.execute("SELECT detail FROM rows_in ORDER BY n").fetchall() == [({"k": 1},), ({"k": 2},)]
    pg.register("rows_in", frame.head(1))
    assert pg.execute("SELECT count(*) FROM rows_in").fetchone() == (1,)
    pg.unregister("rows_in")
    with pytest.raises(psycopg.errors.UndefinedTable):
        pg.execute("SELECT * FROM rows_in")


def test_transactions_commit_or_roll_back_and_statements_outside_commit_alone(pg, postgres_dsn: str) -> None:
    with pytest.raises(RuntimeError), transaction(pg):
        insert_rows(pg, "suppression", _suppression(["a@x.com"]))
        pg.execute("UPDATE raw.suppression SET reason = 'complaint'")
        raise RuntimeError("the stage failed")
    with transaction(pg):
        insert_rows(pg, "suppression", _suppression(["b@x.com"]))
        with pytest.raises(psycopg.errors.UniqueViolation), transaction(pg):  # a savepoint: the outer block survives
            insert_rows(pg, "suppression", _suppression(["b@x.com"]))
    pg.execute("INSERT INTO raw.suppression SELECT 'c@x.com', reason, source, partition_day, added_at FROM raw.suppression")
    with psycopg.connect(postgres_dsn) as other:  # another session sees exactly what was committed
        assert other.execute("SELECT email FROM raw.suppression ORDER BY 1").fetchall() == [("b@x.com",), ("c@x.com",)]


def test_hold_shares_one_session_and_connect_chooses_the_engine_by_url(tmp_path: Path, postgres_dsn: str) -> None:
    file = tmp_path / "warehouse.duckdb"
    with hold(file, url=postgres_dsn):
        with connect(file, url=postgres_dsn) as first, connect(file, url=postgres_dsn, read_only=True) as second:
            assert isinstance(first, PgConnection) and first.connection is second.connection
            first.execute("CREATE TEMPORARY TABLE marker (x INTEGER)")
            assert second.execute("SELECT count(*) FROM marker").fetchone() == (0,)
        with connect(file, url=postgres_dsn) as again:
            assert again.execute("SELECT count(*) FROM marker").fetchone() == (0,)  # the session stayed open
    assert not file.exists()  # the PostgreSQL warehouse never touches the file
    with connect(file, url=postgres_dsn, read_only=True) as reader:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            insert_rows(reader, "suppression", _suppression(["a@x.com"]))
    with connect(file) as duck:
        assert isinstance(duck, duckdb.DuckDBPyConnection)


def test_the_resource_opens_the_url_from_the_environment_without_putting_it_in_its_config(
    tmp_path: Path, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACTORY_HOME", str(tmp_path))
    monkeypatch.setenv("FACTORY_WAREHOUSE_URL", postgres_dsn)
    resource = FactoryResource.from_paths(Paths.from_env())
    assert isinstance(resource.warehouse_url, dg.EnvVar) and resource.warehouse_url.env_var_name == "FACTORY_WAREHOUSE_URL"
    assert resource.paths.warehouse_url == postgres_dsn
    with resource.warehouse() as con:
        assert isinstance(con, PgConnection)
        assert insert_rows(con, "suppression", _suppression(["a@x.com"])) == 1
    with FactoryResource.from_paths(Paths.under(tmp_path)).warehouse() as con:
        assert isinstance(con, duckdb.DuckDBPyConnection)
