"""Import what the feedback receiver stored: ESP events and one-click unsubscribes into `raw.events`.

Each JSONL file in `<data>/inbox/esp_events/<provider>/` (format: `receiver/inbox.py`) is
imported once, by content hash, in the `raw.intake_files` register under kind `events`, so the
observe stage's `events_accounted_for` check covers these files as it covers CSV exports.

Every event line ends in exactly one place:

- `raw.events`: it maps to a Factory event type (`esp_events.py`) and passes the same validation
  as the CSV events (`events.validate_events`: type, timestamp, known send, duplicates);
- `raw.events_quarantine`: not a JSON object (`bad_record`), an event the mapping does not know
  (`bad_event_type`), no Factory send id in it or one the warehouse does not have
  (`unknown_send_id`), or whatever `validate_events` refuses;
- `raw.esp_events_skipped`: documented events with no Factory meaning (clicks, deferrals,
  machine opens…), with the reason;
- already imported: the same provider event id was imported before or earlier in the batch (ESPs
  retry; a second click on an unsubscribe link is the same unsubscribe).

A one-click unsubscribe whose send this campaign does not know is quarantined like any other
event, but its address is still suppressed at once: the request was signed by us, and an
unsubscribe must never wait for a person to sort out the quarantine.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from factory_dagster.feedback.esp_events import MAPPERS, MappedEvent
from factory_dagster.feedback.events import QUARANTINE_COLUMNS, EventFileError, validate_events
from factory_dagster.feedback.sent import send_campaigns, stamp_by_send
from factory_dagster.receiver.inbox import EVENT_FILE_FORMAT, ONECLICK, PROVIDERS
from factory_dagster.run_context import RunContext, utcnow
from factory_dagster.warehouse.file_registry import (
    inbox_files,
    one_import_at_a_time,
    register_file,
    reject_file,
    unregistered_files,
)
from factory_dagster.warehouse.store import insert_rows, transaction


@dataclass
class EspImportSummary:
    files: list[str] = field(default_factory=list)
    rejected_files: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    accepted: int = 0
    quarantined: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason_code -> events
    already_imported: int = 0
    suppressed_directly: int = 0


@dataclass(frozen=True)
class EventLine:
    row: int  # line number in the file (the header is line 1)
    record: Any  # the parsed JSON value, or None when the line is not usable JSON
    error: str | None = None
    text: str | None = None  # the line as written, kept for the quarantine when it is not usable


def read_esp_event_file(path: Path, provider: str) -> list[EventLine]:
    """The event lines of one stored file; EventFileError (naming file and row) when the file itself is damaged."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventFileError(f"{path}: byte {exc.start} is not valid UTF-8") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise EventFileError(f"{path}: empty file, expected a header line")
    try:
        header = json.loads(lines[0])
    except ValueError as exc:
        raise EventFileError(f"{path}, row 1: the header is not JSON ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != EVENT_FILE_FORMAT:
        raise EventFileError(f"{path}, row 1: not a {EVENT_FILE_FORMAT} header")
    if header.get("provider") != provider:
        raise EventFileError(f"{path}, row 1: provider {header.get('provider')!r} does not match its folder {provider!r}")
    if header.get("events") != len(lines) - 1:
        raise EventFileError(f"{path}: the header announces {header.get('events')!r} events but the file has {len(lines) - 1}")
    events = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = json.loads(line)
            json.dumps(record, ensure_ascii=False).encode("utf-8")  # the warehouse stores UTF-8 only
            events.append(EventLine(number, record))
        except ValueError as exc:  # UnicodeEncodeError is a ValueError too
            problem = "a string in it is not valid Unicode" if isinstance(exc, UnicodeError) else f"line is not JSON: {exc}"
            events.append(EventLine(number, None, problem, line))
    return events


def _quarantine_row(path: Path, line: EventLine, provider: str, column: str | None, code: str, reason: str) -> dict:
    original = {"record": line.record} if line.error is None else {"line": line.text}
    return {
        "source_file": str(path),
        "source_row": line.row,
        "column_name": column,
        "reason_code": code,
        "reason": reason,
        "raw_record": json.dumps({"provider": provider, **original}, ensure_ascii=False, default=str),
    }


def _no_send_reason(provider: str, mapped: MappedEvent) -> str:
    ref = f" (message {mapped.message_ref!r})" if mapped.message_ref else ""
    return (
        f"{provider} event {mapped.provider_event!r}{ref} names no Factory send: no factory_send_id custom argument "
        f"and no <send_id@factory.invalid> Message-ID"
    )


@dataclass
class _Sorted:
    """One file's events split by fate before validation."""

    candidates: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def sort_events(path: Path, provider: str, lines: list[EventLine]) -> _Sorted:
    """Map each line: candidates for `validate_events`, quarantine rows, skipped rows."""
    result = _Sorted()
    for line in lines:
        if line.error or not isinstance(line.record, dict):
            reason = line.error or f"expected a JSON object, got {type(line.record).__name__}"
            result.quarantine.append(_quarantine_row(path, line, provider, None, "bad_record", reason))
            continue
        mapped = MAPPERS[provider](line.record)
        if mapped.problem:
            result.quarantine.append(_quarantine_row(path, line, provider, "event_type", "bad_event_type", mapped.problem))
        elif mapped.skip:
            code, reason = mapped.skip
            result.skipped.append(
                {
                    "event_id": mapped.event_id,
                    "provider": provider,
                    "provider_event": mapped.provider_event,
                    "send_id": mapped.send_id or None,
                    "reason_code": code,
                    "reason": reason,
                    "occurred_at": mapped.occurred_at,
                    "source_file": str(path),
                    "source_row": line.row,
                    "raw_record": json.dumps(line.record, ensure_ascii=False),
                }
            )
        elif not mapped.send_id:
            reason = _no_send_reason(provider, mapped)
            result.quarantine.append(_quarantine_row(path, line, provider, "send_id", "unknown_send_id", reason))
        else:
            result.candidates.append(
                {
                    "event_id": mapped.event_id,
                    "send_id": mapped.send_id,
                    "event_type": mapped.event_type,
                    "occurred_at": mapped.occurred_at,
                    "source_file": str(path),
                    "source_row": line.row,
                    "provider": provider,
                    "provider_event": mapped.provider_event,
                    "record": line.record,
                }
            )
    return result


def _new_skips(rows: list[dict], known_skips: set[str]) -> pd.DataFrame:
    """Skipped events not recorded before (a retried event is recorded once), times as naive UTC."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame[~frame["event_id"].isin(known_skips)].drop_duplicates("event_id")
    stamps = pd.to_datetime(frame["occurred_at"], utc=True, errors="coerce", format="ISO8601")
    return frame.assign(occurred_at=stamps.dt.tz_convert(None))


@dataclass(frozen=True)
class _StoredFile:
    path: Path
    sha: str
    provider: str
    lines: list[EventLine]


def _oneclick_suppressions(quarantined: pd.DataFrame, files: list[_StoredFile], run: RunContext) -> pd.DataFrame:
    """Addresses of one-click unsubscribes quarantined for an unknown send: suppressed all the same."""
    records = {
        (str(f.path), line.row): line.record
        for f in files
        if f.provider == ONECLICK
        for line in f.lines
        if isinstance(line.record, dict)
    }
    bad = quarantined[quarantined["reason_code"] == "unknown_send_id"]
    emails: dict[str, str] = {}
    for key in zip(bad["source_file"], bad["source_row"], strict=True):
        record = records.get(key, {})
        email = str(record.get("email", "")).strip().lower()
        if email:
            emails.setdefault(email, f"oneclick:{record.get('send_id', '')}")
    return pd.DataFrame(
        {"email": list(emails), "reason": "unsubscribed", "source": list(emails.values())},
        columns=["email", "reason", "source"],
    ).assign(partition_day=run.partition_day, added_at=utcnow())


_CANDIDATE_COLUMNS = [
    "event_id",
    "send_id",
    "event_type",
    "occurred_at",
    "source_file",
    "source_row",
    "provider",
    "provider_event",
    "record",
]


@one_import_at_a_time("events")
def import_esp_event_files(con: duckdb.DuckDBPyConnection, esp_events_inbox: Path, run: RunContext) -> EspImportSummary:
    """Import every new file below `esp_events_inbox` (one folder per provider).

    All readable new files are validated together and committed in one transaction: Mailgun
    and Postmark post one event per request, so a day brings thousands of one-line files, and
    a transaction and a validation per file would cost seconds. A damaged file is rejected on
    its own first; the rest commit or roll back together (and are then all retried next run).
    """
    summary = EspImportSummary()
    files: list[_StoredFile] = []
    for provider in PROVIDERS:
        folder = Path(esp_events_inbox) / provider
        for path, sha in unregistered_files(con, "events", inbox_files(folder, {".jsonl"})):
            try:
                files.append(_StoredFile(path, sha, provider, read_esp_event_file(path, provider)))
            except EventFileError as exc:
                reject_file(con, run, "events", path, sha, str(exc))
                summary.rejected_files[str(path)] = str(exc)
    if files:
        _import_batch(con, run, files, summary)
    return summary


def _import_batch(con: duckdb.DuckDBPyConnection, run: RunContext, files: list[_StoredFile], summary: EspImportSummary) -> None:
    campaigns = send_campaigns(con)  # the inbox is shared: an event is stored under its send's campaign
    send_ids = set(campaigns)
    event_ids = {r[0] for r in con.execute("SELECT event_id FROM raw.events").fetchall()}
    known_skips = {r[0] for r in con.execute("SELECT event_id FROM raw.esp_events_skipped").fetchall()}
    fates = _Sorted()
    for stored in files:
        one = sort_events(stored.path, stored.provider, stored.lines)
        fates.candidates += one.candidates
        fates.quarantine += one.quarantine
        fates.skipped += one.skipped
    candidates = pd.DataFrame(fates.candidates, columns=_CANDIDATE_COLUMNS)
    candidates["source_row"] = candidates["source_row"].astype("int64")
    # One unsubscribe per send: a second click on the link is a repeat, not a conflicting copy of the event.
    clicks = candidates[candidates["provider"] == ONECLICK].sort_values(["occurred_at", "source_file", "source_row"])
    later_clicks = clicks.index[clicks.duplicated("event_id")]
    candidates = candidates.drop(index=later_clicks)
    result = validate_events(candidates, send_ids, event_ids)
    quarantined = pd.concat([pd.DataFrame(fates.quarantine, columns=QUARANTINE_COLUMNS), result.quarantined], ignore_index=True)
    quarantined["source_row"] = quarantined["source_row"].astype("int64")
    suppress = _oneclick_suppressions(quarantined, files, run)
    skipped = _new_skips(fates.skipped, known_skips)
    accepted_per_file = result.accepted["source_file"].value_counts()
    quarantined_per_file = quarantined["source_file"].value_counts()
    with transaction(con):
        insert_rows(con, "events", stamp_by_send(run, result.accepted, campaigns))
        insert_rows(con, "events_quarantine", run.stamp(quarantined, "imported_at"))
        insert_rows(con, "esp_events_skipped", run.stamp(skipped, "imported_at"))
        summary.suppressed_directly += insert_rows(con, "suppression", suppress, skip_existing=True)
        for stored in files:
            name = str(stored.path)
            counts = (len(stored.lines), int(accepted_per_file.get(name, 0)), int(quarantined_per_file.get(name, 0)))
            register_file(con, run, "events", stored.path, stored.sha, counts)
    summary.files += [str(f.path) for f in files]
    summary.rows += sum(len(f.lines) for f in files)
    summary.accepted += len(result.accepted)
    summary.quarantined += len(quarantined)
    summary.skipped.update(skipped["reason_code"] if not skipped.empty else [])
    summary.already_imported += result.already_imported + len(later_clicks) + len(fates.skipped) - len(skipped)
