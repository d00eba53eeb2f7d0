"""A real PgBouncer in front of the test cluster, in session mode, as docs/deployment.md advises for Dagster's database.

Why: dagster-postgres opens a connection per query outside the webserver (its engines use SQLAlchemy's NullPool), so
without a pooler every query of the daemon, the code server and each run worker makes the server start a backend
process. In session mode PgBouncer hands each short client session a server connection it keeps open, and resets it
(`DISCARD ALL`) when the client leaves. Transaction mode would also pool, but it does not support session-level SET,
and Dagster's webserver sets its `statement_timeout` that way on its pooled connection (dagster#33416).

Debian's `pgbouncer` (installed by `make system-deps`) refuses to run as root: as root it runs as the cluster's own
system user (`-u`), like the server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from factory_dagster.warehouse import pg_server

CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")  # Debian's; off a non-root user's PATH
POOL_SIZE = 10  # server connections per database and user: far below the cluster's max_connections (50)
START_SECONDS = 20
START_ATTEMPTS = 3  # a free port can be taken by another process before PgBouncer binds it


def find_pgbouncer() -> str:
    found = shutil.which("pgbouncer") or next((c for c in CANDIDATES if os.access(c, os.X_OK)), None)
    if found is None:
        raise pg_server.PostgresServerError(
            "PgBouncer was not found: run `make system-deps` as root, or install Debian's `pgbouncer`"
        )
    return found


def config(server: pg_server.PostgresServer, port: int, folder: Path, log_file: Path) -> str:
    """pgbouncer.ini: every database of `server`, session pooling, the cluster's trusted superuser."""
    return "\n".join(
        [
            "[databases]",
            f"* = host=127.0.0.1 port={server.port}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {folder / 'userlist.txt'}",
            "pool_mode = session",
            f"default_pool_size = {POOL_SIZE}",
            "max_client_conn = 200",
            f"logfile = {log_file}",
            # libpq clients (psycopg2 under SQLAlchemy) may send these at startup; PgBouncer would refuse them.
            "ignore_startup_parameters = extra_float_digits,options",
            "",
        ]
    )


def _listening(port: int, process: subprocess.Popen, log_file: Path) -> bool:
    """Wait until PgBouncer logs that it listens on `port` (a connection alone could reach another process that took
    the port first). False when it exited first, as it does when the port was taken: the caller tries another."""
    deadline = time.monotonic() + START_SECONDS
    while process.poll() is None:
        if log_file.exists() and f"listening on 127.0.0.1:{port}" in log_file.read_text(encoding="utf-8"):
            return True
        if time.monotonic() > deadline:
            raise pg_server.PostgresServerError(f"pgbouncer did not listen on port {port} within {START_SECONDS}s")
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def pooler(server: pg_server.PostgresServer) -> Iterator[int]:
    """PgBouncer on a free 127.0.0.1 port (yielded) in front of `server`; stopped and its folder removed afterwards.

    Its folder is a new one in the temporary directory, as the cluster's is: a test's own tmp_path is private to root,
    and the pooler's user must read its files there."""
    binary = find_pgbouncer()
    user = pg_server.server_user()
    folder = Path(tempfile.mkdtemp(prefix="factory-pgbouncer-"))
    try:
        (folder / "userlist.txt").write_text(f'"{pg_server.SUPERUSER}" ""\n', encoding="utf-8")
        for _ in range(START_ATTEMPTS):
            port = pg_server.free_port()
            log_file = folder / f"pgbouncer_{port}.log"
            (folder / "pgbouncer.ini").write_text(config(server, port, folder, log_file), encoding="utf-8")
            command = [binary, str(folder / "pgbouncer.ini")]
            if user is not None:
                for path in (folder, *folder.iterdir()):
                    os.chown(path, user.pw_uid, user.pw_gid)
                command[1:1] = ["-u", user.pw_name]
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            try:
                if _listening(port, process, log_file):
                    yield port
                    return
            finally:
                process.terminate()  # PgBouncer's immediate shutdown: it closes every connection and exits
                process.wait(timeout=10)
        log = log_file.read_text(encoding="utf-8") if log_file.exists() else ""
        raise pg_server.PostgresServerError(f"pgbouncer exited before listening, {START_ATTEMPTS} times:\n{log[-2000:]}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
