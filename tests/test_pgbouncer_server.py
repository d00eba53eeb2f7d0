"""The tests' PgBouncer: it pools, and it finds a port of its own when the free one it was given is taken first."""

from __future__ import annotations

import socket

import psycopg
import pytest
from pgbouncer_server import pooler
from postgres_server import server_sessions

from factory_dagster.warehouse import pg_server


def test_a_taken_port_is_retried_and_client_sessions_share_server_connections(
    postgres_server: pg_server.PostgresServer, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = postgres_dsn.rsplit("/", 1)[1]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        # Another process takes the first "free" port before PgBouncer binds it, and answers connections there.
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        ports = iter([squatter.getsockname()[1], pg_server.free_port()])
        monkeypatch.setattr(pg_server, "free_port", lambda: next(ports))
        with pooler(postgres_server) as port:
            assert port != squatter.getsockname()[1]
            for _ in range(20):
                with psycopg.connect(f"postgresql://{pg_server.SUPERUSER}@127.0.0.1:{port}/{database}") as con:
                    assert con.execute("SELECT 1").fetchone() == (1,)
    assert server_sessions(postgres_dsn) <= 2  # the pooler's one server connection for 20 client sessions, and this one
