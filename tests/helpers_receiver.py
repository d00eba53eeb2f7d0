"""What an ESP does to reach the feedback receiver: sign like it, post like it, shape payloads like its docs.

The payloads follow each provider's documented examples (SendGrid Event Webhook, Mailgun
webhooks' `signature` + `event-data`, Postmark's per-RecordType JSON, SendGrid Inbound Parse's
multipart form), with our send ids where a real message would carry them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

UNSUBSCRIBE_SECRET = "rcv-test-" + "k3Qz8" * 8
MAILGUN_KEY = "key-" + "9f1c2b7e" * 4
POSTMARK_USER, POSTMARK_PASSWORD = "postmark-hooks", "p0stm4rk-s3cret-pa55"
INBOUND_USER, INBOUND_PASSWORD = "inbound", "inb0und-s3cret-pa55"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
    """One real HTTP request (urllib); error statuses are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.headers, exc.read())


def sendgrid_key_pair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key pair; the public half as SendGrid shows it (base64 DER SubjectPublicKeyInfo)."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(der).decode("ascii")


def receiver_env(sendgrid_public_key: str) -> dict[str, str]:
    return {
        "FACTORY_UNSUBSCRIBE_SECRET": UNSUBSCRIBE_SECRET,
        "FACTORY_SENDGRID_WEBHOOK_PUBLIC_KEY": sendgrid_public_key,
        "FACTORY_MAILGUN_SIGNING_KEY": MAILGUN_KEY,
        "FACTORY_POSTMARK_WEBHOOK_USER": POSTMARK_USER,
        "FACTORY_POSTMARK_WEBHOOK_PASSWORD": POSTMARK_PASSWORD,
        "FACTORY_INBOUND_USER": INBOUND_USER,
        "FACTORY_INBOUND_PASSWORD": INBOUND_PASSWORD,
    }


def sendgrid_headers(private: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """SendGrid's signature headers: ECDSA-SHA256 over the timestamp's bytes followed by the raw body."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode("ascii"),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


def mailgun_body(event_data: dict[str, Any], key: str = MAILGUN_KEY, timestamp: int | None = None) -> bytes:
    """A Mailgun webhook body: `signature` (HMAC-SHA256 of timestamp + token, hex) and `event-data`."""
    stamp, token = str(int(time.time()) if timestamp is None else timestamp), secrets.token_hex(25)
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {"signature": {"timestamp": stamp, "token": token, "signature": signature}, "event-data": event_data}
    ).encode()


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")}


def multipart(fields: dict[str, bytes | str]) -> tuple[bytes, str]:
    """A multipart/form-data body (as an inbound-parse route posts it) and its content type."""
    boundary = "xYzZY" + uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        data = value.encode("utf-8") if isinstance(value, str) else value
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def files_under(folder: Path) -> set[Path]:
    """Every file below a folder, hidden temp files included (none may be left behind)."""
    return {p for p in Path(folder).rglob("*") if p.is_file()} if Path(folder).exists() else set()


# --- payloads shaped like the providers' documented examples ---------------------------------------


def sendgrid_event(
    event: str, send_id: str | None, email: str, timestamp: int = 1772528400, custom_arg: bool = True, **extra: Any
) -> dict[str, Any]:
    """One SendGrid Event Webhook event; our send id in smtp-id (the Message-ID we set) and as a custom arg."""
    record: dict[str, Any] = {
        "email": email,
        "timestamp": timestamp,
        "smtp-id": f"<{send_id}@factory.invalid>" if send_id else "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": event,
        "category": ["factory"],
        "sg_event_id": "sg_" + hashlib.sha256(f"{event}|{send_id}|{timestamp}|{extra}".encode()).hexdigest()[:22],
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    }
    if send_id and custom_arg:
        record["factory_send_id"] = send_id  # custom_args arrive as top-level keys
    return {**record, **extra}


def mailgun_event(event: str, send_id: str | None, email: str, timestamp: float = 1772528400.25, **extra: Any) -> dict[str, Any]:
    """Mailgun `event-data`: our send id as a user variable and the Message-ID we set in message.headers."""
    record: dict[str, Any] = {
        "id": "mg" + hashlib.sha256(f"{event}|{send_id}|{timestamp}|{extra}".encode()).hexdigest()[:20],
        "timestamp": timestamp,
        "log-level": "info",
        "event": event,
        "recipient": email,
        "recipient-domain": email.split("@")[1],
        "envelope": {"transport": "smtp", "sender": "outreach@brightwave.example", "targets": email},
        "message": {
            "headers": {
                "to": email,
                "message-id": f"{send_id}@factory.invalid" if send_id else "20260303091500.1.ABCDEF@mg.brightwave.example",
                "from": "Brightwave <outreach@brightwave.example>",
                "subject": "Closing the month in fewer days",
            },
            "attachments": [],
            "size": 2371,
        },
        "tags": [],
        "user-variables": {"factory_send_id": send_id} if send_id else {},
        "flags": {"is-authenticated": True, "is-test-mode": False},
    }
    return {**record, **extra}


def postmark_event(record_type: str, send_id: str | None, email: str, **extra: Any) -> dict[str, Any]:
    """One Postmark webhook object; our send id in Metadata (X-PM-Metadata-factory_send_id when sent over SMTP)."""
    record: dict[str, Any] = {
        "RecordType": record_type,
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{send_id}|{email}")),
        "Recipient": email,
        "Tag": "factory",
        "Metadata": {"factory_send_id": send_id} if send_id else {"a_key": "a_value"},
    }
    return {**record, **extra}


def reply_mime(
    send_id: str | None,
    sender: str,
    text: str,
    message_id: str,
    references: str | None = None,
    extra_headers: dict[str, str] | None = None,
    charset: str = "utf-8",
) -> bytes:
    """A reply as a mail client writes it: In-Reply-To (unless None), a quoted original below."""
    headers = {
        "From": sender,
        "To": "Brightwave <outreach@brightwave.example>",
        "Subject": "Re: Closing the month in fewer days",
        "Date": "Tue, 03 Mar 2026 10:15:02 +0100",
        "Message-ID": message_id,
        "MIME-Version": "1.0",
        "Content-Type": f"text/plain; charset={charset}",
        "Content-Transfer-Encoding": "8bit",
    }
    if send_id:
        headers["In-Reply-To"] = f"<{send_id}@factory.invalid>"
    if references:
        headers["References"] = references
    headers.update(extra_headers or {})
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode("ascii") + b"\r\n" + text.replace("\n", "\r\n").encode(charset)
