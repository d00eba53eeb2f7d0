"""The SMTP transport: hands each message to a mail server, and says exactly how far it got.

Configuration comes from the environment only (delivery/config.py documents every variable):
`FACTORY_SMTP_HOST`, `FACTORY_SMTP_PORT`, `FACTORY_SMTP_TLS` (starttls | implicit | none, the
last only for loopback hosts), `FACTORY_SMTP_USERNAME` / `FACTORY_SMTP_PASSWORD` (never logged
or stored), `FACTORY_SMTP_CA_FILE`, `FACTORY_SMTP_TIMEOUT_S`, the retry settings, the sender
mailboxes `FACTORY_SMTP_SENDERS`, and `FACTORY_TRANSPORT=smtp` to use it.

Why the SMTP dialogue is spelled out here instead of `smtplib.sendmail`: the outbox must know
whether a failure happened before the message data went out (nothing was accepted: retry is
safe) or after (the server may have queued it: retrying could deliver it twice). `sendmail`
raises the same exceptions in both cases. So each message goes MAIL, RCPT, DATA as separate
steps, and once the data has started to go, any broken connection or timeout is
`OutcomeUnknown`. Replies decide the rest: 2xx accepted; 4xx `TemporaryFailure` (421, the
server closing, counts as a connection problem); 5xx at RCPT, DATA or after the data
`Bounce`; 5xx at connect, EHLO, STARTTLS, AUTH or MAIL FROM `TransportUnusable` (the account
or sender, not the recipient, is refused).

One connection is kept open across messages (TLS and AUTH once per batch, not per message).
"""

from __future__ import annotations

import re
import smtplib
import ssl

from factory_dagster.delivery.config import SmtpSettings
from factory_dagster.delivery.eml import OutgoingMessage, email_bytes
from factory_dagster.delivery.errors import Bounce, OutcomeUnknown, TemporaryFailure, TransportUnusable

_LEADING_DOT = re.compile(rb"(?m)^\.")


class SmtpTransport:
    """`Transport` over SMTP; not idempotent: a second hand-over of a send is a second e-mail."""

    name = "smtp"
    idempotent = False

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._conn: smtplib.SMTP | None = None

    @property
    def server(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def deliver(self, msg: OutgoingMessage) -> str:
        """Send one message; the server's acceptance line is the transport ref (it names the server's queue id)."""
        data = email_bytes(msg)
        reused = self._conn is not None
        try:
            conn = self._connection()
            try:
                self._envelope(conn, msg.from_email, msg.to_email)
            except TemporaryFailure as exc:
                if not (reused and exc.connection):
                    raise
                # A connection kept from an earlier message may have timed out on the server's side: one fresh try.
                self._drop()
                conn = self._connection()
                self._envelope(conn, msg.from_email, msg.to_email)
        except (TemporaryFailure, Bounce, TransportUnusable):
            raise
        except Exception as exc:  # before the data went out nothing was accepted, whatever went wrong
            self._drop()
            raise TransportUnusable(f"{self.server}: {type(exc).__name__}: {exc}") from exc
        return self._transmit(conn, data)

    def close(self) -> None:
        """Say QUIT if the connection is still up."""
        if self._conn is not None:
            try:
                self._conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self._drop()

    # --- the dialogue -----------------------------------------------------------------------------

    def _connection(self) -> smtplib.SMTP:
        if self._conn is not None:
            return self._conn
        s = self.settings
        try:
            if s.tls == "implicit":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=self._tls_context())
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
            try:
                conn.ehlo()
                if s.tls == "starttls":
                    if not conn.has_extn("starttls"):
                        raise TransportUnusable(
                            f"{self.server} does not offer STARTTLS; refusing to send in clear text "
                            "(FACTORY_SMTP_TLS=implicit for a TLS port)"
                        )
                    conn.starttls(context=self._tls_context())
                    conn.ehlo()
                if s.username is not None:
                    conn.login(s.username, s.password or "")
            except BaseException:
                _close_quietly(conn)
                raise
        except TransportUnusable:
            raise
        except ssl.SSLCertVerificationError as exc:
            raise TransportUnusable(
                f"{self.server}: the server's TLS certificate is not trusted ({exc.verify_message}); "
                "for a private CA set FACTORY_SMTP_CA_FILE"
            ) from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise TransportUnusable(f"{self.server} refused the credentials of FACTORY_SMTP_USERNAME: {_reply(exc)}") from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise TransportUnusable(f"{self.server}: {exc} (AUTH needs a server that offers it, after TLS)") from exc
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise TemporaryFailure(f"{self.server} answered {_reply(exc)}", connection=True) from exc
            raise TransportUnusable(f"{self.server} refused the session: {_reply(exc)}") from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise TemporaryFailure(f"cannot reach {self.server}: {type(exc).__name__}: {exc}", connection=True) from exc
        self._conn = conn
        return conn

    def _envelope(self, conn: smtplib.SMTP, sender: str, recipient: str) -> None:
        """MAIL FROM, RCPT TO and DATA up to the server's 354: nothing is accepted yet whatever happens here."""
        if not recipient.isascii():
            raise Bounce(f"<{recipient}> is not an ASCII address, and this transport does not use SMTPUTF8")
        try:
            code, text = conn.mail(sender)
            if code != 250:
                self._reset()
                if code == 421 or 400 <= code < 500:
                    raise TemporaryFailure(f"MAIL FROM <{sender}>: {code} {_text(text)}", connection=code == 421)
                raise TransportUnusable(f"{self.server} refused the sender <{sender}>: {code} {_text(text)}")
            code, text = conn.rcpt(recipient)
            if code not in (250, 251):
                self._reset()
                if 400 <= code < 500:
                    raise TemporaryFailure(f"RCPT TO <{recipient}>: {code} {_text(text)}", connection=code == 421)
                raise Bounce(f"{code} {_text(text)}")
            code, text = conn.docmd("DATA")
            if code != 354:
                self._reset()
                if 400 <= code < 500:
                    raise TemporaryFailure(f"DATA: {code} {_text(text)}", connection=code == 421)
                raise Bounce(f"{code} {_text(text)}")
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise TemporaryFailure(f"{self.server} dropped the connection: {type(exc).__name__}: {exc}", connection=True) from exc

    def _transmit(self, conn: smtplib.SMTP, data: bytes) -> str:
        """The message data and the final dot; from the first byte on, a broken connection leaves the outcome unknown."""
        payload = _LEADING_DOT.sub(b"..", data)
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        try:
            conn.send(payload + b".\r\n")
            code, text = conn.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise OutcomeUnknown(
                f"{self.server}: {type(exc).__name__} after the message data was sent; the server may have accepted it"
            ) from exc
        if code == 250:
            return f"smtp {self.server}: {code} {_text(text)}"
        if 400 <= code < 500:
            if code == 421:
                self._drop()
            raise TemporaryFailure(f"after DATA: {code} {_text(text)}", connection=code == 421)
        raise Bounce(f"{code} {_text(text)}")

    # --- connection upkeep ------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file)

    def _reset(self) -> None:
        """RSET after a refused step, so the connection can carry the next message; drop it if that fails."""
        if self._conn is None:
            return
        try:
            self._conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            _close_quietly(self._conn)
        self._conn = None


def _close_quietly(conn: smtplib.SMTP) -> None:
    try:
        conn.close()
    except OSError:
        pass


def _text(text: bytes | str) -> str:
    return (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).replace("\n", " ").strip()


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_text(exc.smtp_error)}"
