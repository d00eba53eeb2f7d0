"""What a transport says when a message did not simply go: four kinds, because the outbox acts on each differently.

The kind is decided by the transport, which alone knows how far the hand-over got:

- `TemporaryFailure`: nothing was accepted (a 4xx reply, a refused or dropped connection before
  the message data was sent). Safe to try again; `connection` tells a server-wide problem (stop
  the batch after the retries) from one recipient's (requeue it, go on with the next).
- `Bounce`: the server refused this recipient or message for good (a 5xx reply). The send is
  recorded as bounced, and the `bounced` event suppresses the address.
- `OutcomeUnknown`: the message data may have reached the server (the connection broke or timed
  out after it was sent). The send becomes `uncertain` and is never sent again by itself.
- `TransportUnusable`: the transport cannot send anything (bad TLS, credentials refused, sender
  rejected). Nothing was sent; the send stage stops with this message and the send is requeued.

The messages carry server replies and error names, never credentials.
"""

from __future__ import annotations


class DeliveryError(Exception):
    """A delivery that did not end in an accepted message; `str(exc)` says what the server or socket said."""


class TemporaryFailure(DeliveryError):
    def __init__(self, detail: str, *, connection: bool) -> None:
        super().__init__(detail)
        self.connection = connection


class Bounce(DeliveryError):
    """A permanent refusal of the recipient or message (SMTP 5xx)."""


class OutcomeUnknown(DeliveryError):
    """The message may have been accepted: never hand it over again without a person."""


class TransportUnusable(DeliveryError):
    """Configuration or account problem: nothing can be sent until a person fixes it."""
