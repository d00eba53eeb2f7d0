"""The simulated market answers the way a real one does: ESP webhook events, reply e-mails, a CRM export.

Why: the demo must exercise the path a team's real campaign takes, not a shortcut. The market's
hidden outcomes (simulated.py) leave through three doors:

- delivered, bounced, opened, unsubscribed and complained become SendGrid Event Webhook events
  (its documented JSON shape: `event`, `email`, `timestamp`, `sg_event_id`, `sg_message_id`,
  `smtp-id`, the custom argument `factory_send_id`), one file per day stored exactly as the
  feedback receiver stores a verified request (`receiver.inbox.store_events`). Some deliveries
  also get a machine open (`sg_machine_open: true`, e.g. Apple's mail privacy proxy), which the
  importer must not count as an open;
- a reply is an e-mail: raw MIME with `In-Reply-To` our Message-ID, written by the recipient in
  words (`REPLY_TEXTS`: what a positive, a "not now", a "wrong person" or a "remove me" reply
  says, quoting our message below), stored as the receiver stores an inbound-parse post
  (`receiver.inbox.store_reply`). The line has to *read* it: the classifier, not the market,
  decides whether it was positive. Some delivered sends also get an out-of-office notice, which
  is no reply from a person;
- bookings come as the CSV export of a CRM (the events inbox, read by the CSV importer).

Nothing of the hidden model travels with them: not the cell, not the class the market meant.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

import pandas as pd

from factory_dagster.delivery.eml import message_id_for
from factory_dagster.receiver.inbox import store_events, store_reply, write_durably

VIA = "simulated market"
MACHINE_OPEN_RATE = 0.12  # deliveries whose pixel a privacy proxy fetches
OUT_OF_OFFICE_RATE = 0.03  # deliveries answered by an automatic out-of-office notice
SENDGRID_EVENTS = {
    "delivered": "delivered",
    "bounced": "bounce",
    "opened": "open",
    "unsubscribed": "unsubscribe",
    "complained": "spamreport",
}
# How the market's non-positive replies split (its docstring: "not now", "wrong person", "remove me").
OTHER_REPLIES = (("not_now", 0.45), ("wrong_person", 0.25), ("remove_me", 0.30))

REPLY_TEXTS: dict[str, tuple[str, ...]] = {
    "positive": (
        "Thanks for reaching out. Our close is a pain point right now, so yes, a call next week works. Tuesday afternoon?",
        "Interesting timing. We are reviewing our month-end process this quarter. Happy to talk; send me a few slots.",
        "Yes, let's do 20 minutes. Thursday 10:00 or Friday after lunch both work for me.",
        "Sounds relevant. Can you set up a call with me and our controller next week?",
        "Sure, I'd like to see how the reconciliations work. Book something in my calendar for Wednesday.",
        "Good timing, we are evaluating tools for the close right now. Let's talk next week.",
    ),
    "not_now": (
        "Not a priority for us this quarter. Feel free to check back in the autumn.",
        "We just signed a two-year contract with another vendor, so not now. Maybe next year.",
        "Busy with the audit until the end of next month. Try me again after that.",
        "Timing is not great, we are in the middle of a reorganisation. Reach out again in Q3.",
    ),
    "wrong_person": (
        "I'm not the right person for this. Our finance operations lead handles tooling.",
        "This isn't something I decide on, and I don't think we need it. Thanks anyway.",
        "Wrong contact, I moved to a different role last year. Not interested.",
    ),
    "remove_me": (
        "Please remove me from your mailing list.",
        "Unsubscribe. Stop emailing me.",
        "Take me off your list, please. Not interested and never will be.",
        "Please do not contact me again.",
    ),
}
OUT_OF_OFFICE = (
    "Thank you for your message. I am out of the office until Monday with limited access to email. "
    "For urgent matters please contact finance@{domain}."
)


def _pick(u: float, choices: tuple[str, ...]) -> str:
    return choices[min(int(u * len(choices)), len(choices) - 1)]


def reply_kind(u: float) -> str:
    """Which non-positive answer a draw gives (OTHER_REPLIES' shares)."""
    for kind, share in OTHER_REPLIES:
        if u < share:
            return kind
        u -= share
    return OTHER_REPLIES[-1][0]


def sendgrid_event(event_type: str, send_id: str, to_email: str, occurred_at: datetime, event_id: str, **extra: object) -> dict:
    """One event in the SendGrid Event Webhook's shape."""
    return {
        "email": to_email,
        "timestamp": int(occurred_at.timestamp()),
        "event": SENDGRID_EVENTS.get(event_type, event_type),
        "sg_event_id": event_id,
        "sg_message_id": f"sim.{send_id}",
        "smtp-id": message_id_for(send_id),
        "factory_send_id": send_id,
        **({"type": "bounce"} if event_type == "bounced" else {}),
        **extra,
    }


def _answer(send_id: str, to_email: str, from_address: str, subject: str, occurred_at: datetime, text: str, auto: bool) -> bytes:
    """A message answering ours, as the recipient's mail system writes it: In-Reply-To our Message-ID."""
    domain = to_email.split("@")[-1]
    answer = EmailMessage()
    answer["From"] = to_email
    answer["To"] = from_address
    answer["Subject"] = f"{'Automatic reply' if auto else 'Re'}: {subject}"
    answer["Date"] = format_datetime(occurred_at)
    answer["Message-ID"] = f"<{'ooo' if auto else 'reply'}.{send_id}@{domain}>"
    answer["In-Reply-To"] = message_id_for(send_id)
    if auto:
        answer["Auto-Submitted"] = "auto-replied"  # RFC 3834, as mail servers mark their notices
    else:
        answer["References"] = message_id_for(send_id)
    answer.set_content(text)
    return answer.as_bytes(policy=SMTP)


def reply_message(send_id: str, to_email: str, from_address: str, subject: str, text: str, occurred_at: datetime) -> bytes:
    """A person's reply, our text quoted below it."""
    quoted = f"On {occurred_at:%a, %d %b %Y}, {from_address} wrote:\n> {subject}\n> ..."
    return _answer(send_id, to_email, from_address, subject, occurred_at, f"{text}\n\n{quoted}\n", auto=False)


def auto_reply_message(send_id: str, to_email: str, from_address: str, subject: str, occurred_at: datetime) -> bytes:
    """An out-of-office notice."""
    text = OUT_OF_OFFICE.format(domain=to_email.split("@")[-1])
    return _answer(send_id, to_email, from_address, subject, occurred_at, text, auto=True)


def day_end(day: date) -> datetime:
    """When a day's webhook batch arrives: just before midnight UTC."""
    return datetime.combine(day, time(23, 59), tzinfo=UTC)


def deliver_day(
    events: pd.DataFrame,
    unit: object,
    from_address: str,
    esp_inbox: Path,
    replies_inbox: Path,
    crm_inbox: Path,
    day: date,
) -> list[Path]:
    """Write one day's events through the three doors; `events` has event_id, send_id, event_type,
    occurred_at, to_email, subject, positive (the send also drew a positive reply). `unit(*parts)`
    is the market's seeded uniform draw."""
    written: list[Path] = []
    webhook = []
    for e in events.assign(occurred_at=events["occurred_at"].dt.tz_localize(UTC)).itertuples(index=False):
        if e.event_type in SENDGRID_EVENTS:
            webhook.append(sendgrid_event(e.event_type, e.send_id, e.to_email, e.occurred_at, e.event_id))
        if e.event_type == "delivered" and unit("machine_open", e.send_id) < MACHINE_OPEN_RATE:
            at = e.occurred_at + timedelta(minutes=2)
            webhook.append(sendgrid_event("opened", e.send_id, e.to_email, at, e.event_id + ".mpp", sg_machine_open=True))
        if e.event_type == "delivered" and unit("out_of_office", e.send_id) < OUT_OF_OFFICE_RATE:
            raw = auto_reply_message(e.send_id, e.to_email, from_address, e.subject, e.occurred_at + timedelta(minutes=1))
            written.append(store_reply(replies_inbox, raw, e.occurred_at + timedelta(minutes=1), VIA))
        if e.event_type == "replied":
            kind = "positive" if e.positive else reply_kind(unit("reply_kind", e.send_id))
            text = _pick(unit("reply_text", e.send_id), REPLY_TEXTS[kind])
            raw = reply_message(e.send_id, e.to_email, from_address, e.subject, text, e.occurred_at)
            written.append(store_reply(replies_inbox, raw, e.occurred_at, VIA))
    if webhook:
        written.append(store_events(esp_inbox, "sendgrid", webhook, day_end(day)))
    booked = events[events.event_type == "booked"]
    if not booked.empty:
        export = booked.assign(occurred_at=booked["occurred_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        data = export[["event_id", "send_id", "event_type", "occurred_at"]].to_csv(index=False).encode("utf-8")
        written.append(write_durably(Path(crm_inbox), f"crm_bookings_{day.isoformat()}_{booked.event_id.iloc[0][-8:]}.csv", data))
    return written
