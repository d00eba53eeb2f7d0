"""What the report shows, read from the warehouse into DataFrames (read-only, nothing written).

Each reader returns an empty frame with its columns when its mart or table does not exist yet
(a fresh warehouse, day 1), so the plots can say "no data yet" instead of failing. Counts are
summed over the chosen campaigns; `since`/`until` bound the days when the source has days.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from factory_dagster.warehouse.store import connect, fetch_one, reads_dbt_relations

# A send counts for the loop-vs-holdout comparison once its outcomes have had this many days to
# arrive: the same default as the dbt var `outcome_window_days` that marts.loop_lift uses.
OUTCOME_WINDOW_DAYS = 7

FUNNEL_COLUMNS = [
    "day",
    "leads_in",
    "sends",
    "delivered",
    "replies",
    "positive_replies",
    "booked",
    "bounces",
    "unsubscribes",
    "complaints",
    "cost_usd",
]
HOLDOUT_COLUMNS = ["day", "holdout", "sends", "positive_replies"]
TRAFFIC_COLUMNS = ["day", "arm", "leads"]
EXPERIMENT_COLUMNS = [
    "experiment_id",
    "campaign_id",
    "kind",
    "state",
    "arm",
    "role",
    "planned_sample_size",
    "mature_sends",
    "look_day",
    "look_mature_sends",
    "posterior_mean",
    "interval_low",
    "interval_high",
    "p_better",
    "decision",
]
COST_COLUMNS = ["stage", "model", "calls", "cost_usd"]
DRAFT_MODEL_COLUMNS = ["stage", "model", "leads", "accepted", "cost_usd", "mature_sends", "positive_replies"]
GATE_COLUMNS = ["violation_code", "drafts_flagged", "violations"]


class ReportInputError(ValueError):
    """The report was asked for something the warehouse does not hold (an unknown campaign, a bad --days)."""


@dataclass(frozen=True)
class ReportData:
    """Everything one report draws, already filtered to its campaigns and days."""

    warehouse: Path | str  # the DuckDB file, or the PostgreSQL warehouse's URL with its password masked
    warehouse_exists: bool
    campaigns: list[str]
    since: date | None
    until: date | None
    funnel: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FUNNEL_COLUMNS))
    holdout: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=HOLDOUT_COLUMNS))
    traffic: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TRAFFIC_COLUMNS))
    experiments: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EXPERIMENT_COLUMNS))
    costs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=COST_COLUMNS))
    draft_models: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=DRAFT_MODEL_COLUMNS))
    gate_violations: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=GATE_COLUMNS))
    drafts_gated: int = 0
    drafts_passed: int = 0


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = fetch_one(
        con, "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?", [schema, table]
    )
    return bool(row and row[0])


def _query(con: duckdb.DuckDBPyConnection, needs: list[str], columns: list[str], sql: str, params: dict) -> pd.DataFrame:
    """The query's frame, or an empty one with `columns` while a table it reads (schema.table) is missing."""
    if not all(table_exists(con, *name.split(".")) for name in needs):
        return pd.DataFrame(columns=columns)
    used = {name: value for name, value in params.items() if f"${name}" in sql}
    return con.execute(sql, used).df()


def warehouse_campaigns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every outreach campaign (with assignments, or with leads or sends in the daily KPIs), sorted. The content
    line's model spend also has daily KPI rows under its own id, but none of this report's figures: it is left out."""
    sources = [
        f"SELECT campaign_id FROM {name}{where}"
        for name, where in (("raw.assignments", ""), ("marts.daily_kpis", " WHERE leads_in > 0 OR sends > 0"))
        if table_exists(con, *name.split("."))
    ]
    if not sources:
        return []
    return [row[0] for row in con.execute(" UNION ".join(sources) + " ORDER BY 1").fetchall()]


def latest_day(con: duckdb.DuckDBPyConnection, campaigns: list[str]) -> date | None:
    """The last day with activity for the campaigns: what `--days N` counts back from."""
    sources = [
        f"SELECT max({column}) AS d FROM {name} WHERE campaign_id = ANY($campaigns::VARCHAR[])"
        for name, column in (("marts.daily_kpis", "day"), ("raw.assignments", "partition_day"))
        if table_exists(con, *name.split("."))
    ]
    if not sources or not campaigns:
        return None
    row = fetch_one(con, f"SELECT max(d) FROM ({' UNION ALL '.join(sources)}) AS days", {"campaigns": campaigns})
    return None if row is None or row[0] is None else pd.Timestamp(row[0]).date()


def choose_campaigns(known: list[str], campaign: str | None) -> list[str]:
    """The asked-for campaign, or every campaign the warehouse holds. An unknown one is an error
    naming the known ones (a typo would otherwise give an empty report that looks like day 1)."""
    if campaign is None:
        return known
    if known and campaign not in known:
        raise ReportInputError(f"campaign {campaign!r} is not in the warehouse; it holds: {', '.join(known)}")
    return [campaign]


FUNNEL_SQL = """
    WITH kpis AS (
        SELECT day, sum(leads_in) AS leads_in, sum(sends) AS sends, sum(replies) AS replies,
               sum(positive_replies) AS positive_replies, sum(booked) AS booked, sum(bounces) AS bounces,
               sum(unsubscribes) AS unsubscribes, sum(complaints) AS complaints, sum(cost_usd) AS cost_usd
        FROM marts.daily_kpis
        WHERE campaign_id = ANY($campaigns::VARCHAR[]) AND day BETWEEN $since AND $until
        GROUP BY day
    ),
    delivered AS (
        SELECT partition_day AS day, count(*) FILTER (WHERE delivered) AS delivered
        FROM intermediate.int_send_outcomes
        WHERE campaign_id = ANY($campaigns::VARCHAR[]) AND partition_day BETWEEN $since AND $until
        GROUP BY 1
    )
    SELECT kpis.day, leads_in, sends, coalesce(delivered.delivered, 0) AS delivered, replies, positive_replies, booked,
           bounces, unsubscribes, complaints, cost_usd
    FROM kpis LEFT JOIN delivered USING (day)
    ORDER BY kpis.day
"""

# Mature sends only, per send day and side: the same sends marts.loop_lift compares.
HOLDOUT_SQL = """
    SELECT sends.partition_day AS day, assignments.holdout, count(*) AS sends,
           count(*) FILTER (WHERE sends.positive_reply) AS positive_replies
    FROM intermediate.int_send_outcomes AS sends
    JOIN raw.assignments AS assignments USING (campaign_id, lead_id)
    WHERE assignments.holdout IS NOT NULL AND sends.days_since_send >= $window
      AND sends.campaign_id = ANY($campaigns::VARCHAR[]) AND sends.partition_day BETWEEN $since AND $until
    GROUP BY 1, 2
    ORDER BY 1, 2
"""

# Realised traffic: each day's assigned leads per arm; the holdout is one band of its own.
TRAFFIC_SQL = """
    SELECT partition_day AS day,
           CASE WHEN holdout THEN 'holdout (uniform baseline)'
                WHEN $many THEN campaign_id || ': ' || arm_id ELSE arm_id END AS arm,
           count(*) AS leads
    FROM raw.assignments
    WHERE campaign_id = ANY($campaigns::VARCHAR[]) AND partition_day BETWEEN $since AND $until
    GROUP BY 1, 2
    ORDER BY 1, 2
"""

# Experiments that ran at some point of the window, with their latest look.
EXPERIMENTS_SQL = f"""
    SELECT {", ".join(EXPERIMENT_COLUMNS)}
    FROM marts.experiment_results
    WHERE campaign_id = ANY($campaigns::VARCHAR[])
      AND (started_day IS NULL OR started_day <= $until)
      AND (concluded_day IS NULL OR concluded_day >= $since)
    ORDER BY experiment_id, role DESC, arm
"""

COSTS_SQL = """
    SELECT stage, model, sum(calls) AS calls, sum(cost_usd) AS cost_usd
    FROM marts.llm_costs
    WHERE campaign_id = ANY($campaigns::VARCHAR[]) AND day BETWEEN $since AND $until
    GROUP BY 1, 2
    ORDER BY cost_usd DESC
"""

# model_stage_quality has no days: the drafting models' own figures over all days so far.
DRAFT_MODELS_SQL = """
    SELECT stage, model, sum(leads) AS leads, sum(accepted) AS accepted, sum(cost_usd) AS cost_usd,
           sum(mature_sends) AS mature_sends, sum(positive_replies) AS positive_replies
    FROM marts.model_stage_quality
    WHERE campaign_id = ANY($campaigns::VARCHAR[])
    GROUP BY 1, 2
    ORDER BY stage, model
"""

GATE_VIOLATIONS_SQL = """
    SELECT violation_code, sum(drafts_flagged) AS drafts_flagged, sum(violations) AS violations
    FROM marts.gate_violations
    WHERE campaign_id = ANY($campaigns::VARCHAR[]) AND day BETWEEN $since AND $until
    GROUP BY 1
    ORDER BY drafts_flagged DESC, violation_code
"""

GATE_TOTALS_SQL = """
    SELECT coalesce(sum(drafts), 0), coalesce(sum(passed), 0)
    FROM marts.gate_metrics
    WHERE campaign_id = ANY($campaigns::VARCHAR[]) AND day BETWEEN $since AND $until
"""


@reads_dbt_relations
def read_report_data(con: duckdb.DuckDBPyConnection, warehouse: Path | str, campaign: str | None, days: int | None) -> ReportData:
    """Every frame of the report from an open connection, for the campaign (or all) and the last `days` days (or all)."""
    if days is not None and days < 1:
        raise ReportInputError(f"--days must be at least 1, not {days}")
    campaigns = choose_campaigns(warehouse_campaigns(con), campaign)
    until = latest_day(con, campaigns)
    if until is None:
        return ReportData(warehouse, True, campaigns, None, None)
    since = until - timedelta(days=days - 1) if days is not None else date(1900, 1, 1)
    params = {"campaigns": campaigns, "since": since, "until": until, "window": OUTCOME_WINDOW_DAYS, "many": len(campaigns) > 1}
    gate_totals = (
        fetch_one(con, GATE_TOTALS_SQL, {k: params[k] for k in ("campaigns", "since", "until")})
        if table_exists(con, "marts", "gate_metrics")
        else (0, 0)
    )
    return ReportData(
        warehouse=warehouse,
        warehouse_exists=True,
        campaigns=campaigns,
        since=since if days is not None else None,
        until=until,
        funnel=_days(_query(con, ["marts.daily_kpis", "intermediate.int_send_outcomes"], FUNNEL_COLUMNS, FUNNEL_SQL, params)),
        holdout=_days(_query(con, ["intermediate.int_send_outcomes", "raw.assignments"], HOLDOUT_COLUMNS, HOLDOUT_SQL, params)),
        traffic=_days(_query(con, ["raw.assignments"], TRAFFIC_COLUMNS, TRAFFIC_SQL, params)),
        experiments=_query(con, ["marts.experiment_results"], EXPERIMENT_COLUMNS, EXPERIMENTS_SQL, params),
        costs=_query(con, ["marts.llm_costs"], COST_COLUMNS, COSTS_SQL, params),
        draft_models=_query(con, ["marts.model_stage_quality"], DRAFT_MODEL_COLUMNS, DRAFT_MODELS_SQL, params),
        gate_violations=_query(con, ["marts.gate_violations"], GATE_COLUMNS, GATE_VIOLATIONS_SQL, params),
        drafts_gated=int(gate_totals[0]),
        drafts_passed=int(gate_totals[1]),
    )


def _days(frame: pd.DataFrame) -> pd.DataFrame:
    """The `day` column as datetime64 whatever DuckDB handed back (dates, timestamps or nothing)."""
    frame = frame.copy()
    frame["day"] = pd.to_datetime(frame["day"])
    return frame


def load_report_data(warehouse: Path, campaign: str | None = None, days: int | None = None, url: str | None = None) -> ReportData:
    """The report's data from the warehouse, opened read-only: the file, or the PostgreSQL warehouse at `url`. A
    missing file is a warehouse with nothing in it yet (every plot says so), not an error: the line creates it on its
    first run."""
    warehouse = Path(warehouse)
    if days is not None and days < 1:
        raise ReportInputError(f"--days must be at least 1, not {days}")
    if url:
        from factory_dagster.warehouse.postgres import mask_dsn

        with connect(warehouse, read_only=True, url=url) as con:
            return read_report_data(con, mask_dsn(url), campaign, days)
    if not warehouse.exists():
        return ReportData(warehouse, False, [] if campaign is None else [campaign], None, None)
    with connect(warehouse, read_only=True) as con:
        return read_report_data(con, warehouse, campaign, days)
