"""Export the line's own logged assignments from a warehouse as a backtest log.

Every lead the assign stage placed is a row of `raw.assignments` with the propensity of its arm.
Its reward is whether its send got a positive reply (`intermediate.int_send_outcomes`, the dbt model
the marts count from). Two levels:

- `angle` (default): the arm is the angle, the level the loop's allocation learns at; its propensity
  is the angle's share for the lead's population (loop or holdout, and its part of a split segment)
  that day, summed from the day's `raw.allocations` rows of the same run (the prompt, model and hook
  layers are drawn independently of it).
- `arm`: the arm is the full arm id (angle|prompt version|model), with the assignment's own propensity.

Rows that cannot be scored are left out and counted, never guessed: leads whose message was not sent
(gated, held, suppressed), and sends younger than the outcome window, whose positive reply may still
be on its way (a young send would otherwise count as a non-reply).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from factory_dagster.warehouse.store import connect, reads_dbt_relations

LEVELS = ("angle", "arm")
LOG_COLUMNS = [
    "partition_day",
    "lead_id",
    "segment",
    "holdout",
    "policy_version",
    "angle",
    "arm_id",
    "arm",
    "propensity",
    "reward",
]

_QUERY = """
with angle_shares as (
    select
        run_id, campaign_id, segment, coalesce(holdout, false) as holdout, coalesce(part, '') as part, angle,
        sum(share) as angle_propensity
    from raw.allocations
    group by 1, 2, 3, 4, 5, 6
)
select
    a.partition_day,
    a.lead_id,
    a.segment,
    coalesce(a.holdout, false) as holdout,
    a.policy_version,
    a.angle,
    a.arm_id,
    a.propensity,
    s.angle_propensity,
    o.send_id is not null as sent,
    o.days_since_send,
    o.positive_reply
from raw.assignments as a
left join angle_shares as s
    on s.run_id = a.run_id and s.campaign_id = a.campaign_id and s.segment = a.segment
    and s.holdout = coalesce(a.holdout, false) and s.part = coalesce(a.part, '') and s.angle = a.angle
left join intermediate.int_send_outcomes as o
    on o.campaign_id = a.campaign_id and o.lead_id = a.lead_id
where a.campaign_id = $campaign
order by a.partition_day, a.assigned_at, a.lead_id
"""


class WarehouseLogError(ValueError):
    """The warehouse cannot give a log (no such campaign, no outcomes model yet)."""


@dataclass(frozen=True)
class WarehouseLog:
    rows: pd.DataFrame  # LOG_COLUMNS, in assignment order
    assigned: int
    not_sent: int
    immature: int
    no_allocation: int

    def describe(self) -> str:
        return (
            f"{len(self.rows)} of {self.assigned} assignments: {self.not_sent} not sent and {self.immature} sends younger than "
            f"the outcome window left out" + (f", {self.no_allocation} without an allocation row" if self.no_allocation else "")
        )


def warehouse_log(
    path: Path, campaign_id: str, outcome_window_days: int, level: str = "angle", url: str | None = None, where: str = ""
) -> WarehouseLog:
    """The campaign's mature sends as a backtest log (LOG_COLUMNS): context `segment`, arm `arm`, reward 0/1; from the
    DuckDB file at `path`, or from the PostgreSQL warehouse at `url` (`where` names it in errors, password masked)."""
    if url is None and not Path(path).exists():
        raise WarehouseLogError(f"{path}: no warehouse there")
    with connect(Path(path), read_only=True, url=url) as con:
        return connection_log(con, campaign_id, outcome_window_days, level, where=where or str(path))


def _missing(con: duckdb.DuckDBPyConnection, relations: tuple[str, ...]) -> list[str]:
    """The relations (schema.name) the warehouse does not have; asked first, as a failed query would abort the caller's
    transaction on PostgreSQL."""
    found = {
        f"{schema}.{name}"
        for schema, name in con.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall()
    }
    return [r for r in relations if r not in found]


@reads_dbt_relations
def connection_log(
    con: duckdb.DuckDBPyConnection, campaign_id: str, outcome_window_days: int, level: str = "angle", where: str = "warehouse"
) -> WarehouseLog:
    """`warehouse_log` on an open connection (the loop's preflight reads inside the decision step's)."""
    if level not in LEVELS:
        raise WarehouseLogError(f"level must be one of {LEVELS}, got {level!r}")
    missing = _missing(con, ("raw.assignments", "raw.allocations", "intermediate.int_send_outcomes"))
    if missing:
        raise WarehouseLogError(
            f"{where}: the warehouse has no assignments or send outcomes yet (run the line, whose learn stage builds "
            f"intermediate.int_send_outcomes): {', '.join(missing)} missing"
        )
    frame = con.execute(_QUERY, {"campaign": campaign_id}).df()
    if frame.empty:
        raise WarehouseLogError(f"{where}: no assignments for campaign {campaign_id!r}")
    sent = frame["sent"].astype(bool)
    mature = sent & frame["days_since_send"].ge(outcome_window_days).fillna(False).astype(bool)
    has_share = frame["angle_propensity"].notna() | (level == "arm")
    keep = mature & has_share
    rows = frame[keep].reset_index(drop=True)
    propensity = rows["angle_propensity"] if level == "angle" else rows["propensity"]
    rows = rows.assign(
        arm=rows["angle"] if level == "angle" else rows["arm_id"],
        propensity=propensity.astype(float).clip(upper=1.0),  # shares summed in floating point may pass 1 by 1e-16
        reward=rows["positive_reply"].astype(bool).astype(int),
        partition_day=pd.to_datetime(rows["partition_day"]).dt.date.astype(str),
    )
    return WarehouseLog(
        rows[LOG_COLUMNS],
        assigned=len(frame),
        not_sent=int((~sent).sum()),
        immature=int((sent & ~mature).sum()),
        no_allocation=int((mature & ~has_share).sum()),
    )
