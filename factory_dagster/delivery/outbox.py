"""The outbox: which accepted messages go out today, and the guards in front of it.

A message leaves at most once: its `send_id` is derived from campaign and lead, and
a send row exists for it afterwards. Messages held back by the daily cap stay in the
outbox and go first the next day.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date

import duckdb
import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.controls.kill_switch import kill_switch_state
from factory_dagster.delivery.eml import OutgoingMessage, Transport
from factory_dagster.warehouse.store import fetch_one


@dataclass(frozen=True)
class SendPlan:
    batch: pd.DataFrame
    deferred: int
    hold_reason: str | None


def pending_messages(con: duckdb.DuckDBPyConnection, day: date, campaign_id: str) -> pd.DataFrame:
    """Accepted messages up to `day` that were never sent, are not from a held day and whose
    recipient is not suppressed, oldest first."""
    return con.execute(
        """SELECT m.*, a.segment FROM raw.messages m
           JOIN raw.assignments a ON a.campaign_id = m.campaign_id AND a.lead_id = m.lead_id
           WHERE m.campaign_id = $campaign AND m.partition_day <= $day
             AND m.send_id NOT IN (SELECT send_id FROM raw.sends)
             AND m.partition_day NOT IN (
                 SELECT partition_day FROM raw.send_holds WHERE campaign_id = $campaign AND released_at IS NULL)
             AND lower(m.to_email) NOT IN (SELECT lower(email) FROM raw.suppression)
           ORDER BY m.partition_day, m.message_id""",
        {"campaign": campaign_id, "day": day},
    ).df()


def plan_sends(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date) -> SendPlan:
    """Apply the guards in order: kill switch, budget, then the daily cap."""
    pending = pending_messages(con, day, spec.campaign_id)
    state = kill_switch_state(con)
    if state.engaged:
        return SendPlan(pending.head(0), len(pending), f"kill switch engaged by {state.actor}: {state.reason}")
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
        )
    sent_today = fetch_one(
        con, "SELECT count(*) FROM raw.sends WHERE partition_day = ? AND campaign_id = ?", [day, spec.campaign_id]
    )[0]
    quota = max(0, spec.limits.daily_send_cap - sent_today)
    return SendPlan(pending.head(quota), max(0, len(pending) - quota), None)


def deliver_batch(batch: pd.DataFrame, spec: CampaignSpec, day: date, transport: Transport) -> pd.DataFrame:
    """Hand every message to the transport; the send rows (without run ids) for `raw.sends`."""
    rows = []
    for m in batch.itertuples():
        ref = transport.deliver(
            OutgoingMessage(
                send_id=m.send_id,
                day=day,
                from_name=spec.sender.name,
                from_email=spec.sender.email,
                to_email=m.to_email,
                subject=m.subject,
                body=m.body,
                postal_address=spec.sender.postal_address,
            )
        )
        rows.append(
            {
                "send_id": m.send_id,
                "message_id": m.message_id,
                "message_day": m.partition_day,
                "spec_version": m.spec_version,
                "lead_id": m.lead_id,
                "to_email": m.to_email,
                "segment": m.segment,
                "arm_id": m.arm_id,
                "angle": m.angle,
                "prompt_version": m.prompt_version,
                "model": m.model,
                "subject": m.subject,
                "body_sha256": hashlib.sha256(m.body.encode("utf-8")).hexdigest(),
                "transport": transport.name,
                "transport_ref": ref,
            }
        )
    return pd.DataFrame(rows)
