"""How the send stage sends, read from the environment only (never from the spec or a file).

Why the environment: the server, its credentials and the mailboxes' limits belong to a
deployment, not to a campaign. The same spec runs against a test server and the real one, and
a change of mailbox must not change the spec's version (which the marts and experiments key
on). Secrets therefore live in exactly one place, and no secret is ever logged, stored in the
warehouse, in metadata or in a file: `repr()` of these settings leaves them out.

- `FACTORY_TRANSPORT`: `file` (`.eml` files under `data/outbox/`, the default) or `smtp`.
- `FACTORY_SMTP_HOST`: the SMTP server (required for `smtp`).
- `FACTORY_SMTP_PORT`: its port; default 587 for `starttls`, 465 for `implicit`, 25 for `none`.
- `FACTORY_SMTP_TLS`: `starttls` (the default: upgrade after EHLO, and refuse to go on if the
  server does not offer it), `implicit` (TLS from the first byte, "SMTPS"), or `none` (only for a
  loopback host: 127.0.0.0/8, ::1, localhost).
- `FACTORY_SMTP_USERNAME`, `FACTORY_SMTP_PASSWORD`: AUTH credentials, both or neither (default: no AUTH).
- `FACTORY_SMTP_CA_FILE`: PEM file of the CA to trust instead of the system's (a private server's
  own certificate).
- `FACTORY_SMTP_TIMEOUT_S`: socket timeout per SMTP command (default 30).
- `FACTORY_SMTP_RETRIES`: retries of a temporary failure (4xx, refused or dropped connection)
  before the send goes back to the queue (default 3).
- `FACTORY_SMTP_BACKOFF_S`, `FACTORY_SMTP_BACKOFF_MAX_S`: the first retry delay, doubled at each
  retry up to the maximum (defaults 2 and 60).
- `FACTORY_SMTP_SENDERS`: the sender mailboxes, a JSON list (below); default: the spec's `sender`,
  with no cap of its own and 20 messages a minute.
- `FACTORY_UNSUBSCRIBE_BASE_URL`: https base of the feedback receiver (`factory serve-feedback`);
  each message links `<base>/unsubscribe/<token>` for RFC 8058 one-click unsubscribes. Required
  for `smtp`; optional for `file` (the `.eml` files then carry the link too).
- `FACTORY_UNSUBSCRIBE_SECRET`: the token signing secret (delivery/unsubscribe.py), required with
  a base URL, so for `smtp`.

`FACTORY_SMTP_SENDERS` example: `[{"email": "maya@brightwave.example", "name": "Maya Okafor",
"daily_cap": 50, "per_minute": 10}, {"email": "sam@brightwave.example", "name": "Sam Reid",
"daily_cap": 50, "per_minute": 10}]`. `daily_cap` (messages a day from this mailbox; omitted or
null: only the campaign's `limits.daily_send_cap` applies) and `per_minute` (pacing; omitted: 20,
null: none) are per mailbox. The send stage rotates over the mailboxes that still have room
today, each at its own pace; what none can take stays queued for the next day. All mailboxes
share the one SMTP login (an ESP relay or a domain account allowed to send as each of them).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from factory_dagster.delivery.unsubscribe import make_token, secret_from_env, unsubscribe_url

TRANSPORTS = ("file", "smtp")
TLS_MODES = ("starttls", "implicit", "none")
DEFAULT_PORTS = {"starttls": 587, "implicit": 465, "none": 25}
DEFAULT_PER_MINUTE = 20.0
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MAILBOX_KEYS = {"email", "name", "daily_cap", "per_minute"}


class ConfigError(ValueError):
    """A sending setting that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Mailbox:
    """One sender address with its own limits: `daily_cap` messages a day, `per_minute` pacing (None: no limit)."""

    email: str
    name: str
    daily_cap: int | None = None
    per_minute: float | None = DEFAULT_PER_MINUTE


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for temporary failures."""

    retries: int = 3
    backoff_s: float = 2.0
    backoff_max_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the `attempt`-th failed attempt (1-based)."""
        return min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    tls: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    timeout_s: float = 30.0
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        check_tls("FACTORY_SMTP_TLS", self.tls, TLS_MODES, self.host, "mail and credentials")
        if (self.username is None) != (self.password is None):
            raise ConfigError("set both FACTORY_SMTP_USERNAME and FACTORY_SMTP_PASSWORD, or neither")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SmtpSettings:
        env = os.environ if environ is None else environ
        host = env.get("FACTORY_SMTP_HOST", "").strip()
        if not host:
            raise ConfigError("FACTORY_TRANSPORT=smtp needs FACTORY_SMTP_HOST (the SMTP server's host name)")
        tls = env.get("FACTORY_SMTP_TLS", "starttls").strip().lower()
        port = env_number(env, "FACTORY_SMTP_PORT", int, DEFAULT_PORTS.get(tls, 587), minimum=1)
        if port > 65535:
            raise ConfigError(f"FACTORY_SMTP_PORT must be a port number, got {port}")
        return cls(
            host=host,
            port=port,
            tls=tls,
            username=env.get("FACTORY_SMTP_USERNAME") or None,
            password=env.get("FACTORY_SMTP_PASSWORD") or None,
            ca_file=env.get("FACTORY_SMTP_CA_FILE") or None,
            timeout_s=env_number(env, "FACTORY_SMTP_TIMEOUT_S", float, 30.0, minimum=0.01),
            retry=RetryPolicy(
                retries=env_number(env, "FACTORY_SMTP_RETRIES", int, 3, minimum=0),
                backoff_s=env_number(env, "FACTORY_SMTP_BACKOFF_S", float, 2.0, minimum=0.0),
                backoff_max_s=env_number(env, "FACTORY_SMTP_BACKOFF_MAX_S", float, 60.0, minimum=0.0),
            ),
        )


@dataclass(frozen=True)
class UnsubscribeLinks:
    """Signs each recipient's one-click link (`<base>/unsubscribe/<token>`)."""

    base_url: str
    secret: bytes = field(repr=False)

    def url_for(self, send_id: str, email: str) -> str:
        return unsubscribe_url(self.base_url, make_token(self.secret, send_id, email))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, required: bool) -> UnsubscribeLinks | None:
        """The links, or None when no base URL is set and none is `required` (the file transport's default).

        A base URL without the secret raises `MissingSecret` (delivery/unsubscribe.py), whose message says
        how to make one.
        """
        env = os.environ if environ is None else environ
        base = env.get("FACTORY_UNSUBSCRIBE_BASE_URL", "").strip()
        if not base:
            if required:
                secret_from_env(env)  # without the secret too, say that first: it is the harder one to set up
                raise ConfigError(
                    "FACTORY_TRANSPORT=smtp needs FACTORY_UNSUBSCRIBE_BASE_URL, the https address of the feedback "
                    "receiver (factory serve-feedback), for the RFC 8058 one-click unsubscribe link"
                )
            return None
        if not re.match(r"^https://[^/\s?#]+", base):
            raise ConfigError(f"FACTORY_UNSUBSCRIBE_BASE_URL must be an https URL (RFC 8058), got {base!r}")
        return cls(base, secret_from_env(env))


def transport_name(environ: Mapping[str, str] | None = None) -> str:
    """`FACTORY_TRANSPORT`: which transport the send stage uses (`file` unless told)."""
    value = (os.environ if environ is None else environ).get("FACTORY_TRANSPORT", "file").strip().lower() or "file"
    if value not in TRANSPORTS:
        raise ConfigError(f"FACTORY_TRANSPORT must be one of {', '.join(TRANSPORTS)}, got {value!r}")
    return value


def mailboxes_from_env(default: Mailbox, environ: Mapping[str, str] | None = None) -> list[Mailbox]:
    """`FACTORY_SMTP_SENDERS` as mailboxes, or `[default]` (the spec's sender) when it is not set."""
    raw = (os.environ if environ is None else environ).get("FACTORY_SMTP_SENDERS", "").strip()
    if not raw:
        return [default]
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"FACTORY_SMTP_SENDERS is not valid JSON: {exc}") from exc
    if not isinstance(entries, list) or not entries:
        raise ConfigError("FACTORY_SMTP_SENDERS must be a non-empty JSON list of mailboxes")
    mailboxes = [_mailbox(i, entry) for i, entry in enumerate(entries)]
    emails = [m.email.lower() for m in mailboxes]
    if len(set(emails)) != len(emails):
        raise ConfigError(f"FACTORY_SMTP_SENDERS lists a mailbox twice: {emails}")
    return mailboxes


def _mailbox(index: int, entry: Any) -> Mailbox:
    where = f"FACTORY_SMTP_SENDERS[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object with email, name, daily_cap and per_minute")
    unknown = sorted(set(entry) - _MAILBOX_KEYS)
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}; allowed: {sorted(_MAILBOX_KEYS)}")
    email, name = entry.get("email"), entry.get("name")
    if not isinstance(email, str) or not _EMAIL.match(email):
        raise ConfigError(f"{where}.email must be an email address, got {email!r}")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}.name must be the sender's display name")
    cap = entry.get("daily_cap")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
        raise ConfigError(f"{where}.daily_cap must be a whole number >= 0 or null, got {cap!r}")
    pace = entry.get("per_minute", DEFAULT_PER_MINUTE)
    if pace is not None and (isinstance(pace, bool) or not isinstance(pace, int | float) or pace <= 0):
        raise ConfigError(f"{where}.per_minute must be a number > 0 or null, got {pace!r}")
    return Mailbox(email=email, name=name.strip(), daily_cap=cap, per_minute=None if pace is None else float(pace))


def check_tls(variable: str, tls: str, modes: tuple[str, ...], host: str, clear_text: str) -> None:
    """Refuse an unknown TLS mode, and `none` for any host but this machine (`clear_text`: what would travel
    unencrypted), with the variable to change; shared by the SMTP and IMAP settings."""
    if tls not in modes:
        raise ConfigError(f"{variable} must be one of {', '.join(modes)}, got {tls!r}")
    if tls == "none" and not is_loopback(host):
        others = " or ".join(m for m in modes if m != "none")
        raise ConfigError(
            f"{variable}=none sends {clear_text} in clear text; it is only allowed for a loopback "
            f"host (127.0.0.1, ::1, localhost), not {host!r}: use {others}"
        )


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine by its address (no DNS lookup: a name could resolve anywhere)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def env_number(env: Mapping[str, str], name: str, kind: type, default: float, *, minimum: float, above: bool = False) -> Any:
    """A number setting from the environment (`default` when unset), at least `minimum` (over it with
    `above`); a clear ConfigError naming the variable otherwise. Shared by the SMTP and IMAP settings."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {'a whole number' if kind is int else 'a number'}, got {raw!r}") from None
    if above and value <= minimum:
        raise ConfigError(f"{name} must be greater than {minimum}, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value
