"""Who sent a request: each ESP's documented check, done before anything is stored.

- SendGrid (Signed Event Webhook): ECDSA P-256 with SHA-256 over the bytes of the
  `X-Twilio-Email-Event-Webhook-Timestamp` header followed by the raw body; the signature
  (`X-Twilio-Email-Event-Webhook-Signature`) is base64 DER; the public key is the base64 DER
  (SubjectPublicKeyInfo) SendGrid shows under Mail Settings, or the same key as PEM.
- Mailgun: HMAC-SHA256, keyed with the webhook signing key, of `timestamp + token` from the
  body's `signature` object, hex; a subaccount's event may instead match `parent-signature`.
- Postmark and inbound-parse routes do not sign: they carry HTTP basic-auth credentials in the
  URL the operator configures; both halves are compared in constant time.

SendGrid and Mailgun timestamps older (or further in the future) than `MAX_AGE_S` are refused:
a captured request cannot be replayed later. Mailgun's signature does not cover the event, so
a token is also bound to the event it first came with (`TokenLedger`). Error messages name
what failed, never a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

MAX_AGE_S = 600.0


class VerificationError(Exception):
    """The request is not provably from the provider; the message is safe to return to the caller."""


@dataclass(frozen=True)
class BasicCredentials:
    """A user and password from the environment; repr never shows the password."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"BasicCredentials(user={self.user!r}, password=<hidden>)"


def load_sendgrid_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER) or as PEM; ValueError when it is not a P-256 key."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a base64 DER or PEM public key ({type(exc).__name__})") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 public key")
    return key


def check_fresh(timestamp: str, now: float, max_age_s: float = MAX_AGE_S) -> None:
    """Refuse a missing, malformed, stale or future timestamp (unix seconds)."""
    try:
        stamp = float(timestamp)
    except (TypeError, ValueError) as exc:
        raise VerificationError("missing or malformed timestamp") from exc
    if not math.isfinite(stamp) or abs(now - stamp) > max_age_s:
        raise VerificationError(f"timestamp is more than {int(max_age_s)} s away from now (replayed or clock skew)")


def verify_sendgrid(
    key: ec.EllipticCurvePublicKey, body: bytes, signature: str | None, timestamp: str | None, now: float
) -> None:
    """Raise VerificationError unless `signature` is SendGrid's signature of `timestamp + body` and fresh."""
    if not signature or not timestamp:
        raise VerificationError("missing X-Twilio-Email-Event-Webhook-Signature or -Timestamp header")
    check_fresh(timestamp, now)
    try:
        key.verify(base64.b64decode(signature, validate=True), timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise VerificationError("bad signature") from exc


class TokenLedger:
    """Mailgun tokens seen within the freshness window, with a digest of the event each one carried.

    Why: Mailgun's signature covers the timestamp and token, not the event. Within the window a
    captured signature could be replayed with another event; a token is therefore bound to the
    first event it came with. The same token with the same event is a retry (stored once); with
    another event it is a forgery. Kept in memory: after a restart only the window is the guard.
    """

    def __init__(self, max_age_s: float = MAX_AGE_S) -> None:
        self.max_age_s = max_age_s
        self._seen: dict[str, tuple[float, str]] = {}

    def first_use(self, token: str, event_digest: str, now: float) -> bool:
        """True the first time a token is seen; False for a retry of the same event; VerificationError otherwise."""
        self._seen = {t: seen for t, seen in self._seen.items() if now - seen[0] <= 2 * self.max_age_s}
        if token not in self._seen:
            self._seen[token] = (now, event_digest)
            return True
        if not hmac.compare_digest(self._seen[token][1], event_digest):
            raise VerificationError("token already used for another event (replayed signature)")
        return False


def verify_mailgun(signing_key: bytes, signature: object, now: float) -> None:
    """Raise VerificationError unless the body's `signature` object is Mailgun's HMAC and fresh."""
    if not isinstance(signature, Mapping):
        raise VerificationError("missing signature object")
    timestamp, token = str(signature.get("timestamp", "")), str(signature.get("token", ""))
    if not timestamp or not token:
        raise VerificationError("signature lacks timestamp or token")
    check_fresh(timestamp, now)
    expected = hmac.new(signing_key, (timestamp + token).encode("utf-8"), hashlib.sha256).hexdigest()
    offered = [str(signature.get(name, "")) for name in ("signature", "parent-signature")]
    # Evaluate both comparisons: no early exit whose timing tells which one matched.
    matches = [hmac.compare_digest(expected.encode(), value.encode()) for value in offered]
    if not any(matches):
        raise VerificationError("bad signature")


def basic_auth_matches(authorization: str | None, expected: BasicCredentials) -> bool:
    """True when an `Authorization: Basic ...` header carries exactly these credentials (constant time)."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return False
    user_ok = hmac.compare_digest(user.encode(), expected.user.encode())
    password_ok = hmac.compare_digest(password.encode(), expected.password.encode())
    return bool(colon) and user_ok and password_ok
