"""Signed one-click unsubscribe tokens: made at send time, checked by the feedback receiver.

Why signed: the link in a message's `List-Unsubscribe` header names the recipient; without a
signature anyone could unsubscribe anyone by guessing send ids. A token is
`<payload>.<signature>`, both base64url without padding: the payload is the send id and the
address as compact JSON, the signature the HMAC-SHA256 of the payload under a secret that comes
only from the environment (`FACTORY_UNSUBSCRIBE_SECRET`, at least 32 characters) and is never
logged or stored. Tokens do not expire: RFC 8058 asks that an unsubscribe link keep working.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

SECRET_ENV = "FACTORY_UNSUBSCRIBE_SECRET"
MIN_SECRET_CHARS = 32


class BadToken(ValueError):
    """A token that is malformed or whose signature does not match (say nothing more to the caller)."""


class MissingSecret(RuntimeError):
    """The environment has no usable unsubscribe secret."""


@dataclass(frozen=True)
class UnsubscribeRequest:
    """What a verified token names."""

    send_id: str
    email: str


def secret_from_env(environ: Mapping[str, str] | None = None) -> bytes:
    """The signing secret from `FACTORY_UNSUBSCRIBE_SECRET`; a clear error when it is missing or short."""
    value = (os.environ if environ is None else environ).get(SECRET_ENV, "")
    if len(value) < MIN_SECRET_CHARS:
        state = "is not set" if not value else f"has {len(value)} characters"
        raise MissingSecret(
            f"{SECRET_ENV} {state}; set it to a random string of at least {MIN_SECRET_CHARS} characters "
            '(for example: python -c "import secrets; print(secrets.token_urlsafe(48))")'
        )
    return value.encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BadToken("malformed token") from exc


def _signature(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest())


def make_token(secret: bytes, send_id: str, email: str) -> str:
    """The token for one recipient of one send (the address is lower-cased: suppression is)."""
    payload = _b64(json.dumps({"s": send_id, "e": email.strip().lower()}, separators=(",", ":")).encode())
    return f"{payload}.{_signature(secret, payload)}"


def read_token(secret: bytes, token: str) -> UnsubscribeRequest:
    """The request a token names, if its signature is ours (constant-time compare); else BadToken."""
    payload, dot, signature = token.strip().partition(".")
    if not dot or not payload or not signature or not payload.isascii():
        raise BadToken("malformed token")
    if not hmac.compare_digest(signature, _signature(secret, payload)):
        raise BadToken("bad signature")
    try:
        fields = json.loads(_unb64(payload))
        return UnsubscribeRequest(send_id=str(fields["s"]), email=str(fields["e"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise BadToken("malformed token") from exc


def unsubscribe_url(base_url: str, token: str) -> str:
    """The https one-click link the receiver serves (`<base>/unsubscribe/<token>`)."""
    return f"{base_url.rstrip('/')}/unsubscribe/{quote(token, safe='')}"
