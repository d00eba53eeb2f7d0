"""Whose send an outcome is: the event, ESP and reply inboxes are shared by every campaign.

Why: an ESP posts one webhook stream and replies land in one mailbox, whatever campaign sent the
message, and whichever campaign's run comes first that day imports the inboxes. So an event or a
reply is matched against every campaign's sends and stored under the campaign of its send, not the
campaign of the run that happened to import it. Quarantined rows stay with the importing run.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from factory_dagster.run_context import RunContext


def send_campaigns(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """send_id -> campaign_id of every send in the warehouse."""
    return dict(con.execute("SELECT send_id, campaign_id FROM raw.sends").fetchall())


def stamp_by_send(
    run: RunContext, rows: pd.DataFrame, campaigns: dict[str, str], time_column: str = "imported_at"
) -> pd.DataFrame:
    """The run's stamp (run, day, import time), with each row's campaign the one its `send_id` belongs to."""
    stamped = run.stamp(rows, time_column)
    if len(stamped):
        stamped["campaign_id"] = stamped["send_id"].map(campaigns)
    return stamped
