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
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

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
