"""Classified replies as Factory events, for the observe stage.

The mapping (one reply gives these `event_type`s, each carrying the class, confidence and model):

| class           | events                          | why                                                        |
|-----------------|---------------------------------|------------------------------------------------------------|
| `positive`      | `replied`, `positive_reply`     | a person answered, with interest                          |
| `unsubscribe`   | `replied`, `unsubscribed`       | a person answered, asking to stop: suppression must follow |
| `question`      | `replied`                       | a person answered                                          |
| `not_now`       | `replied`                       | a person answered                                          |
| `negative`      | `replied`                       | a person answered                                          |
| `out_of_office` | none                            | a machine answered: not a reply from a person              |
| `auto_reply`    | none                            | a machine answered (bounces arrive as the ESP's own events) |

A reply left unclassified (quarantined: empty, no usable model answer, budget spent) gives no
event: it stays in the classifier's output with its reason, to be classified again. Event ids are
a hash of (reply_id, event type), so importing the same reply twice adds no events.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from factory_dagster.replies.classify import REPLY_CLASSES

EVENTS_BY_CLASS: dict[str, tuple[str, ...]] = {
    "positive": ("replied", "positive_reply"),
    "unsubscribe": ("replied", "unsubscribed"),
    "question": ("replied",),
    "not_now": ("replied",),
    "negative": ("replied",),
    "out_of_office": (),
    "auto_reply": (),
}
EVENT_COLUMNS = ("event_id", "send_id", "event_type", "occurred_at", "reply_id", "reply_class", "confidence", "model")
NEEDED = ("reply_id", "send_id", "received_at", "class", "confidence", "model")


def event_types_for(reply_class: str | None) -> tuple[str, ...]:
    """The Factory event types a reply of this class gives (none for an unclassified reply)."""
    if reply_class is None or pd.isna(reply_class):
        return ()
    try:
        return EVENTS_BY_CLASS[reply_class]
    except KeyError:
        raise ValueError(f"unknown reply class {reply_class!r}; expected one of {list(REPLY_CLASSES)}") from None


def reply_event_id(reply_id: str, event_type: str) -> str:
    return "rev_" + hashlib.sha256(f"{reply_id}|{event_type}".encode()).hexdigest()[:20]


def events_for_replies(classified: pd.DataFrame) -> pd.DataFrame:
    """One event row per (reply, event type) of the mapping above.

    `classified` is `classify_replies`' output joined with each reply's `send_id` (from threading)
    and `received_at`; the event occurs when the reply was received.
    """
    missing = [c for c in NEEDED if c not in classified.columns]
    if missing:
        raise ValueError(
            f"classified replies lack column(s) {', '.join(missing)}; found {', '.join(map(str, classified.columns))}"
        )
    rows = [
        {
            "event_id": reply_event_id(str(r["reply_id"]), event_type),
            "send_id": r["send_id"],
            "event_type": event_type,
            "occurred_at": r["received_at"],
            "reply_id": r["reply_id"],
            "reply_class": r["class"],
            "confidence": r["confidence"],
            "model": r["model"],
        }
        for r in classified[list(NEEDED)].to_dict("records")
        for event_type in event_types_for(r["class"])
    ]
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
