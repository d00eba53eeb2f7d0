"""A local PostgreSQL cluster of Debian's own binaries, for the tests and for development.

Why: the PostgreSQL warehouse (`FACTORY_WAREHOUSE_URL`) is tested against a real server, and a
developer needs one without a system service or a container. `start` runs `initdb` into a folder
of its own (once) and `pg_ctl start` on 127.0.0.1 with the unix socket in that folder, trust
authentication on loopback only, and durability off where asked (`fast=True`: a throwaway cluster
for tests, fsync off). PostgreSQL refuses to run as root, so as root the server runs as the system
user `factory-pg` (created with `useradd --system` on first use) and the folder is chowned to it;
otherwise it runs as the current user. `stop` stops it, and removes a throwaway folder.

    factory postgres start [--dir DATA/postgres] [--port 54320]   # prints the DSN
    factory postgres stop [--dir DATA/postgres]
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from factory_dagster import file_lock
from factory_dagster.settings import Paths

SERVER_USER = "factory-pg"  # the system user the server runs as when we are root
USERADD_LOCK = Path(tempfile.gettempdir()) / "factory-pg-useradd.lock"  # see system_user
SUPERUSER = "factory"  # the cluster's superuser role (trust authentication: no password)
DATABASE = "factory"
DEFAULT_PORT = 54320  # beside, not on, a system PostgreSQL's 5432
INSTALL_HINT = (
    "PostgreSQL's server programs (initdb, pg_ctl, postgres) were not found: run `make system-deps` as root "
    "(apt-get install postgresql), or install PostgreSQL's server from your system's packages"
)


class PostgresServerError(RuntimeError):
    """The local cluster could not be set up, started or stopped; the message says why and where its log is."""


@dataclass(frozen=True)
class PostgresServer:
    """A running local cluster: where it lives, its port, and how to reach it."""

    folder: Path  # holds data/ (the cluster), the unix socket and server.log
    port: int
    bin_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_file(self) -> Path:
        return self.folder / "server.log"

    def dsn(self, database: str = DATABASE) -> str:
        """A libpq URL for one database of the cluster (trust authentication: no password in it)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"


def _candidate_bin_dirs() -> list[Path]:
    candidates: list[Path] = []
    if os.environ.get("FACTORY_PG_BIN"):
        candidates.append(Path(os.environ["FACTORY_PG_BIN"]))
    if shutil.which("pg_config"):
        result = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(
        (Path(p) for p in versions), key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)], reverse=True
    )
    if shutil.which("initdb"):
        candidates.append(Path(os.path.realpath(shutil.which("initdb"))).parent)
    return candidates


def find_bin_dir(candidates: list[Path] | None = None) -> Path:
    """The folder of initdb, pg_ctl and postgres: `FACTORY_PG_BIN`, `pg_config --bindir`, Debian's
    /usr/lib/postgresql/<version>/bin (newest first; off the PATH), or where `initdb` on the PATH points."""
    for folder in _candidate_bin_dirs() if candidates is None else candidates:
        if all(os.access(folder / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise PostgresServerError(INSTALL_HINT)


def server_user() -> pwd.struct_passwd | None:
    """The user to run the server as: None for ourselves, else `factory-pg` (created when missing) when we are root."""
    if os.geteuid() != 0:
        return None
    return system_user(SERVER_USER)


def system_user(name: str, lock_file: Path = USERADD_LOCK) -> pwd.struct_passwd:
    """The system user `name`, created (`useradd --system`) if missing.

    Why the lock: two `useradd` at once (two xdist workers starting their servers) both succeed on Debian, each
    picking its own uid, and the later one's /etc/passwd wins: the other process then runs initdb as a uid that no
    longer exists ("could not look up effective user ID"). Everyone who creates the user here takes the lock and looks
    again under it."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    with file_lock.exclusive(lock_file):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        result = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
            + ["--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise PostgresServerError(
                f"PostgreSQL refuses to run as root and `useradd {name}` failed: {result.stderr.strip()}"
            ) from None


def _run_as(
    user: pwd.struct_passwd | None, command: list[str], folder: Path, timeout_s: float = 60.0
) -> subprocess.CompletedProcess:
    extra = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C", "HOME": str(folder)}
    return subprocess.run(
        command, cwd=folder, env=environment, capture_output=True, text=True, timeout=timeout_s, check=False, **extra
    )


def _check_reachable(folder: Path, user: pwd.struct_passwd) -> None:
    """The server user must be able to walk down to its folder (pytest's own tmp folders are 0700 root, for one)."""
    for parent in reversed(folder.parents):
        st = parent.stat()
        can = (
            st.st_mode & 0o001
            or (st.st_uid == user.pw_uid and st.st_mode & 0o100)
            or (st.st_gid == user.pw_gid and st.st_mode & 0o010)
        )
        if not can:
            raise PostgresServerError(
                f"the server runs as {user.pw_name}, who cannot enter {parent} (mode {st.st_mode & 0o777:o}): "
                "put the cluster's folder somewhere it can reach, such as below /tmp or the project's data folder"
            )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _settings(port: int, socket_dir: Path, fast: bool) -> str:
    lines = [
        "# written by factory_dagster/warehouse/pg_server.py",
        "listen_addresses = '127.0.0.1'",
        f"port = {port}",
        f"unix_socket_directories = '{socket_dir}'",
        "max_connections = 50",
        "shared_buffers = 32MB",
        "timezone = 'UTC'",
    ]
    if fast:  # a throwaway cluster: no durability, nothing to wait for
        lines += ["fsync = off", "synchronous_commit = off", "full_page_writes = off", "max_wal_size = 256MB"]
    return "\n".join(lines) + "\n"


def _initdb(bin_dir: Path, user: pwd.struct_passwd | None, folder: Path) -> None:
    command = [
        str(bin_dir / "initdb"),
        "--pgdata",
        str(folder / "data"),
        "--username",
        SUPERUSER,
        "--auth-local=trust",
        "--auth-host=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    ]
    result = _run_as(user, command, folder)
    if result.returncode != 0:
        raise PostgresServerError(f"initdb into {folder / 'data'} failed: {(result.stderr or result.stdout).strip()}")


def _pg_ctl(server: PostgresServer, user: pwd.struct_passwd | None, *arguments: str) -> subprocess.CompletedProcess:
    command = [str(server.bin_dir / "pg_ctl"), "--pgdata", str(server.data_dir), *arguments]
    return _run_as(user, command, server.folder, timeout_s=90.0)


def start(folder: Path | str | None = None, port: int | None = None, fast: bool = False) -> PostgresServer:
    """Start a cluster in `folder` (a new temporary one when None), creating it there on first use, and wait until it
    accepts connections; the database `factory` exists afterwards. `port` None takes a free one."""
    bin_dir = find_bin_dir()
    user = server_user()
    if folder is None:  # not under pytest's 0700 tmp folders: the server user must be able to reach it
        folder = Path(tempfile.mkdtemp(prefix="factory-pg-"))
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if len(str(folder / ".s.PGSQL.00000")) > 100:
        raise PostgresServerError(f"{folder} is too long a path for PostgreSQL's unix socket (at most about 100 characters)")
    if user:
        _check_reachable(folder, user)
        os.chown(folder, user.pw_uid, user.pw_gid)
    if not (folder / "data" / "PG_VERSION").exists():
        _initdb(bin_dir, user, folder)
    for attempt in range(3):  # a free port can be taken between the probe and the server's bind: try another
        chosen = port or free_port()
        server = PostgresServer(folder, chosen, bin_dir)
        conf = server.data_dir / "factory.conf"
        conf.write_text(_settings(chosen, folder, fast))
        if user:
            os.chown(conf, user.pw_uid, user.pw_gid)
        if "include_if_exists = 'factory.conf'" not in (server.data_dir / "postgresql.conf").read_text():
            with open(server.data_dir / "postgresql.conf", "a") as handle:
                handle.write("\ninclude_if_exists = 'factory.conf'\n")
        result = _pg_ctl(server, user, "start", "--wait", "--timeout", "60", "--log", str(server.log_file), "--silent")
        if result.returncode == 0:
            _create_database(server)
            return server
        log = server.log_file.read_text(errors="replace")[-2000:] if server.log_file.exists() else ""
        if port or "could not bind" not in log or attempt == 2:
            raise PostgresServerError(
                f"pg_ctl start of {server.data_dir} on port {chosen} failed: {result.stderr.strip()}\n{log}"
            )
    raise AssertionError("unreachable")


def _create_database(server: PostgresServer) -> None:
    import psycopg  # noqa: PLC0415  (only a started server needs the driver)

    with psycopg.connect(server.dsn("postgres"), autocommit=True, connect_timeout=10) as con:
        if con.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone() is None:
            con.execute(f"CREATE DATABASE {DATABASE}")


def running(folder: Path | str) -> PostgresServer | None:
    """The cluster running in `folder`, from its postmaster.pid (line 1 the pid, line 4 the port), or None; a pid
    file a killed server left behind does not count (pg_ctl start copes with it)."""
    folder = Path(folder).resolve()
    pid_file = folder / "data" / "postmaster.pid"
    if not pid_file.exists():
        return None
    lines = pid_file.read_text().splitlines()
    if len(lines) < 4:
        return None
    try:
        os.kill(int(lines[0]), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, and someone else's
    return PostgresServer(folder, int(lines[3]), find_bin_dir())


def stop(server: PostgresServer, remove: bool = False) -> None:
    """Stop the cluster (immediately when it is thrown away) and, with `remove`, delete its folder."""
    user = server_user()
    mode = "immediate" if remove else "fast"
    result = _pg_ctl(server, user, "stop", "--wait", "--timeout", "60", "--mode", mode, "--silent")
    if result.returncode != 0 and (server.data_dir / "postmaster.pid").exists():
        raise PostgresServerError(f"pg_ctl stop of {server.data_dir} failed: {result.stderr.strip()}")
    if remove:
        shutil.rmtree(server.folder, ignore_errors=True)
        deadline = time.monotonic() + 5
        while server.folder.exists() and time.monotonic() < deadline:  # a last server process may still be writing
            time.sleep(0.05)
            shutil.rmtree(server.folder, ignore_errors=True)


# ---- factory postgres start|stop|status ----


def _start_command(args: argparse.Namespace, paths: Paths) -> int:
    folder = Path(args.dir) if args.dir else paths.home / "postgres"
    server = running(folder)
    if server is None:
        server = start(folder, args.port, fast=False)
        print(f"PostgreSQL started in {server.folder} (log: {server.log_file})")
    else:
        print(f"PostgreSQL already runs in {server.folder}")
    print(f"FACTORY_WAREHOUSE_URL={server.dsn()}")
    return 0


def _stop_command(args: argparse.Namespace, paths: Paths) -> int:
    folder = Path(args.dir) if args.dir else paths.home / "postgres"
    server = running(folder)
    if server is None:
        print(f"no PostgreSQL runs in {folder}")
        return 0
    stop(server)
    print(f"PostgreSQL in {folder} stopped (its data stays; `factory postgres start` starts it again)")
    return 0


def _status_command(args: argparse.Namespace, paths: Paths) -> int:
    folder = Path(args.dir) if args.dir else paths.home / "postgres"
    server = running(folder)
    print(f"PostgreSQL runs in {folder}: FACTORY_WAREHOUSE_URL={server.dsn()}" if server else f"no PostgreSQL runs in {folder}")
    return 0 if server else 1


def register(commands: argparse._SubParsersAction) -> None:
    """`factory postgres start|stop|status`: a local development cluster in the data folder (postgres/)."""
    parser = commands.add_parser("postgres", help="a local PostgreSQL server for the PostgreSQL warehouse (development)")
    actions = parser.add_subparsers(dest="postgres_command", required=True)
    for name, handler, text in (
        ("start", _start_command, "start it (creating it on first use) and print its FACTORY_WAREHOUSE_URL"),
        ("stop", _stop_command, "stop it; its data stays"),
        ("status", _status_command, "say whether it runs, and its URL"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--dir", help="the cluster's folder (default: <data folder>/postgres)")
        if name == "start":
            action.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
        action.set_defaults(run=handler)
