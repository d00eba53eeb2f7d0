"""The local Dagster instance's SQLite run history, written without an fsync per event.

Why: Dagster's SQLite storage opens a connection for every event it records and commits it
alone, and in WAL mode every commit and every last close (a checkpoint) waits for the disk.
A demo day records about 270 events, so on a 2-core VM whose disk is shared the day's run
spent from 1.5 s (idle disk) to over 10 s (busy disk) waiting in `fsync`, more than all of
the line's own work. With `PRAGMA synchronous=OFF` SQLite hands the writes to the operating
system and goes on.

What it costs: a killed process loses nothing (the data is in the kernel's page cache), but a
power cut or kernel crash can lose or damage the last moments of *run history*. Nothing the
line's guarantees rest on is here: leads, messages, sends and their idempotency keys live in
the DuckDB warehouse and the outbox, which keep their fsyncs. A production deployment keeps
its instance on PostgreSQL, which this does not touch. `FACTORY_DAGSTER_FSYNC=1` keeps
SQLite's default.
"""

from __future__ import annotations

import os
import sqlite3
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster._config import StringSource
from dagster._config.config_schema import UserConfigSchema
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

KEEP_FSYNC_ENV = "FACTORY_DAGSTER_FSYNC"
_HOMES: set[str] = set()


def write_without_fsync(dagster_home: Path) -> bool:
    """From now on, SQLite files this process opens under `dagster_home` skip fsync.

    Returns whether it applies (False when FACTORY_DAGSTER_FSYNC=1 keeps the default).
    """
    if os.environ.get(KEEP_FSYNC_ENV) == "1":
        return False
    if not _HOMES:
        event.listen(Engine, "connect", _relax_sync)
    _HOMES.add(str(Path(dagster_home).resolve()) + os.sep)
    return True


def _relax_sync(dbapi_connection: Any, _record: object) -> None:
    """SQLAlchemy's connect hook: relax only connections to a file under a registered home."""
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    databases = dbapi_connection.execute("PRAGMA database_list").fetchall()
    path = next((row[2] for row in databases if row[1] == "main"), "")
    if path and any(path.startswith(home) for home in _HOMES):
        dbapi_connection.execute("PRAGMA synchronous=OFF")


def for_local_instance(dagster_home: Path) -> bool:
    """Apply `write_without_fsync` when this process's Dagster instance is the data folder's own.

    Runs launched from the UI or by the schedule load the definitions in a fresh process, which
    learns of the instance only through DAGSTER_HOME.
    """
    current = os.environ.get("DAGSTER_HOME")
    if not current or Path(current).resolve() != Path(dagster_home).resolve():
        return False
    return write_without_fsync(dagster_home)


# --- The same SQLite files, opened once per process ------------------------------------------------------------------
#
# Why: Dagster's SQLite storages build a new SQLAlchemy engine and open (then close, checkpointing the WAL) a new SQLite
# connection for every event they record and every run record they read or write: a demo day's run made about 1,100 of
# them, a few milliseconds each. These classes keep one pooled engine per database file and are otherwise Dagster's
# own: the same files, schema and migrations, so `make ui` (which loads the same dagster.yaml) reads and writes them as
# before, and other processes see every commit at once (WAL mode).

_OPEN_SHARDS = 4  # the index shard and the few runs a process records or reads at a time


def _pooled_engine(conn_string: str) -> Engine:
    """An engine with SQLAlchemy's default pool for a SQLite file: a connection is checked out per use, then kept."""
    return create_engine(conn_string, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})


def _dispose_all(engines: OrderedDict[str, Engine]) -> None:
    while engines:
        engines.popitem()[1].dispose()


class PooledSqliteRunStorage(SqliteRunStorage):
    """Dagster's SQLite run storage (`history/runs.db`), with one engine for the file."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(conn_string, inst_data)
        self._engine = _pooled_engine(conn_string)
        weakref.finalize(self, self._engine.dispose)  # at exit too: closing checkpoints the WAL into the file

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's run-sharded SQLite event log (`history/runs/*.db`), with engines kept for the recent shards."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._tables_present: set[str] = set()
        super().__init__(base_dir, inst_data)
        weakref.finalize(self, _dispose_all, self._engines)  # at exit too: closing checkpoints the WAL into the file

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engines.get(shard)
            if engine is None:
                engine = self._engines[shard] = _pooled_engine(self.conn_string_for_shard(shard))
                while len(self._engines) > _OPEN_SHARDS:
                    self._engines.popitem(last=False)[1].dispose()
            else:
                self._engines.move_to_end(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        """Whether the index shard has the table, asked of the file once it is there.

        Dagster's storage asks before every asset check event, tag write and dynamic partition lookup (about 1,900
        times in a 5-day demo), and each time builds a new engine and opens a new connection to answer: 1.8 s of
        that demo. A table a migration added stays; one not there yet is asked for again.
        """
        if table_name not in self._tables_present and super().has_table(table_name):
            self._tables_present.add(table_name)
        return table_name in self._tables_present

    def _dispose_engines(self) -> None:
        with self._db_lock:
            _dispose_all(self._engines)

    def wipe(self) -> None:
        self._dispose_engines()  # the run shards' files are deleted: no connection may keep them open
        self._tables_present.clear()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._dispose_engines()


class PooledSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (runs, event logs, schedules) in the same files, each opened once per process.

    dagster.yaml: `storage: {custom: {module: factory_dagster.controls.run_history, class: PooledSqliteStorage,
    config: {base_dir: <DAGSTER_HOME>}}}`: in DAGSTER_HOME, Dagster's default storage keeps the same files.
    """

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self.base_dir = base_dir
        self._run_storage = PooledSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        DagsterStorage.__init__(self)

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {"base_dir": StringSource}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]) -> PooledSqliteStorage:
        return cls.from_local(config_value["base_dir"], inst_data=inst_data)
