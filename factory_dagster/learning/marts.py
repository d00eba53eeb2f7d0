"""Reads of the dbt marts that the line's decisions depend on.

Before dbt has ever built (a brand-new warehouse), the marts do not exist yet and
the readers answer as if nothing had been learned.
"""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd

from factory_dagster.warehouse.store import fetch_one, reads_dbt_relations

_PERFORMANCE_COLUMNS = ["segment", "arm_id", "angle", "sends", "replies", "positive_replies", "unsubscribes"]


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        fetch_one(
            con, "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?", [schema, table]
        )[0]
    )


_COUNTS = ("replies", "positive_replies", "unsubscribes")
LEAD_ATTRIBUTES = ("industry", "company_size", "seniority", "region")
_SEND_COLUMNS = ["segment", "arm_id", "angle", *LEAD_ATTRIBUTES, *_COUNTS]


# Every send made before $before, with its lead's attributes and whether a reply, a positive reply and an
# unsubscribe were known by then: the one definition of "known on the day" the performance reads share.
_KNOWN_SENDS = f"""
    SELECT o.send_id, o.segment, o.arm_id, o.angle, {", ".join(f"l.{a}" for a in LEAD_ATTRIBUTES)},
           coalesce(o.first_reply_known_day <= $before, false) AS replies,
           coalesce(o.first_positive_known_day <= $before, false) AS positive_replies,
           coalesce(o.first_unsubscribe_known_day <= $before, false) AS unsubscribes
    FROM intermediate.int_send_outcomes o LEFT JOIN raw.leads l USING (campaign_id, lead_id)
    WHERE o.campaign_id = $campaign AND o.partition_day < $before"""


@reads_dbt_relations
def known_send_outcomes(con: duckdb.DuckDBPyConnection, campaign_id: str, before: date) -> pd.DataFrame:
    """One row per send made before `before`, with its lead's attributes and whether a reply, a positive
    reply and an unsubscribe were known by then (the counts of `segment_arm_performance`, per send).

    Why per send: a segment split learns each part of a segment from its own leads' sends.
    """
    if not table_exists(con, "intermediate", "int_send_outcomes"):
        return pd.DataFrame(columns=_SEND_COLUMNS)
    known = con.execute(f"{_KNOWN_SENDS} ORDER BY o.send_id", {"campaign": campaign_id, "before": before}).df()
    return known[_SEND_COLUMNS]


def arm_performance(sends: pd.DataFrame) -> pd.DataFrame:
    """Per segment and arm: sends, and the replies, positive replies and unsubscribes known (of `known_send_outcomes`)."""
    if sends.empty:
        return pd.DataFrame(columns=_PERFORMANCE_COLUMNS)
    grouped = sends.groupby(["segment", "arm_id"], as_index=False, sort=True)
    out = grouped.agg(angle=("angle", "first"), sends=("angle", "size"), **{c: (c, "sum") for c in _COUNTS})
    return out.astype(dict.fromkeys(["sends", *_COUNTS], "int64"))[_PERFORMANCE_COLUMNS]


@reads_dbt_relations
def segment_arm_performance(con: duckdb.DuckDBPyConnection, campaign_id: str, before: date) -> pd.DataFrame:
    """Sends, replies, positive replies and unsubscribes per segment and arm, counting the sends made before `before`
    (`arm_performance` of `known_send_outcomes`, summed in DuckDB: the assign stage reads it every day).

    What the day's decisions learn from is what was known when the day began: the sends
    before it and the replies imported by its own observe stage at the latest. A re-run of
    the day sees the same figures (and so makes the same, cached, model calls), even though
    later days have since counted more sends and imported more replies.
    """
    if not table_exists(con, "intermediate", "int_send_outcomes"):
        return pd.DataFrame(columns=_PERFORMANCE_COLUMNS)
    counts = ", ".join(f"count(*) FILTER (WHERE {c})::BIGINT AS {c}" for c in _COUNTS)
    return con.execute(
        # min(angle): the arm id names its angle, so every row of the group has the same one (PostgreSQL 15 has no any_value)
        f"""SELECT segment, arm_id, min(angle) AS angle, count(*)::BIGINT AS sends, {counts}
            FROM ({_KNOWN_SENDS}) AS known GROUP BY segment, arm_id ORDER BY segment, arm_id""",
        {"campaign": campaign_id, "before": before},
    ).df()


def segment_angle_performance(con: duckdb.DuckDBPyConnection, campaign_id: str, before: date) -> pd.DataFrame:
    """The same, summed over prompt versions and models: what the planner sees."""
    perf = segment_arm_performance(con, campaign_id, before)
    return perf.groupby(["segment", "angle"], as_index=False)[["sends", "replies"]].sum()


@reads_dbt_relations
def halt_reason(con: duckdb.DuckDBPyConnection, campaign_id: str, day: date) -> str | None:
    """Why `marts.anomalies` says sending must halt on `day`, or None."""
    if not table_exists(con, "marts", "anomalies"):
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
