"""The send stage through SMTP against a real server on loopback (aiosmtpd), and a real DuckDB warehouse.

What arrives is read back from the server: headers, the HTML alternative, the one-click token,
TLS and the AUTH login. Retries, bounces, dropped connections, timeouts after the data, pacing and
daily caps are driven by what the server answers; waits go through a fake clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from helpers_db import DAY, SPEC, Lead, add_message, add_suppression, query, run_for
from helpers_smtp import (
    Recorder,
    authenticator_for,
    free_port,
    self_signed_certificate,
    server_tls_context,
    start_server,
)

from factory_dagster.delivery.config import Mailbox, RetryPolicy, SmtpSettings, UnsubscribeLinks
from factory_dagster.delivery.errors import TransportUnusable
from factory_dagster.delivery.mailboxes import MailboxPool
from factory_dagster.delivery.outbox import pending_messages
from factory_dagster.delivery.sender import SendJob, send_queued
from factory_dagster.delivery.smtp import SmtpTransport
from factory_dagster.delivery.stage import DeliverySetup, run_sends
from factory_dagster.delivery.states import QueuedSend, enqueue, transaction
from factory_dagster.delivery.unsubscribe import read_token
from factory_dagster.feedback.suppression import suppress_from_events
from factory_dagster.warehouse.store import connect

SECRET = b"unsubscribe-secret-for-the-smtp-tests-0123456789"
LINKS = UnsubscribeLinks("https://feedback.brightwave.example", SECRET)
MAYA = Mailbox("maya@brightwave-ledger.example", "Maya Okafor", None, None)
SAM = Mailbox("sam@brightwave-ledger.example", "Sam Reid", None, None)
USER, PASSWORD = "maya", "correct-horse-battery-staple"


class FakeClock:
    """Pacing and backoff waits advance this clock instead of the test."""

    def __init__(self) -> None:
        self.now = time.time()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


def readers(n: int, start: int = 0) -> list[Lead]:
    return [
        Lead(
            f"reader{i}@company{i}.example", f"Reader{i}", "Doe", f"Company {i} Ltd", "Software", 250, "CFO", "C-level", "Nordics"
        )
        for i in range(start, start + n)
    ]


@pytest.fixture
def con(tmp_path: Path):
    with connect(tmp_path / "warehouse.duckdb") as connection:
        yield connection


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(recorder: Recorder):
    controller = start_server(recorder)
    yield controller
    controller.stop()


def smtp_setup(port: int, clock: FakeClock, *, mailboxes: list[Mailbox] | None = None, **settings: object) -> DeliverySetup:
    options = {"tls": "none", "timeout_s": 5.0, "retry": RetryPolicy(retries=2, backoff_s=0.5, backoff_max_s=5.0), **settings}
    return DeliverySetup(
        SmtpTransport(SmtpSettings("127.0.0.1", port, **options)),
        mailboxes or [MAYA],
        LINKS,
        options["retry"],
        clock,
        clock.sleep,
    )


def outbox(con) -> dict[str, tuple]:
    rows = query(con, "SELECT send_id, state, mailbox, attempts, last_error, header_message_id FROM raw.outbox")
    return {r[0]: r[1:] for r in rows}


def states(con) -> dict[str, str]:
    return {send_id: row[0] for send_id, row in outbox(con).items()}


def test_messages_arrive_with_their_headers_and_the_outbox_records_each_move(con, server, recorder: Recorder) -> None:
    sent = [add_message(con, lead, DAY) for lead in readers(3)]
    clock = FakeClock()
    before = datetime.now(UTC)

    result = run_sends(con, SPEC, run_for(DAY), smtp_setup(server.port, clock, mailboxes=[MAYA, SAM]))

    assert sorted(result.report.sent) == sorted(m["send_id"] for m in sent) and result.queued == 3
    assert len(recorder.received) == 3
    by_send = {r.email["X-Factory-Send-Id"]: r for r in recorder.received}
    rows = outbox(con)
    for message in sent:
        got = by_send[message["send_id"]]
        email = got.email
        state, mailbox, attempts, error, header_message_id = rows[message["send_id"]]
        assert (state, attempts, error) == ("sent", 1, None)
        assert email["Message-ID"] == header_message_id == f"<{message['send_id']}@factory.invalid>"
        assert email["To"] == message["to_email"] and got.rcpt_tos == [message["to_email"]]
        assert email["From"].addresses[0].addr_spec == got.mail_from == mailbox
        assert email["Subject"] == message["subject"]
        assert before - timedelta(seconds=2) <= parsedate_to_datetime(email["Date"]) <= datetime.now(UTC) + timedelta(seconds=2)
        mailto, https = (part.strip() for part in str(email["List-Unsubscribe"]).split(","))
        assert mailto == f"<mailto:{mailbox}?subject=unsubscribe>"
        token = read_token(SECRET, https.rstrip(">").rsplit("/", 1)[1])
        assert (token.send_id, token.email) == (message["send_id"], message["to_email"])
        assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert email.get_body(("plain",)).get_content().replace("\r\n", "\n").startswith(message["body"])
        html = email.get_body(("html",)).get_content()
        assert f"<p>Hi {message['body'].split(',')[0][3:]},</p>" in html and SPEC.sender.postal_address in html
    # Rotation over the two mailboxes (no pacing here).
    assert sorted(r.mail_from for r in recorder.received) == sorted([MAYA.email, MAYA.email, SAM.email])
    # raw.sends says where each went; the server's queue id is in the transport ref.
    sends = query(con, "SELECT send_id, transport, status, transport_ref, partition_day FROM raw.sends ORDER BY send_id")
    assert [(t, s, d) for _, t, s, _, d in sends] == [("smtp", "sent", DAY)] * 3
    assert all(ref.startswith(f"smtp 127.0.0.1:{server.port}: 250 2.0.0 Ok: queued as Q") for *_, ref, _ in sends)
    moves = query(con, "SELECT send_id, from_state, to_state FROM raw.outbox_transitions ORDER BY occurred_at, rowid")
    for message in sent:
        assert [(f, t) for s, f, t in moves if s == message["send_id"]] == [
            (None, "queued"),
            ("queued", "claimed"),
            ("claimed", "sent"),
        ]

    # A re-run of the day sends nothing twice.
    again = run_sends(con, SPEC, run_for(DAY, run_id="run-2"), smtp_setup(server.port, clock))
    assert again.report.sent == [] and len(recorder.received) == 3


def test_starttls_with_auth_against_a_private_ca(con, tmp_path: Path, recorder: Recorder) -> None:
    cert, key = self_signed_certificate(tmp_path)
    controller = start_server(
        recorder,
        tls_context=server_tls_context(cert, key),
        require_starttls=True,
        authenticator=authenticator_for(USER, PASSWORD),
        auth_required=True,
    )
    try:
        add_message(con, readers(1)[0], DAY)
        clock = FakeClock()
        setup = smtp_setup(controller.port, clock, tls="starttls", ca_file=str(cert), username=USER, password=PASSWORD)
        assert len(run_sends(con, SPEC, run_for(DAY), setup).report.sent) == 1
        (got,) = recorder.received
        assert got.tls and got.login == USER

        # Wrong credentials: nothing goes, the send waits in the queue, and the password is nowhere.
        add_message(con, readers(1, start=1)[0], DAY)
        bad = smtp_setup(controller.port, clock, tls="starttls", ca_file=str(cert), username=USER, password="wrong-" + PASSWORD)
        with pytest.raises(TransportUnusable, match="refused the credentials of FACTORY_SMTP_USERNAME: 535") as caught:
            run_sends(con, SPEC, run_for(DAY, run_id="run-2"), bad)
        assert PASSWORD not in str(caught.value) and len(recorder.received) == 1
        assert sorted(states(con).values()) == ["queued", "sent"]
        stored = " ".join(
            str(v)
            for table in ("outbox", "outbox_transitions", "incidents", "sends")
            for row in query(con, f"SELECT * FROM raw.{table}")
            for v in row
        )
        assert PASSWORD not in stored and "transport_stopped" in stored

        # A certificate the client does not trust (no FACTORY_SMTP_CA_FILE) is refused with a hint.
        untrusted = smtp_setup(controller.port, clock, tls="starttls", username=USER, password=PASSWORD)
        with pytest.raises(TransportUnusable, match="not trusted.*FACTORY_SMTP_CA_FILE"):
            run_sends(con, SPEC, run_for(DAY, run_id="run-3"), untrusted)
        assert len(recorder.received) == 1
    finally:
        controller.stop()


def test_implicit_tls(con, tmp_path: Path, recorder: Recorder) -> None:
    cert, key = self_signed_certificate(tmp_path)
    controller = start_server(recorder, ssl_context=server_tls_context(cert, key))
    try:
        add_message(con, readers(1)[0], DAY)
        run_sends(con, SPEC, run_for(DAY), smtp_setup(controller.port, FakeClock(), tls="implicit", ca_file=str(cert)))
    finally:
        controller.stop()
    (got,) = recorder.received
    assert got.tls and got.email["X-Factory-Send-Id"] in states(con)


def test_starttls_is_required_when_configured(con, server, recorder: Recorder) -> None:
    add_message(con, readers(1)[0], DAY)
    with pytest.raises(TransportUnusable, match="does not offer STARTTLS; refusing to send in clear text"):
        run_sends(con, SPEC, run_for(DAY), smtp_setup(server.port, FakeClock(), tls="starttls"))
    assert recorder.received == [] and list(states(con).values()) == ["queued"]


def test_temporary_refusals_are_retried_with_backoff(con, server, recorder: Recorder) -> None:
    first, second = (add_message(con, lead, DAY) for lead in readers(2))
    recorder.data_replies.extend(["451 4.3.0 Try again later", "452 4.3.1 Insufficient storage"])
    clock = FakeClock()

    result = run_sends(con, SPEC, run_for(DAY), smtp_setup(server.port, clock))

    assert sorted(result.report.sent) == sorted([first["send_id"], second["send_id"]])
    assert result.report.retries == 2 and clock.sleeps == [0.5, 1.0]  # exponential backoff
    assert recorder.message_ids() == {f"<{m['send_id']}@factory.invalid>": 1 for m in (first, second)}
    attempts = {s: row[2] for s, row in outbox(con).items()}
    assert sorted(attempts.values()) == [1, 3]


def test_a_recipient_that_stays_busy_goes_back_to_the_queue_and_the_others_go(con, server, recorder: Recorder) -> None:
    busy, other = (add_message(con, lead, DAY) for lead in readers(2))
    recorder.rcpt_replies[busy["to_email"]] = "450 4.2.1 Mailbox busy"
    clock = FakeClock()

    result = run_sends(con, SPEC, run_for(DAY), smtp_setup(server.port, clock))

    assert result.report.requeued == [busy["send_id"]] and result.report.sent == [other["send_id"]]
    assert result.report.stopped is None and clock.sleeps == [0.5, 1.0]
    state, _, attempts, error, _ = outbox(con)[busy["send_id"]]
    assert (state, attempts, error) == ("queued", 3, f"RCPT TO <{busy['to_email']}>: 450 4.2.1 Mailbox busy")
    # It is still pending, and goes with the next run once the mailbox takes mail.
    assert busy["send_id"] in set(pending_messages(con, DAY, SPEC.campaign_id).send_id)
    del recorder.rcpt_replies[busy["to_email"]]
    assert run_sends(con, SPEC, run_for(DAY, run_id="run-2"), smtp_setup(server.port, clock)).report.sent == [busy["send_id"]]
    assert sorted(recorder.message_ids().values()) == [1, 1]


@pytest.mark.parametrize("where", ["rcpt", "data"])
def test_a_permanent_refusal_is_a_bounce_that_suppresses_the_address(con, server, recorder: Recorder, where: str) -> None:
    bad, good = (add_message(con, lead, DAY) for lead in readers(2))
    if where == "rcpt":
        recorder.rcpt_replies[bad["to_email"]] = "550 5.1.1 No such user"
    else:
        recorder.data_replies.append("554 5.7.1 Message rejected")

    result = run_sends(con, SPEC, run_for(DAY), smtp_setup(server.port, FakeClock()))

    reply = "550 5.1.1 No such user" if where == "rcpt" else "554 5.7.1 Message rejected"
    bounced = bad if where == "rcpt" else next(m for m in (bad, good) if m["send_id"] in result.report.bounced)
    delivered = good if bounced is bad else bad
    assert result.report.bounced == [bounced["send_id"]] and result.report.sent == [delivered["send_id"]]
    assert result.report.retries == 0  # a permanent refusal is not retried
    assert query(con, "SELECT status, transport_ref FROM raw.sends WHERE send_id = ?", [bounced["send_id"]]) == [
        ("bounced", f"bounced: {reply}")
    ]
    assert outbox(con)[bounced["send_id"]][0::3] == ("failed", f"bounced: {reply}")
    assert query(con, "SELECT send_id, event_type FROM raw.events") == [(bounced["send_id"], "bounced")]
    # The observe stage's suppression picks the bounce up; the address is never written to again.
    suppress_from_events(con, run_for(DAY + timedelta(days=1)))
    assert query(con, "SELECT email, reason FROM raw.suppression") == [(bounced["to_email"].lower(), "bounced")]
    assert len(recorder.received) == 1


def test_a_server_that_keeps_closing_stops_the_batch_and_the_rest_waits(con, server, recorder: Recorder) -> None:
    messages = [add_message(con, lead, DAY) for lead in readers(3)]
    recorder.data_replies.extend(["421 4.3.2 Service shutting down"] * 3)
    clock = FakeClock()

    result = run_sends(con, SPEC, run_for(DAY), smtp_setup(server.port, clock))

    assert result.report.sent == [] and len(result.report.requeued) == 1 and len(result.report.not_tried) == 2
    assert "421 4.3.2 Service shutting down" in result.report.stopped and clock.sleeps == [0.5, 1.0]
    assert set(states(con).values()) == {"queued"} and recorder.received == []
    (incident,) = query(con, "SELECT detail FROM raw.incidents WHERE kind = 'transport_stopped'")
    assert "3 sends stay queued" in incident[0]

    # The next run, with the server back, sends every one of them once.
    again = run_sends(con, SPEC, run_for(DAY, run_id="run-2"), smtp_setup(server.port, clock))
    assert sorted(again.report.sent) == sorted(m["send_id"] for m in messages)
    assert sorted(recorder.message_ids().values()) == [1, 1, 1]


def test_an_unreachable_server_leaves_everything_queued(con, recorder: Recorder) -> None:
    messages = [add_message(con, lead, DAY) for lead in readers(2)]
    port = free_port()  # nothing listens here yet
    clock = FakeClock()

    result = run_sends(con, SPEC, run_for(DAY), smtp_setup(port, clock))

    assert result.report.sent == [] and "cannot reach 127.0.0.1" in result.report.stopped and clock.sleeps == [0.5, 1.0]
    assert set(states(con).values()) == {"queued"}
    from aiosmtpd.controller import Controller

    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        again = run_sends(con, SPEC, run_for(DAY, run_id="run-2"), smtp_setup(port, clock))
    finally:
        controller.stop()
    assert sorted(again.report.sent) == sorted(m["send_id"] for m in messages)


def test_a_timeout_after_the_data_leaves_the_send_uncertain_and_it_is_never_sent_again(con, server, recorder: Recorder) -> None:
    slow, other = (add_message(con, lead, DAY) for lead in readers(2))
    recorder.data_delay_s = 0.6  # the server takes the data, then answers after the client gave up

    result = run_sends(con, SPEC, run_for(DAY), smtp_setup(server.port, FakeClock(), timeout_s=0.2))
    recorder.data_delay_s = 0.0

    assert len(result.report.uncertain) == 2  # both were slow here: both may have arrived
    assert all("may have accepted it" in outbox(con)[s][3] for s in result.report.uncertain)
    assert result.report.retries == 0  # never retried: a retry could deliver twice
    (incident,) = query(con, "SELECT detail FROM raw.incidents WHERE kind = 'sends_uncertain'")
    assert "factory outbox uncertain" in incident[0]
    # The next run sends neither again; they are not pending and not counted as sent.
    again = run_sends(con, SPEC, run_for(DAY, run_id="run-2"), smtp_setup(server.port, FakeClock()))
    assert again.report.sent == [] and pending_messages(con, DAY, SPEC.campaign_id).empty
    assert recorder.message_ids() == {f"<{m['send_id']}@factory.invalid>": 1 for m in (slow, other)}
    assert query(con, "SELECT count(*) FROM raw.sends") == [(0,)]


def test_suppression_is_checked_again_right_before_each_send(con, server, recorder: Recorder) -> None:
    unsubscribed, same_domain, fine = (add_message(con, lead, DAY) for lead in readers(3))
    run = run_for(DAY)
    with transaction(con):
        enqueue(
            con,
            [QueuedSend(m["send_id"], m["lead_id"], m["message_id"], m["to_email"]) for m in (unsubscribed, same_domain, fine)],
            run,
            "smtp",
            "test",
        )
    # Suppressed after the sends were queued (e.g. while they waited for a mailbox): an address, and a whole domain.
    add_suppression(con, unsubscribed["to_email"].upper(), "unsubscribed", DAY)
    add_suppression(con, "@" + same_domain["to_email"].split("@")[1], "do_not_contact", DAY)
    clock = FakeClock()
    job = SendJob(
        run,
        SPEC.sender.postal_address,
        "test",
        SmtpTransport(SmtpSettings("127.0.0.1", server.port, tls="none")),
        MailboxPool([MAYA], clock=clock, sleep=clock.sleep),
        LINKS,
    )

    report = send_queued(con, [unsubscribed["send_id"], same_domain["send_id"], fine["send_id"]], job)
    job.transport.close()

    assert report.suppressed == [unsubscribed["send_id"], same_domain["send_id"]] and report.sent == [fine["send_id"]]
    assert [r.rcpt_tos for r in recorder.received] == [[fine["to_email"]]]
    assert {s: (row[0], row[3]) for s, row in outbox(con).items() if s != fine["send_id"]} == {
        unsubscribed["send_id"]: ("failed", "suppressed"),
        same_domain["send_id"]: ("failed", "suppressed"),
    }


def test_mailboxes_rotate_at_their_own_pace_and_stop_at_their_daily_caps(con, server, recorder: Recorder) -> None:
    messages = [add_message(con, lead, DAY) for lead in readers(5)]
    maya = Mailbox(MAYA.email, MAYA.name, daily_cap=2, per_minute=2)  # one message every 30 s
    sam = Mailbox(SAM.email, SAM.name, daily_cap=1, per_minute=1)
    clock = FakeClock()

    result = run_sends(con, SPEC, run_for(DAY), smtp_setup(server.port, clock, mailboxes=[maya, sam]))

    assert [r.mail_from for r in recorder.received] == [maya.email, sam.email, maya.email]
    assert clock.sleeps == [30.0]  # maya's second message waited for her pace; sam's first went at once
    assert len(result.report.sent) == 3 and len(result.report.no_mailbox) == 2
    assert sorted(states(con).values()) == ["queued", "queued", "sent", "sent", "sent"]
    (incident,) = query(con, "SELECT detail FROM raw.incidents WHERE kind = 'mailbox_caps_reached'")
    assert "2 sends stay queued" in incident[0] and f"{maya.email} 2" in incident[0]

    # A restart the same day finds the caps used up: nothing more goes.
    again = run_sends(con, SPEC, run_for(DAY, run_id="run-2"), smtp_setup(server.port, clock, mailboxes=[maya, sam]))
    assert again.report.sent == [] and len(recorder.received) == 3
    # The next day the queue goes first, within the fresh caps.
    tomorrow = run_sends(con, SPEC, run_for(DAY + timedelta(days=1)), smtp_setup(server.port, clock, mailboxes=[maya, sam]))
    assert len(tomorrow.report.sent) == 2 and set(states(con).values()) == {"sent"}
    assert sorted(recorder.message_ids()) == sorted(f"<{m['send_id']}@factory.invalid>" for m in messages)


def test_a_refused_sender_stops_sending_and_is_not_a_bounce(con, server, recorder: Recorder) -> None:
    message = add_message(con, readers(1)[0], DAY)
    recorder.mail_replies[MAYA.email] = "553 5.7.1 Sender address rejected: not owned by user"

    with pytest.raises(TransportUnusable, match=f"refused the sender <{MAYA.email}>: 553 5.7.1"):
        run_sends(con, SPEC, run_for(DAY), smtp_setup(server.port, FakeClock()))

    assert states(con) == {message["send_id"]: "queued"}  # the recipient is not to blame: no bounce, no suppression
    assert query(con, "SELECT count(*) FROM raw.events") == [(0,)] and recorder.received == []


def test_a_connection_the_server_closed_while_idle_is_reopened_without_a_retry(con, recorder: Recorder) -> None:
    first, second = (add_message(con, lead, DAY) for lead in readers(2))
    controller = start_server(recorder, timeout=0.3)  # the server drops a connection idle for 0.3 s
    try:
        run = run_for(DAY)
        with transaction(con):
            sends = [QueuedSend(m["send_id"], m["lead_id"], m["message_id"], m["to_email"]) for m in (first, second)]
            enqueue(con, sends, run, "smtp", "test")
        clock = FakeClock()
        transport = SmtpTransport(SmtpSettings("127.0.0.1", controller.port, tls="none"))
        job = SendJob(
            run, SPEC.sender.postal_address, "test", transport, MailboxPool([MAYA], clock=clock, sleep=clock.sleep), LINKS
        )
        assert send_queued(con, [first["send_id"]], job).sent == [first["send_id"]]
        time.sleep(0.6)  # meanwhile the server closed the connection the transport keeps
        report = send_queued(con, [second["send_id"]], job)
        transport.close()
    finally:
        controller.stop()
    assert report.sent == [second["send_id"]] and report.retries == 0 and clock.sleeps == []
    assert outbox(con)[second["send_id"]][2] == 1 and len(recorder.received) == 2
