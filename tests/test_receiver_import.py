"""Importing what the feedback receiver stored, against a real DuckDB file.

ESP events are mapped to Factory's types (machine opens and clicks skipped with reasons),
unknown sends are quarantined, retries are imported once, one-click unsubscribes reach the
suppression list, and inbound replies are threaded to their sends. The files are written by
the receiver's own writer (`receiver.inbox`); the last test goes through the running service.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers_db import CAMPAIGN, DAY, LEADS, OTHER_CAMPAIGN, add_message, add_send, count, query, run_for
from helpers_receiver import (
    INBOUND_PASSWORD,
    INBOUND_USER,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    UNSUBSCRIBE_SECRET,
    basic_auth,
    mailgun_body,
    mailgun_event,
    multipart,
    postmark_event,
    receiver_env,
    reply_mime,
    request,
    sendgrid_event,
    sendgrid_headers,
    sendgrid_key_pair,
)

from factory_dagster.delivery.unsubscribe import make_token
from factory_dagster.feedback.esp_import import import_esp_event_files
from factory_dagster.feedback.reply_import import import_reply_files
from factory_dagster.feedback.suppression import suppress_from_events
from factory_dagster.receiver.app import build_app
from factory_dagster.receiver.config import ReceiverConfig
from factory_dagster.receiver.inbox import event_file_bytes, store_events, store_reply
from factory_dagster.receiver.server import serve_in_thread
from factory_dagster.settings import Paths

NEXT_DAY = DAY + timedelta(days=1)
RECEIVED = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.under(tmp_path)


@pytest.fixture
def con(engine_con):
    """The warehouse, once on DuckDB and once on PostgreSQL (tests/warehouse_engines.py)."""
    return engine_con


@pytest.fixture
def sent(con) -> dict[str, str]:
    """Three sends of the campaign (a, b, c: send ids) and one of another campaign."""
    sends = {key: add_send(con, add_message(con, lead)) for key, lead in zip("abc", LEADS[:3], strict=True)}
    sends["other"] = add_send(con, add_message(con, LEADS[3], campaign_id=OTHER_CAMPAIGN))
    return sends


def email_of(key: str) -> str:
    return LEADS["abc".index(key)].email


def events_by_id(con) -> dict[str, tuple]:
    rows = query(con, "SELECT event_id, send_id, event_type, occurred_at FROM raw.events")
    return {r[0]: (r[1], r[2], r[3].strftime("%Y-%m-%dT%H:%M:%S.%f")) for r in rows}


def skipped(con) -> list[tuple]:
    return query(con, "SELECT provider, provider_event, reason_code, send_id FROM raw.esp_events_skipped ORDER BY source_row")


def quarantined(con) -> list[tuple]:
    return query(con, "SELECT source_row, column_name, reason_code, reason FROM raw.events_quarantine ORDER BY source_row")


def intake(con, path: Path) -> tuple:
    return query(
        con,
        "SELECT kind, status, rows_total, rows_accepted, rows_quarantined FROM raw.intake_files WHERE file_path = ?",
        [str(path)],
    )[0]


# --- mapping each provider ---------------------------------------------------------------------


def test_sendgrid_events_map_to_factory_types_and_machine_opens_are_skipped(con, sent, paths: Paths) -> None:
    a, b, c = sent["a"], sent["b"], sent["c"]
    t = 1772528400  # 2026-03-03T09:00:00Z
    events = [
        sendgrid_event("processed", a, email_of("a"), t),
        sendgrid_event("delivered", a, email_of("a"), t + 1),
        sendgrid_event("open", a, email_of("a"), t + 60, sg_machine_open=True, useragent="Mozilla/5.0"),
        sendgrid_event("open", a, email_of("a"), t + 3600, sg_machine_open=False),
        sendgrid_event("click", a, email_of("a"), t + 3700, url="https://brightwave.example/demo"),
        sendgrid_event("deferred", b, email_of("b"), t, response="450 try later", attempt="1"),
        sendgrid_event("bounce", b, email_of("b"), t + 5, type="blocked", reason="550 blocked by policy"),
        sendgrid_event("bounce", b, email_of("b"), t + 900, type="bounce", status="5.1.1", reason="550 no such user"),
        sendgrid_event("dropped", c, email_of("c"), t, reason="Bounced Address", custom_arg=False),
        sendgrid_event("spamreport", c, email_of("c"), t + 7200),
        sendgrid_event("unsubscribe", c, email_of("c"), t + 7300),
        sendgrid_event("group_unsubscribe", c, email_of("c"), t + 7400, asm_group_id=42),
        sendgrid_event("group_resubscribe", c, email_of("c"), t + 7500, asm_group_id=42),
    ]
    path = store_events(paths.esp_events_inbox, "sendgrid", events, RECEIVED)

    summary = import_esp_event_files(con, paths.esp_events_inbox, run_for(NEXT_DAY))

    ids = [f"sendgrid:{e['sg_event_id']}" for e in events]
    assert events_by_id(con) == {
        ids[1]: (a, "delivered", "2026-03-03T09:00:01.000000"),
        ids[3]: (a, "opened", "2026-03-03T10:00:00.000000"),
        ids[7]: (b, "bounced", "2026-03-03T09:15:00.000000"),
        ids[8]: (c, "bounced", "2026-03-03T09:00:00.000000"),  # found by the smtp-id Message-ID alone
        ids[9]: (c, "complained", "2026-03-03T11:00:00.000000"),
        ids[10]: (c, "unsubscribed", "2026-03-03T11:01:40.000000"),
        ids[11]: (c, "unsubscribed", "2026-03-03T11:03:20.000000"),
    }
    assert skipped(con) == [
        ("sendgrid", "processed", "no_factory_meaning", a),
        ("sendgrid", "open", "machine_open", a),
        ("sendgrid", "click", "no_factory_meaning", a),
        ("sendgrid", "deferred", "temporary_failure", b),
        ("sendgrid", "bounce/blocked", "temporary_failure", b),
        ("sendgrid", "group_resubscribe", "resubscribe", c),
    ]
    assert quarantined(con) == []
    assert intake(con, path) == ("events", "imported", 13, 7, 0)
    assert (summary.accepted, summary.quarantined, dict(summary.skipped)) == (
        7,
        0,
        {"no_factory_meaning": 2, "machine_open": 1, "temporary_failure": 2, "resubscribe": 1},
    )


def test_mailgun_events_map_by_severity_and_bot_opens_are_skipped(con, sent, paths: Paths) -> None:
    a, b = sent["a"], sent["b"]
    t = 1772528400.5
    events = [
        mailgun_event("accepted", a, email_of("a"), t),
        mailgun_event("delivered", a, email_of("a"), t + 2, **{"delivery-status": {"code": 250}}),
        mailgun_event("opened", a, email_of("a"), t + 30, **{"client-info": {"client-name": "unknown", "bot": "apple"}}),
        mailgun_event("opened", a, email_of("a"), t + 90, **{"client-info": {"client-name": "Thunderbird", "bot": ""}}),
        mailgun_event("clicked", a, email_of("a"), t + 95, url="https://brightwave.example/demo"),
        mailgun_event("failed", b, email_of("b"), t, severity="temporary", reason="generic"),
        mailgun_event("failed", b, email_of("b"), t + 600, severity="permanent", reason="bounce"),
        mailgun_event("rejected", b, email_of("b"), t + 700, reject={"reason": "quota"}),
        mailgun_event("complained", b, email_of("b"), t + 800),
        mailgun_event("unsubscribed", b, email_of("b"), t + 900),
    ]
    for event in events:  # Mailgun posts one event per request: one file each
        store_events(paths.esp_events_inbox, "mailgun", [event], RECEIVED)

    summary = import_esp_event_files(con, paths.esp_events_inbox, run_for(NEXT_DAY))

    assert sorted(events_by_id(con).values()) == sorted(
        [
            (a, "delivered", "2026-03-03T09:00:02.500000"),
            (a, "opened", "2026-03-03T09:01:30.500000"),
            (b, "bounced", "2026-03-03T09:10:00.500000"),
            (b, "complained", "2026-03-03T09:13:20.500000"),
            (b, "unsubscribed", "2026-03-03T09:15:00.500000"),
        ]
    )
    assert set(events_by_id(con)) == {f"mailgun:{events[i]['id']}" for i in (1, 3, 6, 8, 9)}
    assert sorted((r[1], r[2]) for r in skipped(con)) == [
        ("accepted", "no_factory_meaning"),
        ("clicked", "no_factory_meaning"),
        ("failed/temporary", "temporary_failure"),
        ("opened", "machine_open"),
        ("rejected", "not_sent"),
    ]
    assert (len(summary.files), summary.accepted, summary.quarantined) == (10, 5, 0)


def test_postmark_events_map_by_record_type_and_bounce_type(con, sent, paths: Paths) -> None:
    a, b, c = sent["a"], sent["b"], sent["c"]
    bounce = {"Name": "Hard bounce", "Description": "Unknown user", "DumpAvailable": True, "CanActivate": True}
    events = [
        postmark_event("Delivery", a, email_of("a"), DeliveredAt="2026-03-03T04:00:01.9070259-05:00", Details="250 OK"),
        postmark_event("Open", a, email_of("a"), FirstOpen=True, ReceivedAt="2026-03-03T10:00:00Z", Platform="Desktop"),
        postmark_event("Click", a, email_of("a"), ReceivedAt="2026-03-03T10:01:00Z", OriginalLink="https://x.example"),
        postmark_event(
            "Bounce",
            b,
            email_of("b"),
            ID=4323372036854775807,
            Type="HardBounce",
            TypeCode=1,
            Inactive=True,
            BouncedAt="2026-03-03T09:05:00Z",
            **bounce,
        ),
        postmark_event(
            "Bounce", b, email_of("b"), ID=111, Type="SoftBounce", TypeCode=4096, Inactive=False, BouncedAt="2026-03-03T09:01:00Z"
        ),
        postmark_event(
            "Bounce", c, email_of("c"), ID=112, Type="DnsError", TypeCode=256, Inactive=True, BouncedAt="2026-03-03T09:02:00Z"
        ),
        postmark_event(
            "SpamComplaint", c, email_of("c"), ID=113, Type="SpamComplaint", TypeCode=100001, BouncedAt="2026-03-03T12:00:00Z"
        ),
        postmark_event(
            "SubscriptionChange",
            a,
            email_of("a"),
            ChangedAt="2026-03-03T13:00:00Z",
            Origin="Recipient",
            SuppressSending=True,
            SuppressionReason="ManualSuppression",
        ),
        postmark_event(
            "SubscriptionChange",
            a,
            email_of("a"),
            ChangedAt="2026-03-04T13:00:00Z",
            Origin="Customer",
            SuppressSending=False,
            SuppressionReason=None,
        ),
    ]
    for event in events:
        store_events(paths.esp_events_inbox, "postmark", [event], RECEIVED)

    import_esp_event_files(con, paths.esp_events_inbox, run_for(NEXT_DAY))

    assert sorted(events_by_id(con).values()) == sorted(
        [
            (a, "delivered", "2026-03-03T09:00:01.907025"),  # -05:00 and seven digits, as Postmark sends them
            (a, "opened", "2026-03-03T10:00:00.000000"),
            (b, "bounced", "2026-03-03T09:05:00.000000"),
            (c, "bounced", "2026-03-03T09:02:00.000000"),  # a soft type, but Postmark deactivated the address
            (c, "complained", "2026-03-03T12:00:00.000000"),
            (a, "unsubscribed", "2026-03-03T13:00:00.000000"),
        ]
    )
    assert "postmark:bounce:4323372036854775807" in events_by_id(con)
    assert sorted((r[1], r[2]) for r in skipped(con)) == [
        ("Bounce/SoftBounce", "temporary_failure"),
        ("Click", "no_factory_meaning"),
        ("SubscriptionChange/reactivated", "resubscribe"),
    ]


# --- what cannot be imported ---------------------------------------------------------------------


def test_unknown_sends_and_unknown_events_are_quarantined_with_reasons(con, sent, paths: Paths) -> None:
    events = [
        sendgrid_event("delivered", None, "someone@example.com"),  # not a Factory message at all
        sendgrid_event("delivered", "snd_00000000000000000000", "ghost@example.com"),  # our format, no such send
        sendgrid_event("delivered", sent["other"], LEADS[3].email),  # another campaign's send: stored under it
        sendgrid_event("amp_open", sent["a"], email_of("a")),  # a type the table does not know
        sendgrid_event("open", sent["a"], email_of("a"), timestamp="yesterday"),  # type: ignore[arg-type]
        sendgrid_event("delivered", sent["a"], email_of("a")),
    ]
    path = store_events(paths.esp_events_inbox, "sendgrid", events, RECEIVED)
    with path.open("a", encoding="utf-8") as handle:  # damaged lines cannot hide among good ones
        handle.write('{not json\n{"event":"delivered","sg_event_id":"\\ud800"}\n')
    header, *lines = path.read_text().splitlines()
    path.write_text("\n".join([header.replace('"events":6', '"events":8'), *lines]) + "\n")

    summary = import_esp_event_files(con, paths.esp_events_inbox, run_for(NEXT_DAY))

    rows = quarantined(con)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (2, "send_id", "unknown_send_id"),
        (3, "send_id", "unknown_send_id"),
        (5, "event_type", "bad_event_type"),
        (6, "occurred_at", "bad_timestamp"),
        (8, None, "bad_record"),
        (9, None, "bad_record"),
    ]
    assert "not valid Unicode" in rows[5][3]
    assert "<14c5d75ce93.dfd.64b469@ismtpd-555>" in rows[0][3] and "no Factory send" in rows[0][3]
    assert "snd_00000000000000000000" in rows[1][3]
    assert "amp_open" in rows[2][3]
    assert sorted(events_by_id(con).values()) == sorted(
        [(sent["a"], "delivered", "2026-03-03T09:00:00.000000"), (sent["other"], "delivered", "2026-03-03T09:00:00.000000")]
    )
    assert query(con, "SELECT campaign_id FROM raw.events WHERE send_id = ?", [sent["other"]]) == [(OTHER_CAMPAIGN,)]
    assert intake(con, path) == ("events", "imported", 8, 2, 6)
    assert (summary.accepted, summary.quarantined) == (2, 6)
    raw = json.loads(query(con, "SELECT raw_record FROM raw.events_quarantine WHERE source_row = 5")[0][0])
    assert raw["provider"] == "sendgrid" and raw["record"]["event"] == "amp_open"


def test_a_damaged_file_is_rejected_by_name_and_the_others_import(con, sent, paths: Paths) -> None:
    delivery = postmark_event("Delivery", sent["a"], email_of("a"), DeliveredAt="2026-03-03T09:00:00Z")
    good = store_events(paths.esp_events_inbox, "postmark", [delivery], RECEIVED)
    twice = [sendgrid_event("delivered", sent["b"], email_of("b"))] * 2
    truncated = store_events(paths.esp_events_inbox, "sendgrid", twice, RECEIVED - timedelta(seconds=1))
    truncated.write_text(truncated.read_text().splitlines()[0] + "\n")
    misplaced = paths.esp_events_inbox / "mailgun" / "moved.jsonl"
    misplaced.parent.mkdir(parents=True)
    misplaced.write_bytes(event_file_bytes("postmark", [postmark_event("Open", sent["c"], email_of("c"))], RECEIVED))

    summary = import_esp_event_files(con, paths.esp_events_inbox, run_for(NEXT_DAY))

    assert set(summary.rejected_files) == {str(truncated), str(misplaced)}
    assert "announces 2 events but the file has 0" in summary.rejected_files[str(truncated)]
    assert "does not match its folder 'mailgun'" in summary.rejected_files[str(misplaced)]
    assert intake(con, truncated)[:2] == ("events", "rejected")
    assert intake(con, good) == ("events", "imported", 1, 1, 0)
    assert count(con, "incidents", "kind = 'event_file_rejected'") == 2
    assert list(events_by_id(con).values()) == [(sent["a"], "delivered", "2026-03-03T09:00:00.000000")]


# --- retries and re-runs -------------------------------------------------------------------------


def test_the_same_event_posted_twice_is_imported_once(con, sent, paths: Paths) -> None:
    delivered = sendgrid_event("delivered", sent["a"], email_of("a"))
    click = sendgrid_event("click", sent["a"], email_of("a"), url="https://brightwave.example")
    store_events(paths.esp_events_inbox, "sendgrid", [delivered, click, delivered], RECEIVED)
    store_events(paths.esp_events_inbox, "sendgrid", [delivered, click], RECEIVED + timedelta(minutes=5))  # ESP retry
    first = import_esp_event_files(con, paths.esp_events_inbox, run_for(NEXT_DAY))
    store_events(paths.esp_events_inbox, "sendgrid", [delivered], RECEIVED + timedelta(hours=2))  # a later retry

    second = import_esp_event_files(con, paths.esp_events_inbox, run_for(NEXT_DAY + timedelta(days=1)))
    rerun = import_esp_event_files(con, paths.esp_events_inbox, run_for(NEXT_DAY + timedelta(days=1)))

    assert count(con, "events") == 1 and count(con, "esp_events_skipped") == 1
    assert (first.accepted, first.already_imported, dict(first.skipped)) == (1, 3, {"no_factory_meaning": 1})
    assert (second.accepted, second.already_imported) == (0, 1)
    assert (rerun.files, rerun.accepted) == ([], 0)
    assert count(con, "intake_files", "kind = 'events'") == 3


# --- one-click unsubscribes ----------------------------------------------------------------------


def test_one_click_unsubscribes_reach_the_suppression_list(con, sent, paths: Paths) -> None:
    oneclick = [
        {"event": "unsubscribe", "send_id": sent["a"], "email": email_of("a"), "occurred_at": "2026-03-03T12:00:00.000000Z"},
        {
            "event": "unsubscribe",
            "send_id": "snd_0000000000000000feed",  # a send this warehouse does not have
            "email": "Lars.Nystrom@fjordretail.example",
            "occurred_at": "2026-03-03T12:05:00.000000Z",
        },
    ]
    again = {**oneclick[0], "occurred_at": "2026-03-03T12:00:30.000000Z"}
    store_events(paths.esp_events_inbox, "oneclick", [again], RECEIVED + timedelta(seconds=30))  # clicked twice
    store_events(paths.esp_events_inbox, "oneclick", oneclick[:1], RECEIVED)
    store_events(paths.esp_events_inbox, "oneclick", oneclick[1:], RECEIVED + timedelta(seconds=60))
    run = run_for(NEXT_DAY)

    summary = import_esp_event_files(con, paths.esp_events_inbox, run)
    suppress_from_events(con, run)

    assert events_by_id(con) == {f"oneclick:{sent['a']}": (sent["a"], "unsubscribed", "2026-03-03T12:00:00.000000")}
    assert [r[2] for r in quarantined(con)] == ["unknown_send_id"]  # a send no campaign here has …
    assert summary.suppressed_directly == 1  # … whose signed address is suppressed all the same
    assert summary.already_imported == 1
    assert query(con, "SELECT email, reason, source FROM raw.suppression ORDER BY email") == [
        (email_of("a"), "unsubscribed", f"event:oneclick:{sent['a']}"),
        ("lars.nystrom@fjordretail.example", "unsubscribed", "oneclick:snd_0000000000000000feed"),
    ]


# --- inbound replies ---------------------------------------------------------------------------


def test_a_raw_mime_reply_is_threaded_by_in_reply_to(con, sent, paths: Paths) -> None:
    text = "Yes, let's talk. Thursday 14:00 works.\n\nOn Mon, 2 Mar 2026 Brightwave wrote:\n> Hi Anna,\n> Month-end at ..."
    raw = reply_mime(sent["a"], "Anna Lindqvist <anna.lindqvist@example.se>", text, "<CAH7x1=Qm@mail.example.se>")
    path = store_reply(paths.replies_inbox, raw, RECEIVED, "inbound-parse")

    summary = import_reply_files(con, paths.replies_inbox, run_for(NEXT_DAY))

    rows = query(
        con,
        """SELECT send_id, threaded_by, message_id, in_reply_to, from_address, subject, body_text, sent_at, received_at,
                  received_via, source_file FROM raw.replies""",
    )
    assert rows == [
        (
            sent["a"],
            "in_reply_to",
            "<CAH7x1=Qm@mail.example.se>",
            f"<{sent['a']}@factory.invalid>",
            "anna.lindqvist@example.se",
            "Re: Closing the month in fewer days",
            text.strip(),
            datetime(2026, 3, 3, 9, 15, 2),
            datetime(2026, 3, 3, 12, 0),
            "inbound-parse",
            str(path),
        )
    ]
    assert (summary.stored, summary.quarantined) == (1, 0)
    assert intake(con, path) == ("replies", "imported", 1, 1, 0)


def test_replies_thread_by_references_header_or_body_else_are_quarantined(con, sent, paths: Paths) -> None:
    a, b, c = sent["a"], sent["b"], sent["c"]
    replies = {
        "references": reply_mime(
            None,
            "x@example.com",
            "Not now, maybe Q3.",
            "<r1@example.com>",
            references=f"<{b}@factory.invalid> <CAother@mail.example.com>",
        ),
        "send_id_header": reply_mime(
            None, "y@example.com", "Who are you?", "<r2@example.com>", extra_headers={"X-Factory-Send-Id": c}
        ),
        "body": reply_mime(None, "z@example.com", f"Please remove me.\n\n-----Original-----\nRef: {a}\n", "<r3@example.com>"),
        "unthreaded": reply_mime(None, "w@example.com", "Hello, is this about the invoice?", "<r4@example.com>"),
        "unknown": reply_mime("snd_ffffffffffffffffffff", "v@example.com", "Sure.", "<r5@example.com>"),
        "other campaign": reply_mime(sent["other"], "u@example.com", "Sure.", "<r6@example.com>"),
    }
    for i, raw in enumerate(replies.values()):
        store_reply(paths.replies_inbox, raw, RECEIVED + timedelta(seconds=i), "inbound-parse")
    store_reply(paths.replies_inbox, replies["body"], RECEIVED + timedelta(minutes=9), "inbound-parse")  # posted twice

    summary = import_reply_files(con, paths.replies_inbox, run_for(NEXT_DAY))

    assert sorted(query(con, "SELECT message_id, send_id, threaded_by FROM raw.replies")) == [
        ("<r1@example.com>", b, "references"),
        ("<r2@example.com>", c, "send_id_header"),
        ("<r3@example.com>", a, "body"),
        ("<r6@example.com>", sent["other"], "in_reply_to"),
    ]
    quarantine = query(con, "SELECT message_id, reason_code, reason FROM raw.replies_quarantine ORDER BY message_id")
    assert [(q[0], q[1]) for q in quarantine] == [
        ("<r4@example.com>", "unthreaded"),
        ("<r5@example.com>", "unknown_send_id"),
    ]
    assert "snd_ffffffffffffffffffff" in quarantine[1][2]
    assert (summary.stored, summary.quarantined, summary.already_imported, len(summary.files)) == (4, 2, 1, 7)
    assert import_reply_files(con, paths.replies_inbox, run_for(NEXT_DAY)).files == []
    # The mailbox is shared: a reply to another campaign's send is that campaign's.
    assert query(con, "SELECT campaign_id FROM raw.replies WHERE message_id = '<r6@example.com>'") == [(OTHER_CAMPAIGN,)]


def test_an_empty_reply_file_is_rejected_with_an_incident(con, sent, paths: Paths) -> None:
    paths.replies_inbox.mkdir(parents=True)
    (paths.replies_inbox / "empty.eml").write_bytes(b"\r\n")

    summary = import_reply_files(con, paths.replies_inbox, run_for(NEXT_DAY))

    assert list(summary.rejected_files) == [str(paths.replies_inbox / "empty.eml")]
    assert intake(con, paths.replies_inbox / "empty.eml")[:2] == ("replies", "rejected")
    assert count(con, "incidents", "kind = 'reply_file_rejected'") == 1


# --- the whole path ----------------------------------------------------------------------------


def test_posted_to_the_running_receiver_then_imported(con, sent, paths: Paths) -> None:
    """Every route of the real service, then the observe stage's importers on what it stored."""
    private, public = sendgrid_key_pair()
    token = make_token(UNSUBSCRIBE_SECRET.encode(), sent["c"], email_of("c"))
    batch = json.dumps(
        [
            sendgrid_event("delivered", sent["a"], email_of("a")),
            sendgrid_event("open", sent["a"], email_of("a"), sg_machine_open=True),
        ]
    ).encode()
    reply, content_type = multipart({"email": reply_mime(sent["b"], email_of("b"), "Gern, nächste Woche.", "<m1@example.de>")})
    postmark = json.dumps(postmark_event("SpamComplaint", sent["b"], email_of("b"), ID=7, BouncedAt="2026-03-03T10:00:00Z"))
    with serve_in_thread(build_app(paths, ReceiverConfig.from_env(receiver_env(public)))) as url:
        answers = [
            request("POST", f"{url}/webhooks/sendgrid", batch, sendgrid_headers(private, batch)),
            request("POST", f"{url}/webhooks/sendgrid", batch, sendgrid_headers(private, batch)),  # SendGrid retries
            request("POST", f"{url}/webhooks/mailgun", mailgun_body(mailgun_event("delivered", sent["b"], email_of("b")))),
            request("POST", f"{url}/webhooks/postmark", postmark.encode(), basic_auth(POSTMARK_USER, POSTMARK_PASSWORD)),
            request("POST", f"{url}/unsubscribe/{token}", b"List-Unsubscribe=One-Click"),
            request(
                "POST", f"{url}/inbound", reply, {"Content-Type": content_type, **basic_auth(INBOUND_USER, INBOUND_PASSWORD)}
            ),
        ]
    run = run_for(NEXT_DAY)

    esp = import_esp_event_files(con, paths.esp_events_inbox, run)
    replies = import_reply_files(con, paths.replies_inbox, run)
    suppress_from_events(con, run)

    assert [a.status for a in answers] == [200] * 6
    assert sorted((e[0], e[1]) for e in events_by_id(con).values()) == sorted(
        [(sent["a"], "delivered"), (sent["b"], "complained"), (sent["b"], "delivered"), (sent["c"], "unsubscribed")]
    )
    assert [r[1:3] for r in skipped(con)] == [("open", "machine_open")]
    assert (esp.accepted, esp.quarantined, esp.already_imported, len(esp.files)) == (4, 0, 2, 5)
    assert query(con, "SELECT send_id, threaded_by FROM raw.replies") == [(sent["b"], "in_reply_to")]
    assert replies.stored == 1
    assert {r[0] for r in query(con, "SELECT email FROM raw.suppression")} == {email_of("b"), email_of("c")}
    assert count(con, "events_quarantine") == 0 and CAMPAIGN == run.campaign_id
