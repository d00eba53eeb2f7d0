"""Inbound replies posted by an ESP's inbound-parse route, turned into one raw MIME message.

SendGrid's Inbound Parse posts `multipart/form-data`. With "POST the raw, full MIME message"
on, the field `email` holds the message exactly as received: we keep those bytes untouched.
Without it, the message arrives parsed: `from`, `to`, `subject`, `text`, `html`, `headers`
(the raw header block) and `charsets` (JSON: each field's charset). We rebuild a plain-text
message from them, carrying over the headers that thread a reply (Message-ID, In-Reply-To,
References, Date, X-Factory-Send-Id); attachments are not kept in that mode.

The form is parsed with the standard library's MIME parser rather than a form parser, because
it hands back each field's raw bytes: a raw message must be stored as sent, whatever its charset.
"""

from __future__ import annotations

import html
import json
import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser, HeaderParser

THREAD_HEADERS = ("Message-ID", "In-Reply-To", "References", "Date", "X-Factory-Send-Id")
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.IGNORECASE | re.DOTALL)


class InboundError(ValueError):
    """The post is not an inbound-parse payload we can store; the message says what is missing."""


def form_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body as raw bytes (the first value of each name)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise InboundError(f"expected multipart/form-data, got {content_type or 'no content type'!r}")
    envelope = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", errors="replace")
    form = BytesParser(policy=policy.HTTP).parsebytes(envelope + body)
    if not form.is_multipart() or form.defects:
        raise InboundError("malformed multipart/form-data body")
    fields: dict[str, bytes] = {}
    for part in form.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or name in fields:
            continue
        if part.get_content_type() == "message/rfc822":
            payload = part.get_payload(0).as_bytes()
        else:
            payload = part.get_payload(decode=True) or b""
        fields[name] = payload
    return fields


def raw_message(fields: dict[str, bytes]) -> bytes:
    """The message to store: the raw `email` field as posted, or one rebuilt from the parsed fields."""
    raw = fields.get("email", b"")
    if raw.strip():
        return raw
    if not fields.get("from", b"").strip() or not (fields.get("text", b"").strip() or fields.get("html", b"").strip()):
        raise InboundError("expected the raw message in field 'email', or 'from' with 'text' or 'html'")
    charsets = _charsets(fields.get("charsets", b""))

    def field(name: str) -> str:
        return _decode(fields.get(name, b""), charsets.get(name, "utf-8")).strip()

    original = HeaderParser(policy=policy.default).parsestr(field("headers")) if field("headers") else None
    message = EmailMessage()
    try:
        message["From"] = field("from")
        if field("to"):
            message["To"] = field("to")
        message["Subject"] = field("subject")
        for name in THREAD_HEADERS:
            if original is not None and original.get(name):
                message[name] = str(original[name])
    except (ValueError, TypeError) as exc:
        raise InboundError(f"a header cannot be carried over: {exc}") from exc
    message.set_content(field("text") or html_to_text(field("html")), charset="utf-8")
    return message.as_bytes(policy=policy.SMTP)


def _charsets(data: bytes) -> dict[str, str]:
    try:
        parsed = json.loads(data or b"{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}


def _decode(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return data.decode("utf-8", errors="replace")


def html_to_text(markup: str) -> str:
    """A readable text of an HTML-only reply (tags dropped, entities decoded); the classifier needs words."""
    text = re.sub(r"<br\s*/?>|</p\s*>|</div\s*>", "\n", markup, flags=re.IGNORECASE)
    return html.unescape(_TAG.sub("", text)).strip()
