"""Send holds: a day's messages kept back until a person has looked at them.

The sampled premium audit places a hold when too many of the day's audited messages
fail; the outbox sends nothing from a held day, on that day or later, until an operator
releases it (`factory holds release`).
"""

from __future__ import annotations

from datetime import date

import duckdb

from factory_dagster.run_context import RunContext, utcnow


def hold_day(con: duckdb.DuckDBPyConnection, run: RunContext, reason: str) -> None:
    """Hold the run's day (a re-run that fails again keeps, and refreshes, the hold)."""
    con.execute(
        """INSERT INTO raw.send_holds (partition_day, campaign_id, run_id, reason, held_at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (partition_day, campaign_id) DO UPDATE SET run_id = excluded.run_id, reason = excluded.reason,
               held_at = excluded.held_at, released_at = NULL, released_by = NULL, release_reason = NULL""",
        [run.partition_day, run.campaign_id, run.run_id, reason, utcnow()],
    )


def release_day(con: duckdb.DuckDBPyConnection, day: date, campaign_id: str, actor: str, reason: str) -> bool:
    """Release a held day; False when there was no open hold."""
    if not reason.strip():
        raise ValueError("releasing a hold needs a reason")
    released = con.execute(
        """UPDATE raw.send_holds SET released_at = ?, released_by = ?, release_reason = ?
           WHERE partition_day = ? AND campaign_id = ? AND released_at IS NULL""",
        [utcnow(), actor, reason, day, campaign_id],
    ).fetchall()[0][0]
    return released > 0


def open_holds(con: duckdb.DuckDBPyConnection, campaign_id: str) -> list[tuple[date, str]]:
    return con.execute(
        "SELECT partition_day, reason FROM raw.send_holds WHERE campaign_id = ? AND released_at IS NULL ORDER BY partition_day",
        [campaign_id],
    ).fetchall()
