"""Import outcome-event files (ESP exports, the simulated market) into `raw.events`.

Each file is imported once (by content hash). Rows for unknown sends, with bad types
or timestamps are quarantined with reasons; events already imported are skipped, so
a re-delivered export is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from factory_dagster.feedback.events import EventFileError, read_event_file, validate_events
from factory_dagster.feedback.sent import send_campaigns, stamp_by_send
from factory_dagster.run_context import RunContext
from factory_dagster.warehouse.file_registry import (
    inbox_files,
    one_import_at_a_time,
    register_file,
    reject_file,
    unregistered_files,
)
from factory_dagster.warehouse.store import insert_rows, transaction


@dataclass
class EventImportSummary:
    files: list[str] = field(default_factory=list)
    rejected_files: dict[str, str] = field(default_factory=dict)
    accepted: int = 0
    quarantined: int = 0
    already_imported: int = 0


@one_import_at_a_time("events")
def import_event_files(con: duckdb.DuckDBPyConnection, inbox: Path, run: RunContext) -> EventImportSummary:
    summary = EventImportSummary()
    campaigns = send_campaigns(con)  # the inbox is shared: an event is stored under its send's campaign
    send_ids = set(campaigns)
    event_ids = {r[0] for r in con.execute("SELECT event_id FROM raw.events").fetchall()}
    for path, sha in unregistered_files(con, "events", inbox_files(inbox, {".csv"})):
        try:
            raw = read_event_file(path)
        except EventFileError as exc:
            reject_file(con, run, "events", path, sha, str(exc))
            summary.rejected_files[str(path)] = str(exc)
            continue
        result = validate_events(raw, send_ids, event_ids)
        event_ids |= set(result.accepted["event_id"])
        with transaction(con):
            insert_rows(con, "events", stamp_by_send(run, result.accepted, campaigns))
            insert_rows(con, "events_quarantine", run.stamp(result.quarantined, "imported_at"))
            register_file(con, run, "events", path, sha, (len(raw), len(result.accepted), len(result.quarantined)))
        summary.files.append(str(path))
        summary.accepted += len(result.accepted)
        summary.quarantined += len(result.quarantined)
        summary.already_imported += result.already_imported
    return summary
