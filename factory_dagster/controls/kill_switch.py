"""The kill switch: while engaged, the send stage sends nothing.

Its history is `raw.kill_switch` (append-only): the latest row wins. The anomaly
guard engages it automatically; only a person releases it (CLI or Dagster job).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from factory_dagster.models.gateway import utcnow
from factory_dagster.warehouse.store import fetch_one


@dataclass(frozen=True)
class KillSwitchState:
    engaged: bool
    actor: str
    reason: str


def kill_switch_state(con: duckdb.DuckDBPyConnection) -> KillSwitchState:
    row = fetch_one(con, "SELECT engaged, actor, reason FROM raw.kill_switch ORDER BY changed_at DESC, rowid DESC LIMIT 1")
    return KillSwitchState(*row) if row else KillSwitchState(False, "default", "never engaged")


def set_kill_switch(con: duckdb.DuckDBPyConnection, engaged: bool, actor: str, reason: str) -> KillSwitchState:
    if not reason.strip():
        raise ValueError("a kill-switch change needs a reason")
    con.execute("INSERT INTO raw.kill_switch VALUES (?, ?, ?, ?)", [utcnow(), engaged, actor, reason])
    return KillSwitchState(engaged, actor, reason)
