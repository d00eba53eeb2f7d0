"""The outbox: which accepted messages go out today, and the guards in front of it.

A message leaves at most once: its `send_id` is derived from campaign and lead, and
a send row exists for it afterwards. Messages held back by the daily cap stay in the
outbox and go first the next day. A send the crash-safe outbox (delivery/states.py) holds
as claimed, uncertain or failed is not pending: only a person sends an uncertain one again.
A message a reviewer holds (`factory review hold`) is not planned, nor, when review is required
(FACTORY_REVIEW_REQUIRED), one without an approval of its current text (review/sendable.py), nor, for
now, one to a recipient another campaign e-mailed within the contact gap (delivery/contact_gap.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb
import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.controls.kill_switch import kill_switch_state
from factory_dagster.delivery.contact_gap import contacted_elsewhere_sql
from factory_dagster.review.sendable import HELD_MESSAGE_IDS, approved_message_ids
from factory_dagster.warehouse.dialect import is_postgres
from factory_dagster.warehouse.store import fetch_one
from factory_dagster.warehouse.suppressed import suppressed_sql


@dataclass(frozen=True)
class SendPlan:
    batch: pd.DataFrame
    deferred: int
    hold_reason: str | None
    held_for_review: int = 0  # held by a reviewer: not planned until released
    awaiting_review: int = 0  # review required and not approved yet: not planned
    held_by_contact_gap: int = 0  # another campaign e-mailed the recipient within the gap: planned once it passed


def pending_messages(con: duckdb.DuckDBPyConnection, day: date, campaign_id: str, gap_days: int = 0) -> pd.DataFrame:
    """Accepted messages up to `day` that were never sent, are not claimed, uncertain or failed in the
    outbox, are not from a held day and whose recipient (or its domain) is not suppressed, oldest first.
    `review_held` and `review_approved` say what reviewers decided (plan_sends leaves out what they hold);
    `contact_gap_held` that another campaign e-mailed the recipient within `gap_days` (delivery/contact_gap.py)."""
    return con.execute(
        f"""SELECT m.*, a.segment, m.message_id IN {HELD_MESSAGE_IDS} AS review_held,
                  m.message_id IN {approved_message_ids(is_postgres(con))} AS review_approved,
                  {contacted_elsewhere_sql("m.to_email")} AS contact_gap_held
           FROM raw.messages m
           JOIN raw.assignments a ON a.campaign_id = m.campaign_id AND a.lead_id = m.lead_id
           WHERE m.campaign_id = $campaign AND m.partition_day <= $day
             AND m.send_id NOT IN (SELECT send_id FROM raw.sends)
             AND m.send_id NOT IN (SELECT send_id FROM raw.outbox WHERE state <> 'queued')
             AND m.partition_day NOT IN (
                 SELECT partition_day FROM raw.send_holds WHERE campaign_id = $campaign AND released_at IS NULL)
             AND NOT {suppressed_sql("m.to_email")}
           ORDER BY m.partition_day, m.message_id""",
        {"campaign": campaign_id, "day": day, "gap": gap_days},
    ).df()


def plan_sends(
    con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date, require_review: bool = False, gap_days: int = 0
) -> SendPlan:
    """Apply the guards in order: reviewers' holds (and approvals, when required), the contact gap across campaigns,
    kill switch, budget, then the daily cap."""
    every = pending_messages(con, day, spec.campaign_id, gap_days)
    held = every["review_held"].astype(bool)
    unapproved = ~every["review_approved"].astype(bool) & ~held if require_review else pd.Series(False, index=every.index)
    gap = every["contact_gap_held"].astype(bool) & ~held & ~unapproved
    pending = every[~held & ~unapproved & ~gap]
    review = {"held_for_review": int(held.sum()), "awaiting_review": int(unapproved.sum()), "held_by_contact_gap": int(gap.sum())}
    state = kill_switch_state(con, spec.campaign_id)
    if state.engaged:
        why = f"kill switch ({state.scope}) engaged by {state.actor}: {state.reason}"
        return SendPlan(pending.head(0), len(pending), why, **review)
    spent = fetch_one(
        con,
        "SELECT coalesce(sum(cost_usd), 0) FROM raw.llm_calls WHERE partition_day = ? AND campaign_id = ?",
        [day, spec.campaign_id],
    )[0]
    if spent > spec.limits.daily_budget_usd:
        return SendPlan(
            pending.head(0),
            len(pending),
            f"model spend ${spent:.4f} exceeded the daily budget ${spec.limits.daily_budget_usd:.2f}",
            **review,
        )
    # Sends whose outcome is unknown may have gone: they count against the cap too.
    sent_today = fetch_one(
        con,
        """SELECT (SELECT count(*) FROM raw.sends WHERE partition_day = $day AND campaign_id = $campaign)
                + (SELECT count(*) FROM raw.outbox
                   WHERE partition_day = $day AND campaign_id = $campaign AND state IN ('claimed', 'uncertain'))""",
        {"day": day, "campaign": spec.campaign_id},
    )[0]
    quota = max(0, spec.limits.daily_send_cap - sent_today)
    return SendPlan(pending.head(quota), max(0, len(pending) - quota), None, **review)
