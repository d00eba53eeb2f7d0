"""Replies fetched from a real IMAP server (dovecot on loopback, started per test) into the replies inbox.

Each message lands once, byte for byte, as the receiver would store it; a re-run fetches nothing
new; a crash between writing a message and marking it fetched re-fetches it without storing the
reply twice; the mailbox is only read; a wrong password or an untrusted certificate is a clear
error that never shows the password. The imports run on a real DuckDB warehouse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers_db import LEADS, add_message, add_send, query, run_for
from helpers_imap import PASSWORD, USERNAME, running_dovecot
from helpers_smtp import free_port

from factory_dagster.feedback import imap_fetch
from factory_dagster.feedback.imap_fetch import STATE_FILE_NAME, ImapFetchError, ImapSettings, fetch_replies
from factory_dagster.feedback.reply_import import import_reply_files
from factory_dagster.receiver.inbox import store_reply
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import connect

CET = timezone(timedelta(hours=1))
ARRIVED = [
    datetime(2026, 3, 3, 10, 15, 2, tzinfo=CET),
    datetime(2026, 3, 3, 11, 40, 9, tzinfo=CET),
    datetime(2026, 3, 3, 12, 5, 0, tzinfo=UTC),
]
GARBAGE = b"\xff\xfe\x80 this is no mail message {{{ \xc3\x28 ]]]\r\n\x1b[0m\r\n"


def reply(message_id: str, text: str, *, in_reply_to: str | None = None, references: str | None = None) -> bytes:
    """A reply as a mail client writes it: UTF-8 text sent as 8-bit, CRLF line ends."""
    headers = [
        ("From", "Jörg Müller <joerg.mueller@example.de>"),
        ("To", "Brightwave <replies@brightwave.example>"),
        ("Subject", "Re: Closing the month in fewer days"),
        ("Date", "Tue, 03 Mar 2026 10:15:02 +0100"),
        ("Message-ID", message_id),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Transfer-Encoding", "8bit"),
    ]
    headers += [("In-Reply-To", in_reply_to)] if in_reply_to else []
    headers += [("References", references)] if references else []
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (head + "\r\n" + text.replace("\n", "\r\n") + "\r\n").encode("utf-8")


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.under(tmp_path / "data")


@pytest.fixture
def warehouse(paths: Paths):
    """A real warehouse with two sends of the campaign (their send ids)."""
    with connect(paths.warehouse) as con:
        sends = [add_send(con, add_message(con, lead)) for lead in LEADS[:2]]
        yield con, sends


@pytest.fixture
def dovecot(tmp_path: Path):
    with running_dovecot(tmp_path) as server:
        yield server


def three_replies(send_a: str, send_b: str) -> list[bytes]:
    """One threaded by In-Reply-To, one 8-bit body threaded by References, one that is no message at all."""
    return [
        reply("<imap-1@mail.example.de>", "Yes, let's talk. Thursday 14:00 works.", in_reply_to=f"<{send_a}@factory.invalid>"),
        reply(
            "<imap-2@mail.example.de>",
            "Grüße aus München – gerne nächste Woche.\nÇa marche aussi pour Zoë. 你好\n\n> Hi Jörg,\n> month-end …",
            references=f"<{send_b}@factory.invalid> <CAother@mail.example.de>",
        ),
        GARBAGE,
    ]


def trace(when: datetime, eol: bytes = b"\r\n") -> bytes:
    """The receiver's trace headers for a message the server received at `when`."""
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
    return b"X-Factory-Received-At: " + stamp + eol + b"X-Factory-Received-Via: imap" + eol


def eml_files(paths: Paths) -> list[Path]:
    return sorted(paths.replies_inbox.glob("*.eml"))


def state(paths: Paths) -> dict:
    return json.loads((paths.replies_inbox / STATE_FILE_NAME).read_text())["mailboxes"]


def test_new_replies_are_stored_once_byte_for_byte_and_import_threads_them(dovecot, warehouse, paths: Paths) -> None:
    con, (send_a, send_b) = warehouse
    messages = three_replies(send_a, send_b)
    for raw, when in zip(messages, ARRIVED, strict=True):
        dovecot.append(raw, when)

    report = fetch_replies(dovecot.settings(), paths.replies_inbox, batch_size=2)

    assert (report.found, report.written, report.vanished, report.batches, report.last_uid) == (3, 3, 0, 2, 3)
    assert sorted(p.read_bytes() for p in eml_files(paths)) == sorted(
        trace(when) + raw for raw, when in zip(messages, ARRIVED, strict=True)
    )
    assert sorted(report.files) == eml_files(paths)
    assert state(paths) == {f"{USERNAME}@127.0.0.1:{dovecot.port}/INBOX": {"uidvalidity": report.uidvalidity, "last_uid": 3}}
    assert all("\\Seen" not in flags for flags in dovecot.flags().values()), "the mailbox must only be read"

    imported = import_reply_files(con, paths.replies_inbox, run_for())

    assert (imported.stored, imported.quarantined, imported.rejected_files) == (2, 1, {})
    rows = query(con, "SELECT message_id, send_id, threaded_by, received_at, received_via, body_text FROM raw.replies ORDER BY 1")
    assert [r[:5] for r in rows] == [
        ("<imap-1@mail.example.de>", send_a, "in_reply_to", datetime(2026, 3, 3, 9, 15, 2), "imap"),
        ("<imap-2@mail.example.de>", send_b, "references", datetime(2026, 3, 3, 10, 40, 9), "imap"),
    ]
    assert rows[1][5].startswith("Grüße aus München – gerne nächste Woche.\nÇa marche aussi pour Zoë. 你好")
    assert query(con, "SELECT reason_code FROM raw.replies_quarantine") == [("unthreaded",)]

    again = fetch_replies(dovecot.settings(), paths.replies_inbox, batch_size=2)
    assert (again.found, again.written, again.batches, len(eml_files(paths))) == (0, 0, 0, 3)

    later = reply("<imap-4@mail.example.de>", "Ich bin bis 10. März nicht im Büro.", in_reply_to=f"<{send_a}@factory.invalid>")
    dovecot.append(later, datetime(2026, 3, 4, 8, 0, tzinfo=UTC))
    newest = fetch_replies(dovecot.settings(), paths.replies_inbox, batch_size=2)
    assert (newest.found, newest.written, newest.last_uid, len(eml_files(paths))) == (1, 1, 4, 4)
    assert newest.files[0].read_bytes() == trace(datetime(2026, 3, 4, 8, 0, tzinfo=UTC)) + later
    assert import_reply_files(con, paths.replies_inbox, run_for()).stored == 1


CRASHING_FETCH = """
import os, sys
from pathlib import Path
from factory_dagster.feedback import imap_fetch

real_store, crash_after, stored = imap_fetch.store_reply, int(sys.argv[2]), []

def store_then_crash(*args, **kwargs):
    stored.append(real_store(*args, **kwargs))
    if len(stored) == crash_after:
        os._exit(9)  # the process dies here: no cleanup, no logout, the state not yet moved past this message
    return stored[-1]

imap_fetch.store_reply = store_then_crash
imap_fetch.fetch_replies(imap_fetch.ImapSettings.from_env(), Path(sys.argv[1]), batch_size=2)
"""


def test_a_crash_between_writing_and_marking_refetches_but_import_stores_each_reply_once(
    dovecot, warehouse, paths: Paths
) -> None:
    con, (send_a, send_b) = warehouse
    messages = three_replies(send_a, send_b)
    for raw, when in zip(messages, ARRIVED, strict=True):
        dovecot.append(raw, when)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_IMAP_")} | dovecot.env()

    # Batch 1 (messages 1, 2) is written and marked; message 3 is written, then the process dies.
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_FETCH, str(paths.replies_inbox), "3"], env=environment, capture_output=True, timeout=60
    )
    assert crashed.returncode == 9, crashed.stderr.decode()
    assert len(eml_files(paths)) == 3
    assert [entry["last_uid"] for entry in state(paths).values()] == [2]
    first = import_reply_files(con, paths.replies_inbox, run_for())
    assert (first.stored, first.quarantined) == (2, 1)

    refetched = fetch_replies(dovecot.settings(), paths.replies_inbox, batch_size=2)

    assert (refetched.found, refetched.written, refetched.last_uid) == (1, 1, 3)  # only the unmarked one, again
    assert len(eml_files(paths)) == 3  # the same bytes under the same name: no second copy
    assert refetched.files[0].read_bytes() == trace(ARRIVED[2]) + GARBAGE
    second = import_reply_files(con, paths.replies_inbox, run_for())
    assert (second.stored, second.quarantined) == (0, 0)
    assert query(con, "SELECT count(*), count(DISTINCT message_id) FROM raw.replies") == [(2, 2)]
    assert query(con, "SELECT count(*) FROM raw.replies_quarantine") == [(1,)]


def test_an_interrupt_before_the_first_mark_refetches_all_and_a_retimed_copy_is_still_stored_once(
    dovecot, warehouse, paths: Paths, monkeypatch
) -> None:
    con, (send_a, send_b) = warehouse
    for raw, when in zip(three_replies(send_a, send_b), ARRIVED, strict=True):
        dovecot.append(raw, when)
    real_store = imap_fetch.store_reply

    def store_then_interrupt(*args, **kwargs):
        real_store(*args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C right after the first message is on disk

    monkeypatch.setattr(imap_fetch, "store_reply", store_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        fetch_replies(dovecot.settings(), paths.replies_inbox)
    monkeypatch.undo()
    assert len(eml_files(paths)) == 1 and not (paths.replies_inbox / STATE_FILE_NAME).exists()
    # Even a copy with other bytes (the same reply stored again by another path, later) is one reply.
    store_reply(paths.replies_inbox, three_replies(send_a, send_b)[0], ARRIVED[0] + timedelta(hours=5), "inbound-parse")
    assert import_reply_files(con, paths.replies_inbox, run_for()).stored == 1

    refetched = fetch_replies(dovecot.settings(), paths.replies_inbox)

    assert (refetched.found, refetched.written, refetched.last_uid, len(eml_files(paths))) == (3, 3, 3, 4)
    summary = import_reply_files(con, paths.replies_inbox, run_for())
    assert (summary.stored, summary.quarantined) == (1, 1)
    assert query(con, "SELECT message_id, count(*) FROM raw.replies GROUP BY 1 ORDER BY 1") == [
        ("<imap-1@mail.example.de>", 1),
        ("<imap-2@mail.example.de>", 1),
    ]


def test_a_message_gone_between_listing_and_fetching_keeps_the_state_before_it(dovecot, paths: Paths, monkeypatch) -> None:
    for i, when in enumerate(ARRIVED, start=1):
        dovecot.append(reply(f"<gone-{i}@example.de>", f"reply {i}"), when)
    real_list = imap_fetch._list_new

    def list_then_expunge(imap, settings, last_uid):
        listed = real_list(imap, settings, last_uid)
        dovecot.expunge(2)  # another client deletes message 2 before we fetch it
        return listed

    monkeypatch.setattr(imap_fetch, "_list_new", list_then_expunge)
    report = fetch_replies(dovecot.settings(), paths.replies_inbox)
    monkeypatch.undo()

    assert (report.found, report.written, report.vanished, report.last_uid) == (3, 2, 1, 1)
    assert [entry["last_uid"] for entry in state(paths).values()] == [1]
    again = fetch_replies(dovecot.settings(), paths.replies_inbox)
    assert (again.found, again.written, again.last_uid, len(eml_files(paths))) == (1, 1, 3, 2)


def test_a_renumbered_folder_is_fetched_again_without_new_files(dovecot, paths: Paths) -> None:
    for i, when in enumerate(ARRIVED[:2], start=1):
        dovecot.append(reply(f"<renumbered-{i}@example.de>", f"reply {i}"), when)
    first = fetch_replies(dovecot.settings(), paths.replies_inbox)
    state_file = paths.replies_inbox / STATE_FILE_NAME
    document = json.loads(state_file.read_text())
    for entry in document["mailboxes"].values():
        entry["uidvalidity"] += 1  # as if the server had rebuilt the folder with new UIDs
    state_file.write_text(json.dumps(document))

    again = fetch_replies(dovecot.settings(), paths.replies_inbox)

    assert again.uidvalidity_changed and (again.found, again.written) == (2, 2)
    assert sorted(again.files) == sorted(first.files) == eml_files(paths)
    assert [entry["uidvalidity"] for entry in state(paths).values()] == [first.uidvalidity]
    assert "renumbered" in again.summary()


def test_a_non_ascii_folder_is_read_and_a_missing_one_is_a_clear_error(dovecot, paths: Paths) -> None:
    dovecot.create_folder("Réponses clients")
    assert (dovecot.mail_root / USERNAME / "Maildir" / ".R&AOk-ponses clients").is_dir()  # RFC 3501 modified UTF-7
    dovecot.append(reply("<folder-1@example.fr>", "Oui, volontiers."), ARRIVED[0], folder="Réponses clients")
    dovecot.append(reply("<inbox-1@example.fr>", "Not this one."), ARRIVED[1])

    report = fetch_replies(dovecot.settings(folder="Réponses clients"), paths.replies_inbox)

    assert (report.found, report.written) == (1, 1)
    assert b"<folder-1@example.fr>" in report.files[0].read_bytes()
    with pytest.raises(ImapFetchError, match=r"opening folder 'Archive/Replies' failed: .*FACTORY_IMAP_FOLDER"):
        fetch_replies(dovecot.settings(folder="Archive/Replies"), paths.replies_inbox)


def test_a_wrong_password_is_a_clear_error_that_never_shows_the_password(dovecot, paths: Paths) -> None:
    dovecot.append(reply("<pw-1@example.de>", "hello"), ARRIVED[0])
    wrong = "N0t-the-" + PASSWORD[::-1]

    with pytest.raises(ImapFetchError) as caught:
        fetch_replies(dovecot.settings(password=wrong), paths.replies_inbox)

    message = str(caught.value)
    assert f"127.0.0.1:{dovecot.port} refused the login of '{USERNAME}'" in message
    assert "AUTHENTICATIONFAILED" in message and "FACTORY_IMAP_PASSWORD" in message
    shown = "".join(traceback.format_exception(caught.value)) + repr(caught.value) + repr(dovecot.settings(password=wrong))
    assert wrong not in shown and PASSWORD not in shown
    assert not paths.replies_inbox.exists(), "nothing is written when the login fails"


def test_a_non_ascii_password_logs_in_with_sasl_plain(tmp_path: Path, paths: Paths) -> None:
    password = "pässwörd-Ω-" + "k9" * 6
    with running_dovecot(tmp_path, password=password) as server:
        server.append(reply("<utf8-pw@example.de>", "hello"), ARRIVED[0])
        report = fetch_replies(server.settings(), paths.replies_inbox)
        assert (report.found, report.written) == (1, 1)


def test_tls_implicit_and_starttls_trust_the_ca_file_and_refuse_without_it(tmp_path: Path, paths: Paths) -> None:
    with running_dovecot(tmp_path, tls=True) as server:
        server.append(reply("<tls-1@example.de>", "over TLS"), ARRIVED[0])

        implicit = fetch_replies(server.settings(tls="implicit"), paths.replies_inbox)
        starttls = fetch_replies(server.settings(tls="starttls"), tmp_path / "other-inbox")

        assert (implicit.written, starttls.written) == (1, 1)
        assert implicit.files[0].read_bytes() == starttls.files[0].read_bytes()
        for mode in ("implicit", "starttls"):
            with pytest.raises(ImapFetchError, match=r"certificate is not trusted .*FACTORY_IMAP_CA_FILE"):
                fetch_replies(server.settings(tls=mode, ca_file=None), tmp_path / f"untrusted-{mode}")
        logins = [line for line in server.log.read_text().splitlines() if f"Login: user=<{USERNAME}>" in line]
    # append (by STARTTLS), implicit, starttls: each session was encrypted (dovecot marks loopback clear text "secured")
    assert len(logins) == 3 and all(", TLS," in line for line in logins), logins


def test_an_unreachable_server_and_a_damaged_state_file_are_clear_errors(paths: Paths) -> None:
    nobody_listens = ImapSettings(host="127.0.0.1", port=free_port(), tls="none", username=USERNAME, password=PASSWORD)
    with pytest.raises(
        ImapFetchError, match=rf"cannot reach IMAP server 127.0.0.1:{nobody_listens.port}: ConnectionRefusedError"
    ):
        fetch_replies(nobody_listens, paths.replies_inbox)

    paths.replies_inbox.mkdir(parents=True)
    (paths.replies_inbox / STATE_FILE_NAME).write_text("{not json")
    with pytest.raises(
        ImapFetchError, match=rf"cannot read the IMAP fetch state {paths.replies_inbox / STATE_FILE_NAME}: .*delete"
    ):
        fetch_replies(nobody_listens, paths.replies_inbox)
