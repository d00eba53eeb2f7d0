"""How the receiver writes what it accepted, and the file formats the observe stage reads back.

Why files and not the warehouse: DuckDB admits one writing process, and the daily run holds it.
A webhook must be answered within seconds whatever the line is doing, so the receiver only
appends files; the observe stage imports each file once (by content hash).

Durability: a file is written under a hidden temp name (which `inbox_files` ignores), flushed
and fsynced, renamed into place, and the folder fsynced, all before the HTTP answer. An ESP
that got a 2xx therefore never holds the only copy of an event, and a crash mid-write leaves
at most a hidden temp file, never a half file the importer could take for a whole one.

ESP event files (`<data>/inbox/esp_events/<provider>/<received>-<hash>.jsonl`): line 1 is a
header `{"format": "factory-esp-events/1", "provider": ..., "received_at": ..., "events": N}`;
lines 2..N+1 are the provider's events, one JSON object each, as the provider sent them (for
Mailgun the `event-data` object; for one-click unsubscribes our own record). Line numbers are
the rows the importer reports, so an operator finds a quarantined event in any editor.

Replies (`<data>/inbox/replies/<received>-<hash>.eml`): the raw MIME message as posted, with
two trace headers prepended (as a mail server prepends `Received:`): `X-Factory-Received-At`
and `X-Factory-Received-Via`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from factory_dagster.atomic import write_atomically

EVENT_FILE_FORMAT = "factory-esp-events/1"
ESP_PROVIDERS = ("sendgrid", "mailgun", "postmark")
ONECLICK = "oneclick"  # our own one-click unsubscribe endpoint, stored like a provider
PROVIDERS = (*ESP_PROVIDERS, ONECLICK)
RECEIVED_AT_HEADER = "X-Factory-Received-At"
RECEIVED_VIA_HEADER = "X-Factory-Received-Via"


def iso_utc(moment: datetime) -> str:
    """ISO-8601 UTC with a `Z`, microseconds kept (the importer parses it back exactly)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _file_name(received_at: datetime, data: bytes, suffix: str) -> str:
    """Sortable by arrival, unique by content: two different payloads in one microsecond still differ."""
    return f"{received_at.astimezone(UTC):%Y%m%dT%H%M%S%f}Z-{hashlib.sha256(data).hexdigest()[:16]}{suffix}"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(folder: Path) -> None:
    """Create `folder` and its missing parents, fsyncing each new entry's parent so the folder survives a crash."""
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        current = current.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        _fsync_dir(new.parent)


def write_durably(folder: Path, name: str, data: bytes) -> Path:
    """Write `data` as `folder/name`: temp file, flush, fsync, rename, fsync the folder. Returns the path."""
    folder = Path(folder)
    _ensure_dir(folder)
    write_atomically(folder / name, data)
    _fsync_dir(folder)
    return folder / name


def event_file_bytes(provider: str, events: Sequence[dict[str, Any]], received_at: datetime) -> bytes:
    """The JSONL file for one accepted request: the header line, then one line per event."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}")
    header = {"format": EVENT_FILE_FORMAT, "provider": provider, "received_at": iso_utc(received_at), "events": len(events)}
    lines = [json.dumps(header, separators=(",", ":"))]
    # ASCII escapes: any string JSON can carry (a lone surrogate included) can be written and read back.
    lines += [json.dumps(event, separators=(",", ":")) for event in events]
    return ("\n".join(lines) + "\n").encode("utf-8")


def store_events(esp_events_inbox: Path, provider: str, events: Sequence[dict[str, Any]], received_at: datetime) -> Path:
    """Durably store one request's events in `<esp_events_inbox>/<provider>/`."""
    data = event_file_bytes(provider, events, received_at)
    return write_durably(Path(esp_events_inbox) / provider, _file_name(received_at, data, ".jsonl"), data)


def store_reply(replies_inbox: Path, raw_message: bytes, received_at: datetime, via: str) -> Path:
    """Durably store one inbound message (raw MIME) with the trace headers prepended."""
    eol = "\r\n" if b"\r\n" in raw_message[:4096] else "\n"  # the message's own line ending
    trace = f"{RECEIVED_AT_HEADER}: {iso_utc(received_at)}{eol}{RECEIVED_VIA_HEADER}: {via}{eol}".encode("ascii")
    data = trace + raw_message
    return write_durably(Path(replies_inbox), _file_name(received_at, data, ".eml"), data)
