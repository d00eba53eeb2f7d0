"""Which mailbox sends the next message, and when: daily caps and pacing per mailbox, with rotation.

Why per mailbox: providers limit each sending account, and a new mailbox that sends fast is
what spam filters look for. So each mailbox has its own daily cap and its own pace (a steady
gap of 60 / per_minute seconds between its messages, not bursts). The pool picks, among the
mailboxes with room left today, the one that may send soonest (ties: the one that sent least
today, then the configured order), and waits for it. When every mailbox is at its cap, the
rest of the day's messages stay queued for the next day.

The counts start from the outbox (what each mailbox took on the day and when it last sent), so
a restarted run neither exceeds a cap nor bursts. The clock and sleep are injectable: tests
pace with a fake clock instead of waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from factory_dagster.delivery.config import Mailbox


@dataclass(frozen=True)
class MailboxUsage:
    """What a mailbox already did on the day: messages it took and when it last took one (epoch seconds)."""

    taken: int = 0
    last_at: float | None = None


@dataclass
class MailboxPool:
    mailboxes: Sequence[Mailbox]
    usage: Mapping[str, MailboxUsage] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if not self.mailboxes:
            raise ValueError("a mailbox pool needs at least one mailbox")
        self._taken = {m.email: self.usage.get(m.email, MailboxUsage()).taken for m in self.mailboxes}
        self._ready_at: dict[str, float] = {}
        for m in self.mailboxes:
            last = self.usage.get(m.email, MailboxUsage()).last_at
            if last is not None and m.per_minute:
                self._ready_at[m.email] = last + 60.0 / m.per_minute

    def has_room(self) -> bool:
        return any(self._room(m) for m in self.mailboxes)

    def taken(self, email: str) -> int:
        return self._taken[email]

    def acquire(self) -> Mailbox | None:
        """The mailbox for the next message, after waiting for its pace; None when all are at their cap."""
        open_ = [(i, m) for i, m in enumerate(self.mailboxes) if self._room(m)]
        if not open_:
            return None
        now = self.clock()
        _, mailbox = min(open_, key=lambda im: (max(now, self._ready_at.get(im[1].email, now)), self._taken[im[1].email], im[0]))
        wait = self._ready_at.get(mailbox.email, now) - now
        if wait > 0:
            self.sleep(wait)
        start = max(now, self._ready_at.get(mailbox.email, now))
        self._taken[mailbox.email] += 1
        if mailbox.per_minute:
            self._ready_at[mailbox.email] = start + 60.0 / mailbox.per_minute
        return mailbox

    def give_back(self, mailbox: Mailbox) -> None:
        """The message went back to the queue: it does not count against the cap (its pacing slot stays used)."""
        self._taken[mailbox.email] = max(0, self._taken[mailbox.email] - 1)

    def _room(self, mailbox: Mailbox) -> bool:
        return mailbox.daily_cap is None or self._taken[mailbox.email] < mailbox.daily_cap
