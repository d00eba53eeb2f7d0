"""Which dbt build a campaign's run can reuse on the PostgreSQL warehouse (`raw.dbt_builds`).

Why: every campaign's daily run refreshes the marts after its own observe stage, and on PostgreSQL the runs of many
campaigns go at once while their builds take turns (the `dbt-build` lock). A build that started after a run's
observe stage had ended holds everything that stage wrote (and everything before it), so a run that was waiting for
the lock meanwhile reuses it instead of building the same relations again. Times are the database's clock, the one
clock every worker machine shares. Only whole-project builds that succeeded are recorded as reusable.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

import pandas as pd

from factory_dagster.warehouse.store import fetch_one, insert_rows

if TYPE_CHECKING:
    from factory_dagster.warehouse.store import Connection


@dataclass(frozen=True)
class Build:
    """One whole-project build: who ran it, when (database clock, naive UTC) and whether it passed."""

    build_id: str
    run_id: str
    campaign_id: str
    partition_day: date
    started_at: datetime
    finished_at: datetime
    success: bool


def database_now(con: Connection) -> datetime:
    """The database's clock now, naive UTC (clock_timestamp: the moment of the call, not of the transaction)."""
    return fetch_one(con, "SELECT CAST(clock_timestamp() AT TIME ZONE 'UTC' AS TIMESTAMP)")[0]


def covering_build(con: Connection, asked_at: datetime) -> Build | None:
    """The latest successful build that started at or after `asked_at`, if any: it saw every row committed then."""
    rows = con.execute(
        """SELECT build_id, run_id, campaign_id, partition_day, started_at, finished_at, success FROM raw.dbt_builds
           WHERE success AND started_at >= ? ORDER BY started_at DESC LIMIT 1""",
        [asked_at],
    ).fetchall()
    return Build(*rows[0]) if rows else None


def record_build(con: Connection, run_id: str, campaign_id: str, day: date, started_at: datetime, success: bool) -> Build:
    """Log a whole-project build that has just ended."""
    build = Build(uuid.uuid4().hex, run_id, campaign_id, day, started_at, database_now(con), success)
    insert_rows(con, "dbt_builds", pd.DataFrame([asdict(build)]))
    return build
