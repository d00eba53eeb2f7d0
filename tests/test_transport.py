"""The file transport: standard headers, exactly-once delivery, no half-written files."""

from __future__ import annotations

import json
import os
from datetime import date
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from factory_dagster.delivery import FileTransport, OutgoingMessage, Transport

ADDRESS = "Brightwave Ledger Ltd, 41 Harbour Street, Edinburgh EH6 6PN, United Kingdom"


def make_message(**overrides: object) -> OutgoingMessage:
    fields = {
        "send_id": "snd_0001",
        "day": date(2026, 3, 2),
        "from_name": "Maya Okafor",
        "from_email": "maya@brightwave-ledger.example",
        "to_email": "ana@northwind.example",
        "subject": "Closing the month faster",
        "body": 'Hi Ana,\nWould a 20-minute call next week be useful?\nReply "unsubscribe" to opt out.',
        "postal_address": ADDRESS,
    }
    return OutgoingMessage(**{**fields, **overrides})


def parse(path: str) -> EmailMessage:
    return message_from_bytes(Path(path).read_bytes(), policy=policy.default)


def text_of(email: EmailMessage) -> str:
    """The plain-text body as the reader sees it (the file keeps the wire format's CRLF line ends)."""
    return email.get_body(("plain",)).get_content().replace("\r\n", "\n")


def test_writes_standard_headers_under_the_send_day(tmp_path: Path) -> None:
    msg = make_message()
    path = FileTransport(tmp_path).deliver(msg)

    assert Path(path) == tmp_path / "2026-03-02" / "snd_0001.eml"
    email = parse(path)
    assert email["From"].addresses[0].display_name == "Maya Okafor"
    assert email["From"].addresses[0].addr_spec == msg.from_email
    assert email["To"] == msg.to_email
    assert email["Subject"] == msg.subject
    assert email["Date"].datetime.date() == msg.day
    assert email["Message-ID"] == "<snd_0001@factory.invalid>"
    assert email["X-Factory-Send-Id"] == "snd_0001"
    # Where SendGrid, Mailgun and Postmark hand the send id back in their webhook events.
    assert json.loads(email["X-SMTPAPI"]) == {"unique_args": {"factory_send_id": "snd_0001"}}
    assert json.loads(email["X-Mailgun-Variables"]) == {"factory_send_id": "snd_0001"}
    assert email["X-PM-Metadata-factory_send_id"] == "snd_0001"
    assert email["List-Unsubscribe"] == "<mailto:maya@brightwave-ledger.example?subject=unsubscribe>"
    body = text_of(email)
    assert body.startswith(msg.body) and ADDRESS in body


def test_postal_address_is_not_repeated_when_the_body_has_it(tmp_path: Path) -> None:
    msg = make_message(body=f"Hi Ana,\n\n{ADDRESS}\n")
    assert text_of(parse(FileTransport(tmp_path).deliver(msg))).count(ADDRESS) == 1


def test_utf8_names_subject_and_body_round_trip(tmp_path: Path) -> None:
    msg = make_message(from_name="Zoë Ångström", subject="Café ☕: un cierre más rápido", body="Hola Íñigo — naïve 😊")
    email = parse(FileTransport(tmp_path).deliver(msg))

    assert email["From"].addresses[0].display_name == "Zoë Ångström"
    assert email["Subject"] == msg.subject
    assert email.get_body(("plain",)).get_content_charset() == "utf-8"
    assert text_of(email).startswith(msg.body)


def test_redelivery_returns_the_same_path_without_rewriting(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path)
    first = transport.deliver(make_message())
    Path(first).write_bytes(b"marker")

    again = transport.deliver(make_message(subject="changed on the re-run"))

    assert again == first
    assert Path(first).read_bytes() == b"marker"
    assert [p.name for p in (tmp_path / "2026-03-02").iterdir()] == ["snd_0001.eml"]


def test_a_failed_write_leaves_no_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    transport = FileTransport(tmp_path)

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        transport.deliver(make_message())
    assert list((tmp_path / "2026-03-02").iterdir()) == []

    monkeypatch.undo()
    path = transport.deliver(make_message())
    assert parse(path)["X-Factory-Send-Id"] == "snd_0001"
    assert [p.name for p in (tmp_path / "2026-03-02").iterdir()] == ["snd_0001.eml"]


@pytest.mark.parametrize("send_id", ["../escape", "a/b", ".hidden", ""])
def test_unsafe_send_ids_are_refused(tmp_path: Path, send_id: str) -> None:
    with pytest.raises(ValueError, match="send_id"):
        FileTransport(tmp_path).deliver(make_message(send_id=send_id))
    assert not any(tmp_path.rglob("*"))


def test_header_injection_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        FileTransport(tmp_path).deliver(make_message(subject="Hi\nBcc: everyone@example.com"))


def test_file_transport_satisfies_the_protocol(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path)
    assert isinstance(transport, Transport)
    assert transport.name == "file"
