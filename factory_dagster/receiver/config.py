"""The receiver's secrets, from the environment only, read once at start-up.

| variable | enables |
|---|---|
| `FACTORY_UNSUBSCRIBE_SECRET` | `/unsubscribe/{token}` (the same secret the sender signs tokens with) |
| `FACTORY_SENDGRID_WEBHOOK_PUBLIC_KEY` | `/webhooks/sendgrid` (the Signed Event Webhook's verification key) |
| `FACTORY_MAILGUN_SIGNING_KEY` | `/webhooks/mailgun` (the HTTP webhook signing key) |
| `FACTORY_POSTMARK_WEBHOOK_USER`, `FACTORY_POSTMARK_WEBHOOK_PASSWORD` | `/webhooks/postmark` (basic auth in the webhook URL) |
| `FACTORY_INBOUND_USER`, `FACTORY_INBOUND_PASSWORD` | `/inbound` (basic auth in the inbound-parse URL) |

A route whose secret is missing answers 503 with the variable to set (an ESP retries a 503,
so nothing is lost while the operator configures it). A secret that is present but unusable
(a malformed key, half a credential pair) stops the start-up with a clear error instead: a
typo must not look like "not configured". Secrets are never logged; `repr` hides them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from factory_dagster.delivery.unsubscribe import SECRET_ENV, MissingSecret, secret_from_env
from factory_dagster.receiver.verify import BasicCredentials, load_sendgrid_public_key

SENDGRID_KEY_ENV = "FACTORY_SENDGRID_WEBHOOK_PUBLIC_KEY"
MAILGUN_KEY_ENV = "FACTORY_MAILGUN_SIGNING_KEY"
POSTMARK_ENV = ("FACTORY_POSTMARK_WEBHOOK_USER", "FACTORY_POSTMARK_WEBHOOK_PASSWORD")
INBOUND_ENV = ("FACTORY_INBOUND_USER", "FACTORY_INBOUND_PASSWORD")


class ReceiverConfigError(ValueError):
    """A secret is set but unusable; the message names the variable, never its value."""


@dataclass(frozen=True, repr=False)
class ReceiverConfig:
    unsubscribe_secret: bytes | None
    unsubscribe_problem: str | None  # why one-click unsubscribe is off (MissingSecret's message)
    sendgrid_key: ec.EllipticCurvePublicKey | None
    mailgun_key: bytes | None
    postmark: BasicCredentials | None
    inbound: BasicCredentials | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReceiverConfig:
        env = os.environ if environ is None else environ
        try:
            secret, problem = secret_from_env(env), None
        except MissingSecret as exc:
            if env.get(SECRET_ENV):  # set but too short: a mistake, not a choice
                raise ReceiverConfigError(str(exc)) from exc
            secret, problem = None, str(exc)
        sendgrid_key = None
        if env.get(SENDGRID_KEY_ENV, "").strip():
            try:
                sendgrid_key = load_sendgrid_public_key(env[SENDGRID_KEY_ENV])
            except ValueError as exc:
                raise ReceiverConfigError(f"{SENDGRID_KEY_ENV}: {exc}") from exc
        mailgun_key = env.get(MAILGUN_KEY_ENV, "").strip().encode() or None
        return cls(secret, problem, sendgrid_key, mailgun_key, _credentials(env, *POSTMARK_ENV), _credentials(env, *INBOUND_ENV))

    def configured(self) -> dict[str, bool]:
        """Which routes can accept requests (for the start-up line and /healthz); no secret in it."""
        return {
            "unsubscribe": self.unsubscribe_secret is not None,
            "sendgrid": self.sendgrid_key is not None,
            "mailgun": self.mailgun_key is not None,
            "postmark": self.postmark is not None,
            "inbound": self.inbound is not None,
        }

    def __repr__(self) -> str:
        on = ", ".join(name for name, ok in self.configured().items() if ok) or "nothing"
        return f"ReceiverConfig(configured: {on})"


def _credentials(env: Mapping[str, str], user_var: str, password_var: str) -> BasicCredentials | None:
    user, password = env.get(user_var, ""), env.get(password_var, "")
    if not user and not password:
        return None
    if not user or not password:
        raise ReceiverConfigError(f"set both {user_var} and {password_var}, or neither")
    if ":" in user:
        raise ReceiverConfigError(f"{user_var} must not contain ':' (HTTP basic auth splits on it)")
    return BasicCredentials(user, password)
