"""Replies from an IMAP mailbox the user configures, stored in the replies inbox like the receiver's.

Why a second source: not every team routes replies through an ESP's inbound-parse webhook; many
just have a mailbox (the sender's, or a shared `replies@`). `fetch_replies` copies each new message
of one folder, as raw MIME, into `<data>/inbox/replies/` with the receiver's own durable writer
(`receiver.inbox.store_reply`, via `imap`), and the observe stage imports and threads it like any
other reply (`feedback.reply_import`). It never changes the mailbox: the folder is opened
read-only (EXAMINE) and bodies are read with BODY.PEEK, so `\\Seen` stays what the people reading
the mailbox made it.

What was fetched is kept in a small state file beside the messages
(`<inbox>/.imap-fetch-state.json`, hidden, so the importer never takes it for a reply): per
server, user and folder, the folder's UIDVALIDITY and the highest UID stored. Not `\\Seen` (a person
reading a reply first would hide it from Factory) and not a keyword flag like `$FactoryFetched`
(it needs write access and a server that keeps custom keywords, and a fresh data folder would
never see the replies again). A new UIDVALIDITY means the server renumbered the folder: everything
is fetched again.

Crash safety: messages are fetched in batches (`batch_size` messages, at most about
`batch_bytes`); each message is written durably before the state moves past it, and the state is
replaced atomically (temp file, fsync, rename) after each batch. A crash in between re-fetches
at most one batch, which is harmless: a message is stored with its IMAP INTERNALDATE (when the
server received it) as its receipt time, so the re-fetched file has the same bytes and the same
name as the first, and the importer takes each content once and each Message-ID once. A message
the server lists but does not return (expunged meanwhile) stops the state from advancing past it
for this run, so nothing listed is ever skipped. Unparseable messages are stored all the same: the
importer quarantines them with a reason.

Configuration, from the environment only:

- `FACTORY_IMAP_HOST`: the IMAP server (required).
- `FACTORY_IMAP_TLS`: `implicit` (TLS from the first byte, the default, RFC 8314), `starttls`
  (upgrade, and refuse to go on without it), or `none` (only for a loopback host).
- `FACTORY_IMAP_PORT`: default 993 for `implicit`, 143 otherwise.
- `FACTORY_IMAP_USERNAME`, `FACTORY_IMAP_PASSWORD`: the login (required; the password is never
  logged, stored or shown).
- `FACTORY_IMAP_FOLDER`: the folder to read (default `INBOX`; any name, non-ASCII included).
- `FACTORY_IMAP_CA_FILE`: PEM file of the CA to trust instead of the system's.
- `FACTORY_IMAP_TIMEOUT_S`: socket timeout per command (default 30).
"""

from __future__ import annotations

import base64
import imaplib
import json
import os
import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from factory_dagster.delivery.config import ConfigError, check_tls, env_number
from factory_dagster.receiver.inbox import store_reply, write_durably

TLS_MODES = ("implicit", "starttls", "none")
DEFAULT_PORTS = {"implicit": 993, "starttls": 143, "none": 143}
RECEIVED_VIA = "imap"
STATE_FILE_NAME = ".imap-fetch-state.json"
STATE_FORMAT = "factory-imap-fetch-state/1"
DEFAULT_BATCH_SIZE = 100
DEFAULT_BATCH_BYTES = 25 * 1024 * 1024

_LISTED = re.compile(rb"\(.*?\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_UID = re.compile(rb"\bUID (\d+)")
_INTERNALDATE = re.compile(rb'INTERNALDATE "\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"')
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


class ImapFetchError(RuntimeError):
    """The mailbox could not be read; the message says what to check and never holds the password."""


@dataclass(frozen=True)
class ImapSettings:
    host: str
    username: str
    password: str = field(repr=False)
    port: int = 993
    tls: str = "implicit"
    folder: str = "INBOX"
    ca_file: str | None = None
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        check_tls("FACTORY_IMAP_TLS", self.tls, TLS_MODES, self.host, "the mailbox password and the replies")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"FACTORY_IMAP_PORT must be a port number, got {self.port}")
        if not self.username or not self.password:
            raise ConfigError("set FACTORY_IMAP_USERNAME and FACTORY_IMAP_PASSWORD, the mailbox's login")
        if not self.folder.strip():
            raise ConfigError("FACTORY_IMAP_FOLDER must name a folder (default INBOX)")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ConfigError(f"FACTORY_IMAP_CA_FILE names no file: {self.ca_file}")

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def state_key(self) -> str:
        """Which mailbox a state entry is about: another server, user or folder starts from its first message."""
        return f"{self.username}@{self.server}/{self.folder}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ImapSettings:
        env = os.environ if environ is None else environ
        host = env.get("FACTORY_IMAP_HOST", "").strip()
        if not host:
            raise ConfigError("reading replies from IMAP needs FACTORY_IMAP_HOST (the IMAP server's host name)")
        tls = env.get("FACTORY_IMAP_TLS", "implicit").strip().lower() or "implicit"
        return cls(
            host=host,
            username=env.get("FACTORY_IMAP_USERNAME", ""),
            password=env.get("FACTORY_IMAP_PASSWORD", ""),
            port=env_number(env, "FACTORY_IMAP_PORT", int, DEFAULT_PORTS.get(tls, 993), minimum=0, above=True),
            tls=tls,
            folder=env.get("FACTORY_IMAP_FOLDER", "").strip() or "INBOX",
            ca_file=env.get("FACTORY_IMAP_CA_FILE", "").strip() or None,
            timeout_s=env_number(env, "FACTORY_IMAP_TIMEOUT_S", float, 30.0, minimum=0, above=True),
        )


def imap_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the user asked for an IMAP mailbox (FACTORY_IMAP_HOST set); the rest is checked by `from_env`."""
    return bool((os.environ if environ is None else environ).get("FACTORY_IMAP_HOST", "").strip())


@dataclass
class FetchReport:
    """What one fetch did. `found`: new messages listed; `written`: stored; `vanished`: listed but gone when fetched."""

    server: str
    folder: str
    uidvalidity: int = 0
    uidvalidity_changed: bool = False
    found: int = 0
    written: int = 0
    vanished: int = 0
    batches: int = 0
    last_uid: int = 0
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        renumbered = (
            "; the server renumbered the folder (new UIDVALIDITY): all of it was fetched again"
            if self.uidvalidity_changed
            else ""
        )
        gone = f"; {self.vanished} listed message(s) were gone when fetched" if self.vanished else ""
        return (
            f"imap {self.server} folder {self.folder!r}: {self.written} new message(s) stored of {self.found} found, "
            f"in {self.batches} batch(es){gone}{renumbered}"
        )


def fetch_replies(
    settings: ImapSettings,
    inbox_dir: Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> FetchReport:
    """Store every message of the folder not fetched before as raw `.eml` in `inbox_dir`; see the module doc."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    inbox_dir = Path(inbox_dir)
    state_path = inbox_dir / STATE_FILE_NAME
    state = _load_state(state_path)
    report = FetchReport(settings.server, settings.folder)
    with _session(settings) as imap:
        count = _select(imap, settings)
        report.uidvalidity = _uidvalidity(imap, settings)
        entry = state.get(settings.state_key, {})
        last_uid = int(entry.get("last_uid", 0))
        if entry and int(entry.get("uidvalidity", -1)) != report.uidvalidity:
            report.uidvalidity_changed, last_uid = True, 0
        report.last_uid = saved = last_uid
        listed = _list_new(imap, settings, last_uid) if count else []
        report.found = len(listed)
        complete = True  # False once a listed message was not returned: the state stays before it
        for batch in _batches(listed, batch_size, batch_bytes):
            returned = _fetch_batch(imap, settings, [uid for uid, _ in batch])
            report.batches += 1
            for uid, _ in batch:
                if uid not in returned:
                    report.vanished += 1
                    complete = False
                    continue
                raw, received_at = returned[uid]
                report.files.append(store_reply(inbox_dir, raw, received_at or datetime.now(UTC), RECEIVED_VIA))
                report.written += 1
                if complete:
                    report.last_uid = uid
            if report.last_uid != saved:  # every message up to last_uid is on disk: mark them fetched
                _save_state(state_path, state, settings.state_key, report.uidvalidity, report.last_uid)
                saved = report.last_uid
    return report


# --- the session ----------------------------------------------------------------------------------


class _session:  # noqa: N801 - used as a `with` statement, like open()
    """Connect, secure and log in; log out on the way out. Every failure becomes an ImapFetchError."""

    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings
        self.imap: imaplib.IMAP4 | None = None

    def __enter__(self) -> imaplib.IMAP4:
        s = self.settings
        try:
            if s.tls == "implicit":
                self.imap = imaplib.IMAP4_SSL(s.host, s.port, ssl_context=_tls_context(s), timeout=s.timeout_s)
            else:
                self.imap = imaplib.IMAP4(s.host, s.port, timeout=s.timeout_s)
                if s.tls == "starttls":
                    self.imap.starttls(ssl_context=_tls_context(s))
        except ssl.SSLCertVerificationError as exc:
            self._close()
            raise ImapFetchError(
                f"IMAP server {s.server}: its TLS certificate is not trusted ({exc.verify_message}); "
                "for a private CA set FACTORY_IMAP_CA_FILE"
            ) from exc
        except ssl.SSLError as exc:
            self._close()
            raise ImapFetchError(
                f"IMAP server {s.server}: the TLS handshake failed ({exc.reason or exc}); check FACTORY_IMAP_TLS "
                "(implicit for port 993, starttls for 143) and FACTORY_IMAP_PORT"
            ) from exc
        except imaplib.IMAP4.error as exc:
            self._close()
            hint = "; refusing to log in without TLS (FACTORY_IMAP_TLS=implicit for a TLS port)" if s.tls == "starttls" else ""
            raise ImapFetchError(f"IMAP server {s.server}: {_text(exc)}{hint}") from exc
        except OSError as exc:
            self._close()
            raise ImapFetchError(f"cannot reach IMAP server {s.server}: {type(exc).__name__}: {exc}") from exc
        self._login()
        return self.imap

    def _login(self) -> None:
        s, imap = self.settings, self.imap
        assert imap is not None
        try:
            if s.username.isascii() and s.password.isascii():
                imap.login(s.username, s.password)
            else:  # LOGIN is ASCII only; SASL PLAIN carries UTF-8
                credentials = f"\0{s.username}\0{s.password}".encode()
                imap.authenticate("PLAIN", lambda _challenge: credentials)
        except (imaplib.IMAP4.error, OSError) as exc:
            message = _scrub(_text(exc), s.password)
            self._close()
            # `from None`: the login's own exception and frames stay out of any traceback, password and all.
            raise ImapFetchError(
                f"IMAP server {s.server} refused the login of {s.username!r}: {message} "
                "(check FACTORY_IMAP_USERNAME and FACTORY_IMAP_PASSWORD)"
            ) from None

    def __exit__(self, *exc_info: object) -> None:
        if self.imap is not None:
            try:
                self.imap.logout()
            except (imaplib.IMAP4.error, OSError):
                self._close()
            self.imap = None

    def _close(self) -> None:
        if self.imap is not None:
            try:
                self.imap.shutdown()
            except OSError:
                pass
            self.imap = None


def _tls_context(settings: ImapSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=settings.ca_file)


def _command(settings: ImapSettings, what: str, call: Any, *args: Any) -> list[Any]:
    """Run one IMAP command; a NO/BAD answer or a dropped connection becomes an ImapFetchError saying what failed."""
    try:
        typ, data = call(*args)
    except (imaplib.IMAP4.error, OSError) as exc:
        raise ImapFetchError(f"IMAP server {settings.server}: {what} failed: {_text(exc)}") from exc
    if typ != "OK":
        raise ImapFetchError(f"IMAP server {settings.server}: {what} failed: {_text(data[-1] if data else typ)}")
    return data


def _select(imap: imaplib.IMAP4, settings: ImapSettings) -> int:
    """Open the folder read-only (EXAMINE); returns its message count."""
    try:
        data = _command(settings, f"opening folder {settings.folder!r}", imap.select, _quoted_mailbox(settings.folder), True)
    except ImapFetchError as exc:
        raise ImapFetchError(f"{exc} (FACTORY_IMAP_FOLDER names the folder to read; default INBOX)") from exc
    return int(data[0] or 0)


def _uidvalidity(imap: imaplib.IMAP4, settings: ImapSettings) -> int:
    _, data = imap.response("UIDVALIDITY")
    if not data or data[0] is None:
        raise ImapFetchError(f"IMAP server {settings.server} sent no UIDVALIDITY for {settings.folder!r} (RFC 3501 requires it)")
    return int(data[0])


def _list_new(imap: imaplib.IMAP4, settings: ImapSettings, last_uid: int) -> list[tuple[int, int]]:
    """(uid, size) of every message above `last_uid`, in UID order.

    FETCH rather than SEARCH: one response line per message, where a SEARCH answer is one line with
    every UID, which imaplib refuses beyond 1 MB (a large mailbox). `n:*` also returns the highest
    message when it is below n, hence the filter.
    """
    data = _command(settings, "listing new messages", imap.uid, "FETCH", f"{last_uid + 1}:*", "(UID RFC822.SIZE)")
    listed: dict[int, int] = {}
    for line in data:
        if isinstance(line, bytes) and (uid := _LISTED.search(line)):
            size = _SIZE.search(line)
            listed[int(uid.group(1))] = int(size.group(1)) if size else 0
    return sorted((uid, size) for uid, size in listed.items() if uid > last_uid)


def _batches(listed: list[tuple[int, int]], size: int, max_bytes: int) -> Iterator[list[tuple[int, int]]]:
    """At most `size` messages and about `max_bytes` per batch (a larger message goes alone)."""
    batch: list[tuple[int, int]] = []
    total = 0
    for uid, nbytes in listed:
        if batch and (len(batch) >= size or total + nbytes > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append((uid, nbytes))
        total += nbytes
    if batch:
        yield batch


def _fetch_batch(imap: imaplib.IMAP4, settings: ImapSettings, uids: list[int]) -> dict[int, tuple[bytes, datetime | None]]:
    """uid -> (raw message, INTERNALDATE) for the messages the server returned; unsolicited FETCH lines are ignored."""
    data = _command(settings, "fetching messages", imap.uid, "FETCH", ",".join(map(str, uids)), "(UID INTERNALDATE BODY.PEEK[])")
    wanted, returned = set(uids), {}
    for i, item in enumerate(data):
        if not isinstance(item, tuple):
            continue
        # The literal is item[1]; the attributes are around it: before in item[0], after in the next plain line.
        after = data[i + 1] if i + 1 < len(data) and isinstance(data[i + 1], bytes) else b""
        attributes = item[0] + b" " + after
        uid = _UID.search(attributes)
        if uid and int(uid.group(1)) in wanted and b"BODY[]" in item[0]:
            returned[int(uid.group(1))] = (item[1], _internaldate(attributes))
    return returned


def _internaldate(attributes: bytes) -> datetime | None:
    """The server's receipt time of a message (IMAP INTERNALDATE), parsed without the locale."""
    m = _INTERNALDATE.search(attributes)
    if m is None or m.group(2).decode().title() not in _MONTHS:
        return None
    day, month, year, hh, mm, ss, sign, oh, om = (g.decode() for g in m.groups())
    offset = timedelta(hours=int(oh), minutes=int(om)) * (-1 if sign == "-" else 1)
    try:
        return datetime(int(year), _MONTHS[month.title()], int(day), int(hh), int(mm), int(ss), tzinfo=timezone(offset))
    except ValueError:
        return None


def imap_utf7(name: str) -> str:
    """A folder name in IMAP's modified UTF-7 (RFC 3501 5.1.3), which servers without UTF8=ACCEPT expect."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii").rstrip("=")
            out.append("&" + encoded.replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def _quoted_mailbox(folder: str) -> str:
    return '"' + imap_utf7(folder).replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- the state file ------------------------------------------------------------------------------


def _load_state(path: Path) -> dict[str, dict[str, int]]:
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != STATE_FORMAT or not isinstance(document.get("mailboxes"), dict):
            raise ValueError(f"expected a JSON object with format {STATE_FORMAT!r} and mailboxes")
        return {
            key: {"uidvalidity": int(v["uidvalidity"]), "last_uid": int(v["last_uid"])}
            for key, v in document["mailboxes"].items()
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ImapFetchError(
            f"cannot read the IMAP fetch state {path}: {exc}; delete the file to fetch the folder again "
            "(replies already imported are not imported twice)"
        ) from exc


def _save_state(path: Path, state: dict[str, dict[str, int]], key: str, uidvalidity: int, last_uid: int) -> None:
    """Replace the state file atomically (temp file, fsync, rename: the receiver's durable write)."""
    state[key] = {"uidvalidity": uidvalidity, "last_uid": last_uid}
    document = {"format": STATE_FORMAT, "mailboxes": state}
    write_durably(path.parent, path.name, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8"))


# --- small helpers -------------------------------------------------------------------------------


def _text(value: object) -> str:
    if isinstance(value, BaseException) and value.args:
        value = value.args[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text
