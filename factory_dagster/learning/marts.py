"""Reads of the dbt marts that the line's decisions depend on.

Before dbt has ever built (a brand-new warehouse), the marts do not exist yet and
the readers answer as if nothing had been learned.
"""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd

from factory_dagster.warehouse.store import fetch_one

_PERFORMANCE_COLUMNS = ["segment", "arm_id", "angle", "sends", "replies"]


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        fetch_one(
            con, "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?", [schema, table]
        )[0]
    )


def segment_arm_performance(con: duckdb.DuckDBPyConnection, campaign_id: str) -> pd.DataFrame:
    """Sends and replies per segment and arm, from `marts.segment_arm_performance`."""
    if not _table_exists(con, "marts", "segment_arm_performance"):
        return pd.DataFrame(columns=_PERFORMANCE_COLUMNS)
    return con.execute(
        """SELECT segment, arm_id, any_value(angle) AS angle, sum(sends)::INTEGER AS sends, sum(replies)::INTEGER AS replies
           FROM marts.segment_arm_performance WHERE campaign_id = ? GROUP BY segment, arm_id ORDER BY segment, arm_id""",
        [campaign_id],
    ).df()


def segment_angle_performance(con: duckdb.DuckDBPyConnection, campaign_id: str) -> pd.DataFrame:
    """The same, summed over prompt versions and models: what the planner sees."""
    perf = segment_arm_performance(con, campaign_id)
    return perf.groupby(["segment", "angle"], as_index=False)[["sends", "replies"]].sum()


def halt_reason(con: duckdb.DuckDBPyConnection, campaign_id: str, day: date) -> str | None:
    """Why `marts.anomalies` says sending must halt on `day`, or None."""
    if not _table_exists(con, "marts", "anomalies"):
        return None
    row = fetch_one(
        con,
        """SELECT complaint_spike, bounce_spike, complaint_rate_7d, bounce_rate_7d, sends_7d
           FROM marts.anomalies WHERE campaign_id = ? AND day = ? AND halt_sending""",
        [campaign_id, day],
    )
    if row is None:
        return None
    complaint_spike, bounce_spike, complaint_rate, bounce_rate, sends = row
    spikes = [name for name, flag in (("complaint", complaint_spike), ("bounce", bounce_spike)) if flag]
    return (
        f"{' and '.join(spikes)} spike over the last 7 days: complaint rate {complaint_rate:.3%}, "
        f"bounce rate {bounce_rate:.3%} on {sends} sends"
    )
