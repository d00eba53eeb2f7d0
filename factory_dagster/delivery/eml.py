"""Outgoing mail as .eml files: the default transport, and the contract every transport keeps.

The file transport lets the whole line run with no mail server: each message becomes a
standard RFC 5322 file that any mail client opens. Delivery is idempotent per `send_id`
(a re-run of the send stage never delivers twice) and atomic (a crash never leaves a
half-written file that a later run would take for a delivered message).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

MESSAGE_ID_DOMAIN = "factory.invalid"
# The Date header is derived from the send day, not the clock, so a file is reproducible.
SEND_TIME_UTC = time(9, 0, tzinfo=UTC)
# send_id becomes a file name and a Message-ID: no separators, no leading dot.
_SAFE_SEND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class OutgoingMessage:
    """One message ready to leave the line; `send_id` is its idempotency key."""

    send_id: str
    day: date
    from_name: str
    from_email: str
    to_email: str
    subject: str
    body: str
    postal_address: str


@runtime_checkable
class Transport(Protocol):
    """What the send stage needs from a transport (file today, SMTP later)."""

    name: str

    def deliver(self, msg: OutgoingMessage) -> str:
        """Hand `msg` over at most once per send_id; return the reference stored in `sends.transport_ref`."""
        ...


def build_email(msg: OutgoingMessage) -> EmailMessage:
    """The RFC 5322 message for `msg`, shared by every transport so they send the same bytes.

    The sender's postal address is appended as a footer unless the body already has it:
    commercial email must carry one, and the drafts are not required to.
    """
    _check_send_id(msg.send_id)
    email = EmailMessage()
    email["From"] = Address(display_name=msg.from_name, addr_spec=msg.from_email)
    email["To"] = Address(addr_spec=msg.to_email)
    email["Subject"] = msg.subject
    email["Date"] = format_datetime(datetime.combine(msg.day, SEND_TIME_UTC))
    email["Message-ID"] = f"<{msg.send_id}@{MESSAGE_ID_DOMAIN}>"
    email["X-Factory-Send-Id"] = msg.send_id
    email["List-Unsubscribe"] = f"<mailto:{msg.from_email}?subject=unsubscribe>"
    email.set_content(_with_postal_address(msg.body, msg.postal_address), charset="utf-8")
    return email


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
    instead of writing them again under its own day. One transport writes an outbox at a
    time (the send stage delivers inside its warehouse write transaction, and DuckDB admits
    one writer), so a temp file found on the way is what a killed writer left and is removed.
    """

    name = "file"

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
                partial.unlink(missing_ok=True)
        return self._delivered

    def deliver(self, msg: OutgoingMessage) -> str:
        """Write the message unless this send_id was delivered already, on any day (then return that path)."""
        path = self.path_for(msg)
        delivered = self.delivered()
        if msg.send_id not in delivered:
            data = build_email(msg).as_bytes(policy=SMTP)
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, data)
            delivered[msg.send_id] = path
        return str(delivered[msg.send_id])


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename: readers see all of the file or none."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
