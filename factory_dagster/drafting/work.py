"""The drafting work list: the day's assigned leads that have not been sent yet.

Leads already sent are left alone by re-runs, so their drafts, gate results and
message stay exactly as they were when the message went out.
"""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd

UNSENT = "a.lead_id NOT IN (SELECT lead_id FROM raw.sends WHERE campaign_id = $campaign)"


def unsent_work(con: duckdb.DuckDBPyConnection, day: date, campaign_id: str) -> pd.DataFrame:
    """Assignment + lead fields + the plan's hook and claims, one row per lead to draft."""
    return con.execute(
        f"""SELECT a.lead_id, a.segment, a.arm_id, a.angle, a.prompt_version, a.model,
                   l.email, l.first_name, l.last_name, l.company, l.role, l.industry, l.note,
                   p.hook, p.claims
            FROM raw.assignments a
            JOIN raw.leads l USING (lead_id)
            JOIN raw.plans p ON p.partition_day = a.partition_day AND p.campaign_id = a.campaign_id
                             AND p.segment = a.segment AND p.angle = a.angle
            WHERE a.partition_day = $day AND a.campaign_id = $campaign AND {UNSENT}
            ORDER BY a.lead_id""",
        {"day": day, "campaign": campaign_id},
    ).df()


def clear_unsent(con: duckdb.DuckDBPyConnection, table: str, day: date, campaign_id: str, where: str = "TRUE") -> None:
    """Delete the day's rows of `raw.<table>` for leads not sent yet (before they are rewritten)."""
    con.execute(
        f"DELETE FROM raw.{table} a WHERE a.partition_day = $day AND a.campaign_id = $campaign AND {UNSENT} AND ({where})",
        {"day": day, "campaign": campaign_id},
    )
