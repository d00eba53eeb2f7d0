"""The kill switch: while engaged, the send stage sends nothing.

Its history is `raw.kill_switch` (append-only). A switch is for every campaign (`campaign_id`
null: what a person flips for the whole factory) or for one campaign (what the anomaly guard flips
when that campaign's complaints or bounces spike, so one campaign's trouble does not stop the
others). For each scope the latest row wins; a campaign sends only while both its own switch and
the switch for every campaign are off. Only a person releases a switch (CLI or Dagster job).
A warehouse from before campaigns had switches of their own gets the column added (null: its
history stays the switch for every campaign).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from factory_dagster.run_context import utcnow
from factory_dagster.warehouse.dialect import insertion_order
from factory_dagster.warehouse.store import fetch_one

EVERY_CAMPAIGN = "every campaign"


@dataclass(frozen=True)
class KillSwitchState:
    engaged: bool
    actor: str
    reason: str
    campaign_id: str | None = None  # None: the switch for every campaign

    @property
    def scope(self) -> str:
        return self.campaign_id or EVERY_CAMPAIGN


def _latest(con: duckdb.DuckDBPyConnection, campaign_id: str | None) -> KillSwitchState | None:
    row = fetch_one(
        con,
        f"""SELECT engaged, actor, reason, campaign_id FROM raw.kill_switch WHERE campaign_id IS NOT DISTINCT FROM ?::VARCHAR
            ORDER BY changed_at DESC, {insertion_order(con).format("DESC")} LIMIT 1""",
        [campaign_id],
    )
    return KillSwitchState(*row) if row else None


def kill_switch_state(con: duckdb.DuckDBPyConnection, campaign_id: str | None = None) -> KillSwitchState:
    """The switch in force for `campaign_id` (None: the switch for every campaign alone): an engaged switch for every
    campaign, else the campaign's own if engaged, else the latest change of either (off)."""
    every = _latest(con, None)
    own = _latest(con, campaign_id) if campaign_id is not None else None
    for state in (every, own):
        if state is not None and state.engaged:
            return state
    return own or every or KillSwitchState(False, "default", "never engaged")


def set_kill_switch(
    con: duckdb.DuckDBPyConnection, engaged: bool, actor: str, reason: str, campaign_id: str | None = None
) -> KillSwitchState:
    """Engage or release the switch for one campaign, or (None) for every campaign; a reason is required."""
    if not reason.strip():
        raise ValueError("a kill-switch change needs a reason")
    con.execute(
        "INSERT INTO raw.kill_switch (changed_at, engaged, actor, reason, campaign_id) VALUES (?, ?, ?, ?, ?)",
        [utcnow(), engaged, actor, reason, campaign_id],
    )
    return KillSwitchState(engaged, actor, reason, campaign_id)
