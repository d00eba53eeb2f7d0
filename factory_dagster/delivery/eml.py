"""Outgoing mail as .eml files: the default transport, and the contract every transport keeps.

The file transport lets the whole line run with no mail server: each message becomes a
standard RFC 5322 file that any mail client opens. Delivery is idempotent per `send_id`
(a re-run of the send stage never delivers twice) and atomic (a crash never leaves a
half-written file that a later run would take for a delivered message).

`build_email` is the one place a message is built, for every transport, so the `.eml` file
shows exactly what an SMTP server would receive: plain text with an HTML alternative, the
Message-ID and send id, and RFC 8058 one-click `List-Unsubscribe` headers when the send
stage has an https link for the recipient. Bodies are 7-bit clean (quoted-printable or
base64), so no server has to support 8BITMIME.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from email.headerregistry import Address, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP, EmailPolicy, default
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from factory_dagster.atomic import write_atomically

MESSAGE_ID_DOMAIN = "factory.invalid"
# The Date header is derived from the send day, not the clock, so a file is reproducible.
SEND_TIME_UTC = time(9, 0, tzinfo=UTC)
# A message file is written in milliseconds: a temp file older than this was left by a killed writer. A fresher one
# may be another campaign's run writing at this moment (on the PostgreSQL warehouse runs send in parallel).
STALE_PARTIAL_SECONDS = 300
# send_id becomes a file name and a Message-ID: no separators, no leading dot.
_SAFE_SEND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MESSAGE_ID = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")
# A link in the text: up to whitespace or a character that cannot be part of a bare URL in prose.
_URL = re.compile(r"https?://[^\s<>\"']+")
_URL_TRAILING_PUNCTUATION = ".,;:!?)]}'\""


def message_id_for(send_id: str) -> str:
    """The Message-ID of a send: derived from the send id alone, so it is fixed before any transport sees it.

    Replies quote it (In-Reply-To, References) and the feedback receiver threads them back to the send.
    """
    _check_send_id(send_id)
    return f"<{send_id}@{MESSAGE_ID_DOMAIN}>"


@dataclass(frozen=True)
class OutgoingMessage:
    """One message ready to leave the line; `send_id` is its idempotency key.

    `message_id` is the Message-ID the outbox fixed when it queued the send (default: `message_id_for`),
    `unsubscribe_url` the recipient's signed https one-click link (none: the mailto link only), and
    `sent_at` the Date header (default: the send day at 09:00 UTC, so a file is reproducible; the SMTP
    path passes the real time, as servers expect).
    """

    send_id: str
    day: date
    from_name: str
    from_email: str
    to_email: str
    subject: str
    body: str
    postal_address: str
    message_id: str | None = None
    unsubscribe_url: str | None = None
    sent_at: datetime | None = None


@runtime_checkable
class Transport(Protocol):
    """What the send stage needs from a transport (`.eml` files or SMTP).

    `idempotent`: whether handing the same send_id over twice delivers it once. The file transport
    can tell (the file is there or not), so a send it was handed when a run died is simply handed
    over again; an SMTP server cannot, so such a send becomes `uncertain` instead (delivery/states.py).
    """

    name: str
    idempotent: bool

    def deliver(self, msg: OutgoingMessage) -> str:
        """Hand `msg` over; return the reference stored in `sends.transport_ref`.

        Failures are `delivery.errors` exceptions saying whether a retry is safe.
        """
        ...


class _UriListHeader(UnstructuredHeader):
    """`List-Unsubscribe`: folded only between its `<URI>` items, never RFC 2047-encoded.

    Why: the generic folder turns a word longer than a line (the signed https link) into an
    encoded word, and a receiver then sees no usable URI, so one-click unsubscribe breaks.
    """

    @classmethod
    def parse(cls, value: str, kwds: dict) -> None:
        if not value.isascii():
            raise ValueError("List-Unsubscribe URIs must be ASCII (percent-encode them)")
        super().parse(value, kwds)

    def fold(self, *, policy: EmailPolicy) -> str:  # type: ignore[override]
        items = [item.strip() for item in str(self).split(",")]
        return f"{self.name}: " + f",{policy.linesep} ".join(items) + policy.linesep


class _CachedHeaderRegistry(HeaderRegistry):
    """The standard registry, with each header's class built once instead of at every header set (a third of the build time)."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        if key not in self._classes:
            self._classes[key] = super().__getitem__(name)
        return self._classes[key]


_HEADERS = _CachedHeaderRegistry()
_HEADERS.map_to_type("list-unsubscribe", _UriListHeader)
_POLICY = default.clone(cte_type="7bit", header_factory=_HEADERS)


def build_email(msg: OutgoingMessage) -> EmailMessage:
    """The RFC 5322 message for `msg`, shared by every transport so they send the same bytes.

    The sender's postal address is appended as a footer unless the body already has it:
    commercial email must carry one, and the drafts are not required to.
    """
    _check_send_id(msg.send_id)
    message_id = msg.message_id or message_id_for(msg.send_id)
    if not _MESSAGE_ID.match(message_id):
        raise ValueError(f"Message-ID {message_id!r} is not of the form <local@domain>")
    email = EmailMessage(policy=_POLICY)
    email["From"] = Address(display_name=msg.from_name, addr_spec=msg.from_email)
    email["To"] = Address(addr_spec=msg.to_email)
    email["Subject"] = msg.subject
    email["Date"] = format_datetime(msg.sent_at or datetime.combine(msg.day, SEND_TIME_UTC))
    email["Message-ID"] = message_id
    email["X-Factory-Send-Id"] = msg.send_id
    # The send id again where each ESP hands it back in its webhook events (the receiver finds the
    # send by it): SendGrid's unique args, Mailgun's variables, Postmark's metadata. Other servers ignore them.
    email["X-SMTPAPI"] = json.dumps({"unique_args": {"factory_send_id": msg.send_id}})
    email["X-Mailgun-Variables"] = json.dumps({"factory_send_id": msg.send_id})
    email["X-PM-Metadata-factory_send_id"] = msg.send_id
    mailto = f"<mailto:{msg.from_email}?subject=unsubscribe>"
    if msg.unsubscribe_url:
        if not msg.unsubscribe_url.startswith("https://"):
            raise ValueError(f"one-click unsubscribe needs an https link (RFC 8058), got {msg.unsubscribe_url!r}")
        email["List-Unsubscribe"] = f"{mailto}, <{msg.unsubscribe_url}>"
        email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    else:
        email["List-Unsubscribe"] = mailto
    text = _with_postal_address(msg.body, msg.postal_address)
    email.set_content(text, charset="utf-8")
    email.add_alternative(text_to_html(text), subtype="html", charset="utf-8")
    # A boundary derived from the content, not a random one: the same message is the same bytes.
    # "=_" never occurs in quoted-printable or base64 text, and the digest not in the plain text.
    email.set_boundary("=_factory_" + hashlib.sha256(f"{msg.send_id}\n{text}".encode()).hexdigest()[:32])
    return email


def email_bytes(msg: OutgoingMessage) -> bytes:
    """The message as it goes on the wire and into the `.eml` file (CRLF line ends)."""
    return build_email(msg).as_bytes(policy=SMTP)


def text_to_html(text: str) -> str:
    """The plain text as simple HTML: escaped, paragraphs kept, http(s) links clickable."""
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text.strip()) if p.strip()]
    body = "\n".join("<p>" + "<br>\n".join(_linkify(line) for line in p.split("\n")) + "</p>" for p in paragraphs)
    return f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n{body}\n</body></html>\n'


def _linkify(line: str) -> str:
    out, pos = [], 0
    for match in _URL.finditer(line):
        url = match.group(0).rstrip(_URL_TRAILING_PUNCTUATION)
        if len(url) <= len("https://"):
            continue
        out.append(html.escape(line[pos : match.start()]))
        out.append(f'<a href="{html.escape(url, quote=True)}">{html.escape(url)}</a>')
        pos = match.start() + len(url)
    out.append(html.escape(line[pos:]))
    return "".join(out)


def _check_send_id(send_id: str) -> None:
    if not _SAFE_SEND_ID.match(send_id):
        raise ValueError(f"send_id {send_id!r} is not safe as a file name and Message-ID")


def _with_postal_address(body: str, postal_address: str) -> str:
    if postal_address in body:
        return body
    return f"{body.rstrip()}\n\n{postal_address}\n"


class FileTransport:
    """Writes each message to `<outbox>/<YYYY-MM-DD>/<send_id>.eml`; the path is the transport ref.

    A send_id is delivered once in the whole outbox, not once per day folder: when a run is
    killed after writing some files but before the send stage committed its rows, those
    messages are still pending, and the next day's run must find them already delivered
    instead of writing them again under its own day. A temp file found on the way that is
    older than STALE_PARTIAL_SECONDS is what a killed writer left, and is removed; a fresher
    one may be another campaign's run writing now (runs send in parallel on PostgreSQL).
    """

    name = "file"
    idempotent = True

    def __init__(self, outbox: Path) -> None:
        self.outbox = Path(outbox)
        self._delivered: dict[str, Path] | None = None

    def path_for(self, msg: OutgoingMessage) -> Path:
        _check_send_id(msg.send_id)
        return self.outbox / f"{msg.day:%Y-%m-%d}" / f"{msg.send_id}.eml"

    def delivered(self) -> dict[str, Path]:
        """send_id -> file of every message in the outbox, any day (listed once per transport)."""
        if self._delivered is None:
            self._delivered = {p.stem: p for p in sorted(self.outbox.glob("*/*.eml"))} if self.outbox.is_dir() else {}
            for partial in self.outbox.glob("*/.*.eml.*.tmp"):
                with contextlib.suppress(FileNotFoundError):  # another writer may rename it meanwhile
                    if datetime.now(UTC).timestamp() - partial.stat().st_mtime > STALE_PARTIAL_SECONDS:
                        partial.unlink()
        return self._delivered

    def deliver(self, msg: OutgoingMessage) -> str:
        """Write the message unless this send_id was delivered already, on any day (then return that path)."""
        path = self.path_for(msg)
        delivered = self.delivered()
        if msg.send_id not in delivered:
            data = email_bytes(msg)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, data)
            delivered[msg.send_id] = path
        return str(delivered[msg.send_id])
