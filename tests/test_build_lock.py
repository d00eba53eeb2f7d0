"""Readers of the dbt relations and a dbt build take turns on the PostgreSQL warehouse (store.shared and the
`dbt-build` lock), on a real PostgreSQL: a build replacing a table drops the views on it until it makes them again,
and a station reading one meanwhile must wait, not fail or see "nothing built yet"."""

from __future__ import annotations

import threading

from postgres_server import wait_until_a_session_waits

from factory_dagster.improve.store import arm_count_rows
from factory_dagster.warehouse.store import DBT_BUILD_LOCK, connect, exclusive

VIEW = "CREATE VIEW intermediate.int_experiment_arm_counts AS SELECT experiment_id, role, arm, sends FROM intermediate.base"


def _first_build(con) -> None:
    """The relations a first build leaves: a table, and the view the decision step reads over it."""
    con.execute("CREATE SCHEMA intermediate")
    con.execute("CREATE TABLE intermediate.base AS SELECT 'exp-1' AS experiment_id, 'champion' AS role, 'a' AS arm, 1 AS sends")
    con.execute(VIEW)


def _built(con, sends: int) -> None:
    """What dbt's table materialization does: the new table in place of the old, whose drop takes the view with it."""
    con.execute(
        f"CREATE TABLE intermediate.base_new AS SELECT 'exp-1' AS experiment_id, 'champion' AS role, 'a' AS arm, {sends} AS sends"
    )
    con.execute("ALTER TABLE intermediate.base RENAME TO base_old")
    con.execute("ALTER TABLE intermediate.base_new RENAME TO base")
    con.execute("DROP TABLE intermediate.base_old CASCADE")


def test_a_reader_waits_for_the_build_and_reads_the_relations_it_made(postgres_dsn, tmp_path) -> None:
    with connect(tmp_path / "unused.duckdb", url=postgres_dsn) as build:
        _first_build(build)
        read: list[object] = []

        def reader() -> None:
            with connect(tmp_path / "unused.duckdb", url=postgres_dsn) as con:
                read.append(arm_count_rows(con, "exp-1"))

        with exclusive(build, DBT_BUILD_LOCK):
            _built(build, sends=2)  # the view is gone now
            thread = threading.Thread(target=reader)
            thread.start()
            wait_until_a_session_waits(postgres_dsn, thread, "the other session waits for the lock", 30)
            build.execute(VIEW)
        thread.join(timeout=30)
    assert read == [[{"experiment_id": "exp-1", "role": "champion", "arm": "a", "sends": 2}]]  # not None: "never built"


def test_a_build_waits_for_a_transaction_that_read_the_relations_to_end(postgres_dsn, tmp_path) -> None:
    """Inside a transaction the shared lock lasts until it ends, as the transaction's locks on what it read do."""
    with connect(tmp_path / "unused.duckdb", url=postgres_dsn) as reader:
        _first_build(reader)
        built = threading.Event()

        def build() -> None:
            with connect(tmp_path / "unused.duckdb", url=postgres_dsn) as con, exclusive(con, DBT_BUILD_LOCK):
                built.set()

        with reader.transaction():
            assert arm_count_rows(reader, "exp-1")[0]["sends"] == 1
            thread = threading.Thread(target=build)
            thread.start()
            wait_until_a_session_waits(postgres_dsn, thread, "the other session waits for the lock", 30)
            assert not built.is_set()
        thread.join(timeout=30)
        assert built.is_set()
        # Outside a transaction the lock is released when the read returns.
        assert arm_count_rows(reader, "exp-1")[0]["sends"] == 1
        (held,) = reader.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchall()[0]
        assert held == 0
