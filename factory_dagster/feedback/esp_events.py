"""ESP webhook events mapped to Factory's event types, deliberately, one provider at a time.

Factory learns from eight outcomes (`events.EVENT_TYPES`). Every documented event of each ESP
either maps to one of them, or is *skipped* with a reason code (counted and recorded in
`raw.esp_events_skipped`, never silently dropped), or, when the ESP sends something this table
does not know, is quarantined (`bad_event_type`) so that a person extends the table.

| provider | event (subtype) | Factory | why |
|---|---|---|---|
| SendGrid | `processed` | skip `no_factory_meaning` | accepted by SendGrid; delivery is reported on its own |
| SendGrid | `deferred` | skip `temporary_failure` | the receiving server said "later"; SendGrid retries |
| SendGrid | `delivered` | `delivered` | |
| SendGrid | `dropped` | `bounced` | SendGrid will not send to the address (earlier bounce, unsubscribe or spam report, invalid): for Factory it is undeliverable, and suppressed |
| SendGrid | `bounce` (`type` bounce) | `bounced` | permanent rejection |
| SendGrid | `bounce` (`type` blocked) | skip `temporary_failure` | a block is temporary by SendGrid's definition |
| SendGrid | `open` | `opened` | unless `sg_machine_open` is true: skip `machine_open` (Apple MPP and other proxies) |
| SendGrid | `click` | skip `no_factory_meaning` | Factory learns from replies, not clicks |
| SendGrid | `spamreport` | `complained` | |
| SendGrid | `unsubscribe`, `group_unsubscribe` | `unsubscribed` | |
| SendGrid | `group_resubscribe` | skip `resubscribe` | Factory never lifts a suppression by itself |
| Mailgun | `accepted`, `stored` | skip `no_factory_meaning` | queued by Mailgun / an inbound message stored |
| Mailgun | `rejected` | skip `not_sent` | Mailgun refused our request (a sender-side problem, not the recipient's) |
| Mailgun | `delivered` | `delivered` | |
| Mailgun | `failed` (`severity` permanent) | `bounced` | includes Mailgun's own suppress-bounce/-unsubscribe/-complaint drops |
| Mailgun | `failed` (`severity` temporary) | skip `temporary_failure` | Mailgun retries |
| Mailgun | `opened` | `opened` | unless `client-info.bot` is set (apple, gmail, generic): skip `machine_open` |
| Mailgun | `clicked` | skip `no_factory_meaning` | |
| Mailgun | `unsubscribed` | `unsubscribed` | |
| Mailgun | `complained` | `complained` | |
| Postmark | `Delivery` | `delivered` | |
| Postmark | `Bounce` (`HardBounce`, `BadEmailAddress`, `ManuallyDeactivated`) | `bounced` | permanent |
| Postmark | `Bounce` (`Unsubscribe`) | `unsubscribed` | the recipient asked by mail |
| Postmark | `Bounce` (`SpamComplaint`), `SpamComplaint` | `complained` | |
| Postmark | `Bounce` (any other type) | `bounced` if `Inactive` (Postmark stopped sending to the address), else skip `temporary_failure` | soft bounces, DNS errors, auto-responders… |
| Postmark | `Open` | `opened` | Postmark flags no machine opens; they are counted |
| Postmark | `Click` | skip `no_factory_meaning` | |
| Postmark | `SubscriptionChange` (`SuppressSending` true) | `bounced` / `complained` / `unsubscribed` by `SuppressionReason` (HardBounce / SpamComplaint / ManualSuppression) | |
| Postmark | `SubscriptionChange` (`SuppressSending` false) | skip `resubscribe` | |
| one-click | `unsubscribe` | `unsubscribed` | our own RFC 8058 endpoint |

Finding the send: a custom argument `factory_send_id` (or `send_id`) — SendGrid `custom_args`
(top-level keys of the event), Mailgun `user-variables`, Postmark `Metadata`; else the message's
Message-ID in Factory's format `<send_id@factory.invalid>` (SendGrid `smtp-id`, Mailgun
`message.headers.message-id`); else a Factory Message-ID or `X-Factory-Send-Id:` header anywhere
in the event (a bounce that carries the original headers). An event with none of them is
quarantined as `unknown_send_id`, like one naming a send the warehouse does not have.

Event ids are stable across an ESP's retries: `sendgrid:<sg_event_id>`, `mailgun:<event-data.id>`,
`postmark:bounce:<ID>` for bounce records, `postmark:<recordtype>:<hash of MessageID, RecordType
and time>` for the others, `oneclick:<send_id>` (one unsubscribe per send). So the same event
posted twice is imported once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from factory_dagster.delivery.eml import MESSAGE_ID_DOMAIN

SKIP_REASONS = ("no_factory_meaning", "temporary_failure", "machine_open", "resubscribe", "not_sent")
SEND_ID_ARGS = ("factory_send_id", "send_id")
_SEND_ID = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_FACTORY_MESSAGE_ID = re.compile(rf"<?({_SEND_ID})@{re.escape(MESSAGE_ID_DOMAIN)}>?")
_SEND_ID_HEADER = re.compile(rf"X-Factory-Send-Id:\s*({_SEND_ID})", re.IGNORECASE)
_FRACTION = re.compile(r"(\.\d{6})\d+")
POSTMARK_HARD_BOUNCES = ("HardBounce", "BadEmailAddress", "ManuallyDeactivated")


@dataclass(frozen=True)
class MappedEvent:
    """One ESP event's fate: `event_type` (import it), `skip` (reason code, reason) or `problem` (quarantine it)."""

    event_id: str
    provider_event: str  # the ESP's own name, with the subtype that decided it (e.g. "bounce/blocked")
    send_id: str  # "" when the event names no Factory send
    message_ref: str  # the ESP's message reference, for the quarantine reason
    occurred_at: str  # ISO-8601 UTC, or the raw value when it is not a time (validation quarantines it)
    event_type: str | None = None
    skip: tuple[str, str] | None = None
    problem: str | None = None


def _skip(code: str, reason: str) -> dict[str, Any]:
    return {"skip": (code, reason)}


def _maps_to(event_type: str) -> dict[str, Any]:
    return {"event_type": event_type}


def _unknown(provider: str, name: str) -> dict[str, Any]:
    return {"problem": f"{provider} event {name!r} has no mapping to a Factory event type (see feedback/esp_events.py)"}


def from_unix(value: Any) -> str:
    """A unix time (seconds, possibly fractional) as ISO-8601 UTC; the raw text when it is not one."""
    try:
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return "" if value is None else str(value)


def from_iso(value: Any) -> str:
    """An ISO-8601 time (Postmark sends 7 fractional digits) as ISO-8601 UTC; naive means UTC."""
    text = "" if value is None else str(value).strip()
    try:
        moment = datetime.fromisoformat(_FRACTION.sub(r"\1", text))
    except ValueError:
        return text
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stable_hash(*parts: Any) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:24]


def find_send_id(args: Any, message_ids: list[Any], record: Mapping[str, Any]) -> str:
    """The Factory send an event names: custom argument, then Message-ID, then a Factory id anywhere in it."""
    if isinstance(args, Mapping):
        for key in SEND_ID_ARGS:
            value = args.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    for message_id in message_ids:
        match = _FACTORY_MESSAGE_ID.fullmatch(str(message_id or "").strip())
        if match:
            return match.group(1)
    text = json.dumps(record, ensure_ascii=False)
    match = _FACTORY_MESSAGE_ID.search(text) or _SEND_ID_HEADER.search(text)
    return match.group(1) if match else ""


def map_sendgrid(event: Mapping[str, Any]) -> MappedEvent:
    name = str(event.get("event", ""))
    subtype = str(event.get("type") or "bounce") if name == "bounce" else ""
    if name == "bounce":
        fate = _maps_to("bounced") if subtype != "blocked" else _skip("temporary_failure", "SendGrid block: temporary")
    elif name == "open" and event.get("sg_machine_open") is True:
        fate = _skip("machine_open", "sg_machine_open is true: a proxy (e.g. Apple MPP) fetched the pixel, not a person")
    else:
        fate = {
            "processed": _skip("no_factory_meaning", "accepted by SendGrid; delivery is reported separately"),
            "deferred": _skip("temporary_failure", "deferred by the receiving server; SendGrid retries"),
            "delivered": _maps_to("delivered"),
            "dropped": _maps_to("bounced"),
            "open": _maps_to("opened"),
            "click": _skip("no_factory_meaning", "Factory learns from replies, not clicks"),
            "spamreport": _maps_to("complained"),
            "unsubscribe": _maps_to("unsubscribed"),
            "group_unsubscribe": _maps_to("unsubscribed"),
            "group_resubscribe": _skip("resubscribe", "Factory never lifts a suppression by itself"),
        }.get(name) or _unknown("sendgrid", name)
    sg_event_id = event.get("sg_event_id")
    event_id = f"sendgrid:{sg_event_id}" if sg_event_id else f"sendgrid:sha:{_stable_hash(json.dumps(event, sort_keys=True))}"
    return MappedEvent(
        event_id=event_id,
        provider_event=f"{name}/{subtype}" if subtype else name,
        send_id=find_send_id(event, [event.get("smtp-id")], event),
        message_ref=str(event.get("smtp-id") or event.get("sg_message_id") or ""),
        occurred_at=from_unix(event.get("timestamp")),
        **fate,
    )


def map_mailgun(event: Mapping[str, Any]) -> MappedEvent:
    name = str(event.get("event", ""))
    subtype = ""
    if name == "failed":
        subtype = str(event.get("severity", ""))
        fate = {
            "permanent": _maps_to("bounced"),
            "temporary": _skip("temporary_failure", "temporary failure; Mailgun retries"),
        }.get(subtype) or {"problem": f"mailgun 'failed' event with severity {subtype!r}: expected permanent or temporary"}
    elif name == "opened" and _mailgun_bot(event):
        fate = _skip("machine_open", f"client-info.bot is {_mailgun_bot(event)!r}: an automated open, not a person")
    else:
        fate = {
            "accepted": _skip("no_factory_meaning", "queued by Mailgun; delivery is reported separately"),
            "stored": _skip("no_factory_meaning", "an inbound message stored by Mailgun"),
            "rejected": _skip("not_sent", "Mailgun refused the request to send it (a sender-side problem)"),
            "delivered": _maps_to("delivered"),
            "opened": _maps_to("opened"),
            "clicked": _skip("no_factory_meaning", "Factory learns from replies, not clicks"),
            "unsubscribed": _maps_to("unsubscribed"),
            "complained": _maps_to("complained"),
        }.get(name) or _unknown("mailgun", name)
    message = event.get("message") if isinstance(event.get("message"), Mapping) else {}
    headers = message.get("headers") if isinstance(message.get("headers"), Mapping) else {}
    mailgun_id = event.get("id")
    return MappedEvent(
        event_id=f"mailgun:{mailgun_id}" if mailgun_id else f"mailgun:sha:{_stable_hash(json.dumps(event, sort_keys=True))}",
        provider_event=f"{name}/{subtype}" if subtype else name,
        send_id=find_send_id(event.get("user-variables"), [headers.get("message-id")], event),
        message_ref=str(headers.get("message-id") or ""),
        occurred_at=from_unix(event.get("timestamp")),
        **fate,
    )


def _mailgun_bot(event: Mapping[str, Any]) -> str:
    info = event.get("client-info")
    return str(info.get("bot") or "") if isinstance(info, Mapping) else ""


def map_postmark(event: Mapping[str, Any]) -> MappedEvent:
    record_type = str(event.get("RecordType", ""))
    subtype, time_field = "", {"Delivery": "DeliveredAt", "Open": "ReceivedAt", "Click": "ReceivedAt"}.get(record_type, "")
    if record_type in ("Bounce", "SpamComplaint"):
        subtype, time_field = str(event.get("Type", "")), "BouncedAt"
        fate = _postmark_bounce(record_type, subtype, event.get("Inactive") is True)
    elif record_type == "SubscriptionChange":
        time_field = "ChangedAt"
        if event.get("SuppressSending") is True:
            subtype = str(event.get("SuppressionReason", ""))
            reasons = {"HardBounce": "bounced", "SpamComplaint": "complained", "ManualSuppression": "unsubscribed"}
            fate = _maps_to(reasons[subtype]) if subtype in reasons else _unknown("postmark", f"SubscriptionChange/{subtype}")
        else:
            subtype, fate = "reactivated", _skip("resubscribe", "Factory never lifts a suppression by itself")
    else:
        fate = {
            "Delivery": _maps_to("delivered"),
            "Open": _maps_to("opened"),
            "Click": _skip("no_factory_meaning", "Factory learns from replies, not clicks"),
        }.get(record_type) or _unknown("postmark", record_type)
    occurred_at = from_iso(event.get(time_field)) if time_field else ""
    message_id = str(event.get("MessageID") or "")
    if record_type in ("Bounce", "SpamComplaint") and event.get("ID") is not None:
        event_id = f"postmark:bounce:{event.get('ID')}"
    else:
        event_id = f"postmark:{record_type.lower()}:{_stable_hash(message_id, record_type, event.get(time_field))}"
    return MappedEvent(
        event_id=event_id,
        provider_event=f"{record_type}/{subtype}" if subtype else record_type,
        send_id=find_send_id(event.get("Metadata"), [], event),
        message_ref=message_id,
        occurred_at=occurred_at,
        **fate,
    )


def _postmark_bounce(record_type: str, bounce_type: str, inactive: bool) -> dict[str, Any]:
    if record_type == "SpamComplaint" or bounce_type == "SpamComplaint":
        return _maps_to("complained")
    if bounce_type in POSTMARK_HARD_BOUNCES:
        return _maps_to("bounced")
    if bounce_type == "Unsubscribe":
        return _maps_to("unsubscribed")
    if inactive:
        return _maps_to("bounced")  # Postmark deactivated the address: it will not deliver there again
    return _skip("temporary_failure", f"Postmark bounce type {bounce_type or 'unknown'}: not permanent, address still active")


def map_oneclick(event: Mapping[str, Any]) -> MappedEvent:
    """Our own one-click unsubscribe (the receiver verified the token before storing it)."""
    send_id = str(event.get("send_id") or "").strip()
    name = str(event.get("event", ""))
    fate = _maps_to("unsubscribed") if name == "unsubscribe" else _unknown("oneclick", name)
    return MappedEvent(
        event_id=f"oneclick:{send_id}" if send_id else f"oneclick:sha:{_stable_hash(json.dumps(event, sort_keys=True))}",
        provider_event=name,
        send_id=send_id,
        message_ref="",
        occurred_at=from_iso(event.get("occurred_at")),
        **fate,
    )


MAPPERS: dict[str, Callable[[Mapping[str, Any]], MappedEvent]] = {
    "sendgrid": map_sendgrid,
    "mailgun": map_mailgun,
    "postmark": map_postmark,
    "oneclick": map_oneclick,
}
