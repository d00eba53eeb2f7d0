"""Classify the replies the observe stage stored, turn them into events, and honour what they ask.

Why here: `reply_import` threads each reply to its send; what the reply *says* decides what the
loop learns (a positive reply, not just "replied") and whom the line must leave alone. Each
stored reply without a class yet goes through `replies.classify_replies` (rules, then the cheap
model, then the premium one, on the line's gateway, ledger and budget) and gets one row in
`raw.reply_classes`. A reply the classifier could not decide (no usable answer, budget spent)
keeps a row with its `quarantine_reason` and is tried again by the next run; it is never dropped.

Events (`replies.events`): positive → `replied` + `positive_reply`; unsubscribe → `replied` +
`unsubscribed`; question, not_now, negative → `replied`; out-of-office and auto-replies → none.
They go to `raw.events` with the reply's id, class, confidence and model, and `occurred_at` the
time the reply was received.

Suppression (`suppress_from_replies`): an unsubscribe reaches it through its `unsubscribed` event
(`suppression.suppress_from_events`); a negative reply suppresses its recipient here (someone who
said no is not written to again); and a reply still unclassified `HONOUR_WITHIN` after it arrived
suppresses its recipient as a precaution, so no request to stop can wait longer than 48 hours
for a model that is down or a budget that is spent. `replies_honoured` is the blocking check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.models.gateway import ModelGateway
from factory_dagster.replies.classify import ClassifySettings, classify_replies
from factory_dagster.replies.events import events_for_replies
from factory_dagster.run_context import RunContext, utcnow
from factory_dagster.warehouse.store import insert_rows
from factory_dagster.warehouse.suppressed import suppressed_sql

HONOUR_WITHIN = timedelta(hours=48)
SUPPRESSING_CLASSES = ("unsubscribe", "negative")
CLASS_COLUMNS = ("reply_id", "class", "confidence", "model", "decided_by", "rule", "reason", "quarantine_reason", "cost_usd")


@dataclass(frozen=True)
class ReplyClassSummary:
    """What one run did with the stored replies."""

    classified: int
    unclassified: int
    events: int
    by_class: Mapping[str, int]


def _todo(con: duckdb.DuckDBPyConnection, campaign_id: str) -> pd.DataFrame:
    """The campaign's stored replies with no class yet (new, or left unclassified by an earlier run)."""
    return con.execute(
        """SELECT r.reply_id, r.send_id, r.subject, r.body_text AS text, r.from_address AS sender, r.received_at
           FROM raw.replies r LEFT JOIN raw.reply_classes c USING (reply_id)
           WHERE r.campaign_id = ? AND c.class IS NULL
           ORDER BY r.received_at, r.reply_id""",
        [campaign_id],
    ).df()


def classify_new_replies(
    con: duckdb.DuckDBPyConnection, gateway: ModelGateway, spec: CampaignSpec, settings: ClassifySettings | None = None
) -> ReplyClassSummary:
    """Classify the stored replies that have no class yet; store their classes and events (call in a transaction).

    The spec's own unsubscribe footer and call to action are ignored in a reply: a reply that
    quotes our footer is not an unsubscribe request.
    """
    todo = _todo(con, spec.campaign_id)
    if todo.empty:
        return ReplyClassSummary(0, 0, 0, {})
    settings = settings or ClassifySettings(own_texts=(spec.required.unsubscribe_footer, spec.required.call_to_action))
    classes = classify_replies(gateway, gateway.run, todo, settings)[list(CLASS_COLUMNS)]
    con.execute(
        "DELETE FROM raw.reply_classes WHERE class IS NULL AND reply_id IN (SELECT unnest(?::VARCHAR[]))",
        [todo.reply_id.tolist()],
    )
    insert_rows(con, "reply_classes", gateway.run.stamp(classes, "classified_at"))
    decided = classes[classes["class"].notna()].merge(todo[["reply_id", "send_id", "received_at"]], on="reply_id")
    events = events_for_replies(decided).rename(columns={"confidence": "reply_confidence", "model": "reply_model"})
    stored = insert_rows(
        con,
        "events",
        gateway.run.stamp(events.assign(source_file="reply:" + events["reply_id"], source_row=1), "imported_at"),
        skip_existing=True,
    )
    counts = decided["class"].value_counts()
    return ReplyClassSummary(len(decided), len(classes) - len(decided), stored, {str(k): int(v) for k, v in counts.items()})


def suppress_from_replies(con: duckdb.DuckDBPyConnection, run: RunContext, now: datetime | None = None) -> int:
    """Suppress the recipients of negative replies, and of replies unclassified for `HONOUR_WITHIN`.

    (Unsubscribe replies reach the list through their `unsubscribed` event.) `now` (naive UTC)
    defaults to the clock.
    """
    now = now or utcnow()
    rows = con.execute(
        """SELECT DISTINCT ON (lower(s.to_email)) lower(s.to_email) AS email,
                  CASE WHEN c.class = 'negative' THEN 'negative_reply' ELSE 'reply_unclassified_48h' END AS reason,
                  'reply:' || r.reply_id AS source
           FROM raw.replies r
           JOIN raw.sends s USING (send_id)
           LEFT JOIN raw.reply_classes c USING (reply_id)
           WHERE c.class = 'negative' OR (c.class IS NULL AND r.received_at <= ?)
           ORDER BY lower(s.to_email), r.received_at""",
        [now - HONOUR_WITHIN],
    ).df()
    return insert_rows(con, "suppression", rows.assign(partition_day=run.partition_day, added_at=now), skip_existing=True)


def replies_honoured(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date) -> tuple[bool, Mapping[str, Any]]:
    """Blocking: every reply asking to stop (unsubscribe, negative) and every reply unclassified for 48
    hours has its recipient on the suppression list, so the next send cannot reach them."""
    unhonoured = con.execute(
        f"""SELECT r.reply_id, coalesce(c.class, 'unclassified') AS class, lower(s.to_email) AS email
            FROM raw.replies r
            JOIN raw.sends s USING (send_id)
            LEFT JOIN raw.reply_classes c USING (reply_id)
            WHERE r.campaign_id = ?
              AND (c.class IN {SUPPRESSING_CLASSES} OR (c.class IS NULL AND r.received_at <= ?))
              AND NOT {suppressed_sql("s.to_email")}""",
        [spec.campaign_id, utcnow() - HONOUR_WITHIN],
    ).df()
    return unhonoured.empty, {
        "unhonoured_replies": len(unhonoured),
        "examples": unhonoured.head(5).to_dict("records"),
    }
