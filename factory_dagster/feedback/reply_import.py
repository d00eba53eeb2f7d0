"""Import inbound replies (`<data>/inbox/replies/*.eml`) into `raw.replies`, each threaded to its send.

The files come from the feedback receiver (raw MIME with its trace headers) or from anyone who
drops `.eml` files there (a mailbox export). Each file is imported once, by content hash
(`raw.intake_files`, kind `replies`). This module stores and threads; classifying a reply and
the events that follow from it are the reply classifier's job (`factory_dagster/replies/`).

Threading, first hit wins:

1. `In-Reply-To` names a Factory Message-ID (`<send_id@factory.invalid>`): `in_reply_to`;
2. `References` names one (the nearest ancestor, i.e. the last, first): `references`;
3. an `X-Factory-Send-Id` header (kept by some ESP inbound routes and forwarders): `send_id_header`;
4. the body quotes a Factory Message-ID, an `X-Factory-Send-Id:` line or one of the known
   send ids: `body`.

The mailbox is shared by every campaign: a reply is threaded to any campaign's send and stored
under that send's campaign (`feedback/sent.py`). A reply that names a send no campaign has is
quarantined as `unknown_send_id`; one
that names none as `unthreaded` (`raw.replies_quarantine`, with what it said). The same reply
posted twice (the same Message-ID) is stored once.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path

import duckdb
import pandas as pd

from factory_dagster.delivery.eml import MESSAGE_ID_DOMAIN
from factory_dagster.feedback.sent import send_campaigns, stamp_by_send
from factory_dagster.receiver.inbound import html_to_text
from factory_dagster.receiver.inbox import RECEIVED_AT_HEADER, RECEIVED_VIA_HEADER
from factory_dagster.run_context import RunContext
from factory_dagster.warehouse.file_registry import (
    inbox_files,
    one_import_at_a_time,
    register_file,
    reject_file,
    unregistered_files,
)
from factory_dagster.warehouse.store import insert_rows, transaction

_SEND_ID = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_FACTORY_MESSAGE_ID = re.compile(rf"<({_SEND_ID})@{re.escape(MESSAGE_ID_DOMAIN)}>", re.IGNORECASE)
_SEND_ID_LINE = re.compile(rf"X-Factory-Send-Id:\s*({_SEND_ID})", re.IGNORECASE)
_ANGLE_IDS = re.compile(r"<[^<>\s]+>")
_WORDS = re.compile(_SEND_ID)
QUARANTINE_REASONS = ("unthreaded", "unknown_send_id")


@dataclass
class ReplyImportSummary:
    files: list[str] = field(default_factory=list)
    rejected_files: dict[str, str] = field(default_factory=dict)
    stored: int = 0
    quarantined: int = 0
    already_imported: int = 0


@dataclass(frozen=True)
class ParsedReply:
    reply_id: str
    message_id: str | None
    in_reply_to: str | None
    reference_ids: str | None
    send_id_header: str | None
    from_address: str
    to_address: str | None
    subject: str
    body_text: str
    sent_at: datetime | None
    received_at: datetime
    received_via: str


def _header(message: EmailMessage, name: str) -> str | None:
    value = message.get(name)
    text = " ".join(str(value).split()) if value is not None else ""
    return text or None


def _body_text(message: EmailMessage) -> str:
    """The reply's readable text: the plain part, else the HTML part as text (charset trouble never fails it)."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, KeyError):
        content = (part.get_payload(decode=True) or b"").decode("utf-8", errors="replace")
    text = content.replace("\r\n", "\n") if isinstance(content, str) else ""
    return html_to_text(text) if part.get_content_type() == "text/html" else text.strip()


def _naive_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).replace(tzinfo=None)


def _parse_time(value: str | None, iso: bool) -> datetime | None:
    if not value:
        return None
    try:
        return _naive_utc(datetime.fromisoformat(value) if iso else parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError):
        return None


def parse_reply(path: Path) -> ParsedReply:
    """The fields of one stored message; ValueError when the file holds no message at all."""
    data = Path(path).read_bytes()
    if not data.strip():
        raise ValueError(f"{path}: empty file, expected a MIME message")
    message = BytesParser(policy=policy.default).parsebytes(data)
    if not message.keys():
        raise ValueError(f"{path}: no message headers found")
    message_id = _header(message, "Message-ID")
    from_address = ", ".join(addr for _, addr in getaddresses([str(message.get("From", ""))]) if addr)
    body = _body_text(message)
    received_at = _parse_time(_header(message, RECEIVED_AT_HEADER), iso=True)
    if received_at is None:
        received_at = _naive_utc(datetime.fromtimestamp(Path(path).stat().st_mtime, UTC))
    identity = message_id or f"{from_address}|{_header(message, 'Date')}|{_header(message, 'Subject')}|{body}"
    return ParsedReply(
        reply_id="rpl_" + hashlib.sha256(identity.encode("utf-8", errors="replace")).hexdigest()[:20],
        message_id=message_id,
        in_reply_to=_header(message, "In-Reply-To"),
        reference_ids=_header(message, "References"),
        send_id_header=_header(message, "X-Factory-Send-Id"),
        from_address=from_address,
        to_address=_header(message, "To"),
        subject=_header(message, "Subject") or "",
        body_text=body,
        sent_at=_parse_time(_header(message, "Date"), iso=False),
        received_at=received_at,
        received_via=_header(message, RECEIVED_VIA_HEADER) or "file",
    )


def _factory_ids(header: str | None) -> list[str]:
    """Send ids of the Factory Message-IDs in a header, in order."""
    return [m.group(1) for m in (_FACTORY_MESSAGE_ID.fullmatch(i) for i in _ANGLE_IDS.findall(header or "")) if m]


def thread_candidates(reply: ParsedReply, known_send_ids: set[str]) -> list[tuple[str, str]]:
    """(method, send_id) pairs in threading priority; the first known one threads the reply."""
    candidates = [("in_reply_to", s) for s in _factory_ids(reply.in_reply_to)]
    candidates += [("references", s) for s in reversed(_factory_ids(reply.reference_ids))]
    if reply.send_id_header:
        candidates.append(("send_id_header", reply.send_id_header.strip()))
    body = reply.body_text
    candidates += [("body", m.group(1)) for m in _FACTORY_MESSAGE_ID.finditer(body)]
    candidates += [("body", m.group(1)) for m in _SEND_ID_LINE.finditer(body)]
    candidates += [("body", word) for word in dict.fromkeys(_WORDS.findall(body)) if word in known_send_ids]
    return candidates


def thread_reply(reply: ParsedReply, known_send_ids: set[str]) -> tuple[str, str] | tuple[None, str]:
    """(send_id, method) when threaded to a known send, else (None, reason_code)."""
    candidates = thread_candidates(reply, known_send_ids)
    for method, send_id in candidates:
        if send_id in known_send_ids:
            return send_id, method
    return None, "unknown_send_id" if candidates else "unthreaded"


def _quarantine_reason(code: str, reply: ParsedReply, known_send_ids: set[str]) -> str:
    if code == "unthreaded":
        return (
            "names no Factory send: In-Reply-To/References hold no <send_id@factory.invalid>, "
            "no X-Factory-Send-Id header, no send id in the body"
        )
    named = sorted({s for _, s in thread_candidates(reply, known_send_ids)})
    return f"names send(s) {', '.join(named)}, none of which any campaign has sent"


def _raw_record(reply: ParsedReply) -> str:
    fields = {
        "message_id": reply.message_id,
        "in_reply_to": reply.in_reply_to,
        "references": reply.reference_ids,
        "x_factory_send_id": reply.send_id_header,
        "from": reply.from_address,
        "subject": reply.subject,
        "text": reply.body_text[:4000],
    }
    return json.dumps(fields, ensure_ascii=False)


@one_import_at_a_time("replies")
def import_reply_files(con: duckdb.DuckDBPyConnection, replies_inbox: Path, run: RunContext) -> ReplyImportSummary:
    """Store and thread every new reply file, all in one transaction (an unreadable file is rejected on its own)."""
    summary = ReplyImportSummary()
    campaigns = send_campaigns(con)  # the mailbox is shared: a reply is stored under its send's campaign
    send_ids = set(campaigns)
    reply_ids = {r[0] for r in con.execute("SELECT reply_id FROM raw.replies").fetchall()}
    threaded, quarantine, registered = [], [], []
    for path, sha in unregistered_files(con, "replies", inbox_files(replies_inbox, {".eml"})):
        try:
            reply = parse_reply(path)
        except (OSError, ValueError) as exc:
            reject_file(con, run, "replies", path, sha, str(exc))
            summary.rejected_files[str(path)] = str(exc)
            continue
        send_id, method_or_code = thread_reply(reply, send_ids)
        if send_id is None:
            quarantine.append(_quarantine_row(path, reply, method_or_code, send_ids))
            counts = (1, 0, 1)
        elif reply.reply_id not in reply_ids:
            threaded.append(_reply_row(reply, send_id, method_or_code, path))
            counts = (1, 1, 0)
        else:
            counts = (1, 0, 0)  # the same reply posted again
        reply_ids.add(reply.reply_id)
        registered.append((path, sha, counts))
    if not registered:
        return summary
    with transaction(con):
        summary.stored = insert_rows(con, "replies", stamp_by_send(run, pd.DataFrame(threaded), campaigns))
        summary.quarantined = insert_rows(con, "replies_quarantine", run.stamp(pd.DataFrame(quarantine), "imported_at"))
        for path, sha, counts in registered:
            register_file(con, run, "replies", path, sha, counts)
    summary.files = [str(path) for path, _, _ in registered]
    summary.already_imported = len(registered) - len(threaded) - len(quarantine)
    return summary


def _quarantine_row(path: Path, reply: ParsedReply, code: str, send_ids: set[str]) -> dict:
    return {
        "source_file": str(path),
        "message_id": reply.message_id,
        "from_address": reply.from_address,
        "subject": reply.subject,
        "reason_code": code,
        "reason": _quarantine_reason(code, reply, send_ids),
        "raw_record": _raw_record(reply),
    }


def _reply_row(r: ParsedReply, send_id: str, method: str, path: Path) -> dict:
    return {
        "reply_id": r.reply_id,
        "send_id": send_id,
        "threaded_by": method,
        "message_id": r.message_id,
        "in_reply_to": r.in_reply_to,
        "reference_ids": r.reference_ids,
        "from_address": r.from_address,
        "to_address": r.to_address,
        "subject": r.subject,
        "body_text": r.body_text,
        "sent_at": pd.Timestamp(r.sent_at) if r.sent_at else pd.NaT,
        "received_at": pd.Timestamp(r.received_at),
        "received_via": r.received_via,
        "source_file": str(path),
    }
