"""The observe stage reads what stored replies say: classes, events with the class, and suppression within 48 hours."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest
from helpers_db import CAMPAIGN, DAY, LEADS, SPEC, add_message, add_send, count, query, run_for
from helpers_logic import gateway, registry

from factory_dagster.feedback.reply_classes import (
    HONOUR_WITHIN,
    classify_new_replies,
    replies_honoured,
    suppress_from_replies,
)
from factory_dagster.feedback.suppression import suppress_from_events
from factory_dagster.models.budget import Budget
from factory_dagster.run_context import utcnow
from factory_dagster.warehouse.store import insert_rows, transaction

TEXTS = {
    "yes": "Yes, that sounds useful. Could we talk on Thursday afternoon?",
    "stop": "Please remove me from your list and do not email me again.",
    "no": "Not interested. We built our own close tooling last year.",
    "away": "I am out of the office until Monday 9 March with no access to email.",
}


@pytest.fixture
def con(engine_con):
    """The warehouse, once on DuckDB and once on PostgreSQL (tests/warehouse_engines.py)."""
    return engine_con


def store_replies(con, received_at: datetime) -> dict[str, str]:
    """One sent message per lead and one stored reply to each; reply id -> the recipient's address."""
    rows, recipients = [], {}
    for (name, text), lead in zip(TEXTS.items(), LEADS, strict=False):
        send_id = add_send(con, add_message(con, lead))
        rows.append(
            {
                "reply_id": f"rpl_{name}",
                "send_id": send_id,
                "threaded_by": "in_reply_to",
                "from_address": lead.email,
                "subject": "Re: closing the month",
                "body_text": text + f"\n\nOn Mon, Maya wrote:\n> {SPEC.required.unsubscribe_footer}",
                "received_at": received_at,
                "received_via": "inbound-parse",
                "source_file": f"/srv/inbox/replies/{name}.eml",
            }
        )
        recipients[f"rpl_{name}"] = lead.email
    insert_rows(con, "replies", run_for(DAY).stamp(pd.DataFrame(rows), "imported_at"))
    return recipients


def classify(con, gw=None):
    gw = gw or gateway(registry(cheap=0.0, premium=0.0), campaign_id=CAMPAIGN)
    with transaction(con):
        return classify_new_replies(con, gw, SPEC)


def test_each_reply_gets_a_class_and_the_events_its_class_gives(con) -> None:
    store_replies(con, datetime(2026, 3, 3, 10))
    summary = classify(con)
    classes = dict(query(con, "SELECT reply_id, class FROM raw.reply_classes"))
    assert classes == {"rpl_yes": "positive", "rpl_stop": "unsubscribe", "rpl_no": "negative", "rpl_away": "out_of_office"}
    assert (summary.classified, summary.unclassified) == (4, 0)
    events = query(con, "SELECT reply_id, event_type, reply_class FROM raw.events ORDER BY reply_id, event_type")
    assert events == [
        ("rpl_no", "replied", "negative"),
        ("rpl_stop", "replied", "unsubscribe"),
        ("rpl_stop", "unsubscribed", "unsubscribe"),
        ("rpl_yes", "positive_reply", "positive"),
        ("rpl_yes", "replied", "positive"),
    ]  # the out-of-office notice is no reply from a person
    assert query(con, "SELECT DISTINCT occurred_at FROM raw.events") == [(datetime(2026, 3, 3, 10),)]
    # A second run classifies nothing again and adds no event.
    assert classify(con).classified == 0 and count(con, "events") == 5


def test_stop_requests_and_refusals_are_suppressed_and_the_check_holds(con) -> None:
    recipients = store_replies(con, datetime(2026, 3, 3, 10))
    classify(con)
    assert not replies_honoured(con, SPEC, DAY)[0]  # classified, not yet honoured
    run = run_for(DAY + timedelta(days=1))
    suppress_from_events(con, run)
    suppress_from_replies(con, run)
    suppressed = dict(query(con, "SELECT email, reason FROM raw.suppression"))
    assert suppressed == {recipients["rpl_stop"]: "unsubscribed", recipients["rpl_no"]: "negative_reply"}
    ok, figures = replies_honoured(con, SPEC, DAY)
    assert ok and figures["unhonoured_replies"] == 0


def test_a_reply_nobody_could_classify_is_kept_retried_and_suppressed_after_48_hours(con) -> None:
    recipients = store_replies(con, utcnow() - HONOUR_WITHIN - timedelta(minutes=5))
    broke = gateway(registry(cheap=0.0, premium=0.0), campaign_id=CAMPAIGN)
    broke.budget = Budget(limit_usd=0.0)  # nothing may be spent: every reply a model must read stays unclassified
    summary = classify(con, broke)
    unclassified = query(con, "SELECT reply_id, quarantine_reason FROM raw.reply_classes WHERE class IS NULL")
    assert summary.unclassified == len(unclassified) > 0 and all(reason for _, reason in unclassified)
    assert not replies_honoured(con, SPEC, DAY)[0]
    suppress_from_events(con, run_for(DAY))  # the stop request a rule recognised, as the suppression stage does
    suppress_from_replies(con, run_for(DAY))
    assert {e for (e,) in query(con, "SELECT email FROM raw.suppression")} >= {recipients[r] for r, _ in unclassified}
    assert replies_honoured(con, SPEC, DAY)[0]
    # The next run with a budget classifies them; their rows are replaced, not doubled.
    assert classify(con).classified == len(unclassified)
    assert count(con, "reply_classes") == len(TEXTS) and count(con, "reply_classes", "class IS NULL") == 0
