"""The drafting work list: assigned leads of the day, or of earlier days, still waiting for a message.

A lead is done once it has a message or a quarantine verdict on some *other* day, or
has been sent. So a re-run of the day rewrites that day's own outputs, while leads the
budget deferred on earlier days come back until they get their verdict. Leads already
sent are left alone, so their drafts, gate results and message stay as they were sent.

An assignment may name a draft prompt the improve stage had the premium model write; such a
version lives in `raw.prompt_versions`, and reading the work makes it known to `prompts.prompt`,
so drafting, repairs and escalations render it like a hand-written one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

import duckdb
import pandas as pd

from factory_dagster.models.prompts import load_stored_prompts

# A lead is done once it was sent, or once the outbox took its message further than the queue: a
# send whose outcome is unknown (claimed, uncertain) or settled as failed keeps the message it had.
UNSENT = """a.lead_id NOT IN (
    SELECT lead_id FROM raw.sends WHERE campaign_id = $campaign
    UNION ALL
    SELECT lead_id FROM raw.outbox WHERE campaign_id = $campaign AND state <> 'queued')"""
NOT_DONE_ELSEWHERE = """a.lead_id NOT IN (
    SELECT lead_id FROM raw.messages WHERE campaign_id = $campaign AND partition_day <> $day
    UNION ALL
    SELECT lead_id FROM raw.messages_quarantine WHERE campaign_id = $campaign AND partition_day <> $day)"""


def unsent_work(con: duckdb.DuckDBPyConnection, day: date, campaign_id: str) -> pd.DataFrame:
    """Assignment + lead fields + the hook (the assignment's hook version, else today's plan hook) and
    today's plan claims, one row per lead to draft.

    The stored prompt versions the rows name are loaded (see the module docstring).
    """
    work = con.execute(
        f"""SELECT a.lead_id, a.partition_day AS assigned_day, a.segment, a.arm_id, a.angle, a.prompt_version, a.model,
                   l.email, l.first_name, l.last_name, l.company, l.role, l.industry, l.note,
                   coalesce(h.text, p.hook) AS hook, p.claims
            FROM raw.assignments a
            JOIN raw.leads l USING (campaign_id, lead_id)
            JOIN raw.plans p ON p.partition_day = $day AND p.campaign_id = a.campaign_id
                             AND p.segment = a.segment AND p.angle = a.angle
            LEFT JOIN raw.hook_versions h ON h.campaign_id = a.campaign_id AND h.hook_version = a.hook_version
            WHERE a.partition_day <= $day AND a.campaign_id = $campaign AND {UNSENT} AND {NOT_DONE_ELSEWHERE}
            ORDER BY a.partition_day, a.lead_id""",
        {"day": day, "campaign": campaign_id},
    ).df()
    load_stored_prompts(con, work.prompt_version)
    return work


def clear_unsent(
    con: duckdb.DuckDBPyConnection,
    table: str,
    day: date,
    campaign_id: str,
    where: str = "TRUE",
    params: Mapping[str, Any] | None = None,
) -> None:
    """Delete the day's rows of `raw.<table>` for leads not sent yet (before they are rewritten).

    `where` narrows them down (the table is `a`), with its own `$name` parameters in `params`."""
    con.execute(
        f"DELETE FROM raw.{table} a WHERE a.partition_day = $day AND a.campaign_id = $campaign AND {UNSENT} AND ({where})",
        {"day": day, "campaign": campaign_id, **(params or {})},
    )
