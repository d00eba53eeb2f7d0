"""The observe stage's pure parts: reading and validating outcome-event files."""

from factory_dagster.feedback.events import (
    ACCEPTED_EVENTS_SCHEMA,
    EVENT_TYPES,
    REASON_CODES,
    EventFileError,
    ValidatedEvents,
    read_event_file,
    validate_events,
)

__all__ = [
    "ACCEPTED_EVENTS_SCHEMA",
    "EVENT_TYPES",
    "REASON_CODES",
    "EventFileError",
    "ValidatedEvents",
    "read_event_file",
    "validate_events",
]
