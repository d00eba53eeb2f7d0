"""A real PostgreSQL for the tests: Debian's server binaries, one throwaway cluster per pytest process.

Why one per process and not one shared over a lock file: a cluster starts in about 1 s (initdb, fsync off) and only
the xdist workers that run a test asking for it pay that, while sharing one would need a last-one-out owner to stop
it. Each test gets a fresh database of it (`postgres_dsn`, some 30 ms), so tests never see each other's rows.
The server runs as `factory-pg` when the tests run as root (factory_dagster/warehouse/pg_server.py says why).

Without PostgreSQL these tests fail with what to install (`make system-deps` installs it); they never skip.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from factory_dagster.warehouse import pg_server
from factory_dagster.warehouse.store import connect


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[pg_server.PostgresServer]:
    """A running throwaway cluster on a free 127.0.0.1 port, stopped and deleted at the end of the session."""
    try:
        server = pg_server.start(fast=True)
    except pg_server.PostgresServerError as exc:
        pytest.fail(f"the PostgreSQL tests need a PostgreSQL server on this machine: {exc}", pytrace=False)
    try:
        yield server
    finally:
        pg_server.stop(server, remove=True)


def new_database(server: pg_server.PostgresServer, prefix: str = "test", template: str | None = None) -> str:
    """The name of a new database of `server`, empty or a copy of `template`, kept until the server stops (for a
    module's fixture, which the per-test `postgres_dsn` would drop between tests)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    return name


@contextmanager
def fresh_database(server: pg_server.PostgresServer, template: str | None = None) -> Iterator[str]:
    """The DSN of a new database of `server` (empty, or a copy of `template`), dropped afterwards (for fixtures of
    any scope)."""
    name = new_database(server, template=template)
    try:
        yield server.dsn(name)
    finally:
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def server_sessions(dsn: str) -> int:
    """How many sessions the server has started for the database of `dsn` since it was created (pg_stat_database)."""
    with psycopg.connect(dsn) as con:
        (sessions,) = con.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return sessions


@pytest.fixture
def postgres_dsn(postgres_server: pg_server.PostgresServer) -> Iterator[str]:
    """The DSN of a new empty database for one test, dropped afterwards."""
    with fresh_database(postgres_server) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def postgres_raw_schema_template(postgres_server: pg_server.PostgresServer) -> str:
    """A database in which the store made the raw schema, never connected to again: `CREATE DATABASE ... TEMPLATE`
    copies it for each test that runs on both engines (`warehouse_engines.engine_url`) in a fraction of the time the
    store's DDL takes. Tests of the schema's creation and migration use the empty `postgres_dsn`."""
    name = new_database(postgres_server, "raw_schema")
    with connect(Path("unused.duckdb"), url=postgres_server.dsn(name)):
        pass
    return name


@pytest.fixture
def postgres_raw_schema_dsn(postgres_server: pg_server.PostgresServer, postgres_raw_schema_template: str) -> Iterator[str]:
    """The DSN of a new database holding the empty raw schema, for one test, dropped afterwards."""
    with fresh_database(postgres_server, postgres_raw_schema_template) as dsn:
        yield dsn


def wait_until_a_session_waits(url: str, thread: threading.Thread, what: str, timeout_s: float, key: int | None = None) -> None:
    """Until a session of the server at `url` waits for an advisory lock (`key`: that one, which pg_locks shows as
    objid), failing with `what` once `thread`, which should be the one waiting, has ended or `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    with psycopg.connect(url, autocommit=True) as con:
        while not con.execute(f"{query} AND (%(key)s::bigint IS NULL OR objid = %(key)s::bigint)", {"key": key}).fetchone()[0]:
            assert time.monotonic() < deadline and thread.is_alive(), what
            time.sleep(0.05)
