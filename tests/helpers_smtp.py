"""A real SMTP server on loopback for the transport and outbox tests (aiosmtpd), and what it received.

The handler stores every message that completed its DATA phase (counted when the data arrived,
before the server answers: a client that dies waiting for the answer has still delivered it),
and can be told to refuse: a reply per sender at MAIL and per recipient at RCPT (e.g. 550), a
queue of replies for the end of DATA (e.g. 451, 421), and a delay before that answer (to kill a
client mid-send or let it time out).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: str | None

    @property
    def email(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)

    @property
    def message_id(self) -> str:
        return str(self.email["Message-ID"])


@dataclass
class Recorder:
    """aiosmtpd handler: keeps what arrives, answers as scripted."""

    mail_replies: dict[str, str] = field(default_factory=dict)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: deque[str] = field(default_factory=deque)
    data_delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    async def handle_MAIL(self, server, session, envelope, address: str, mail_options: list[str]) -> str:  # noqa: N802
        if address in self.mail_replies:
            return self.mail_replies[address]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options: list[str]) -> str:  # noqa: N802
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802
        with self._lock:
            scripted = self.data_replies.popleft() if self.data_replies else None
        if scripted is not None and not scripted.startswith("2"):
            return scripted  # refused: not received
        login = session.auth_data if session.authenticated else None
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None  # STARTTLS or implicit
        with self._lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, tls, login))
            number = len(self.received)
        if self.data_delay_s:
            await asyncio.sleep(self.data_delay_s)
        return f"250 2.0.0 Ok: queued as Q{number:05d}"

    def message_ids(self) -> Counter[str]:
        with self._lock:
            return Counter(r.message_id for r in self.received)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(handler: Recorder, **server_kwargs: object) -> Controller:
    """Start aiosmtpd on 127.0.0.1 (a free port); `ssl_context=` makes it implicit TLS, `tls_context=` offers STARTTLS."""
    ssl_context = server_kwargs.pop("ssl_context", None)
    controller = Controller(
        handler, hostname="127.0.0.1", port=free_port(), ssl_context=ssl_context, server_hostname="127.0.0.1", **server_kwargs
    )
    controller.start()
    return controller


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost and its key (PEM files), signed by itself: a private CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "factory test smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def authenticator_for(username: str, password: str):
    """aiosmtpd authenticator accepting exactly these credentials."""

    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == username.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)

    return authenticate
