"""The suppression list: addresses the line must never write to again.

Fed by outcomes (unsubscribed, complained, bounced) and by do-not-contact files
dropped in the suppression inbox (CSV with an `email` column, optional `reason`).
An address once suppressed stays suppressed.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from factory_dagster.controls.incidents import record_incident
from factory_dagster.models.gateway import RunContext, utcnow
from factory_dagster.warehouse.file_registry import file_sha256, register_file, registered_hashes
from factory_dagster.warehouse.store import fetch_one, transaction

SUPPRESSING_EVENTS = ("unsubscribed", "complained", "bounced")


def _add(con: duckdb.DuckDBPyConnection, rows: pd.DataFrame) -> int:
    before = fetch_one(con, "SELECT count(*) FROM raw.suppression")[0]
    con.register("_suppress", rows)
    try:
        con.execute("INSERT INTO raw.suppression BY NAME SELECT * FROM _suppress ON CONFLICT DO NOTHING")
    finally:
        con.unregister("_suppress")
    return fetch_one(con, "SELECT count(*) FROM raw.suppression")[0] - before


def suppress_from_events(con: duckdb.DuckDBPyConnection, run: RunContext) -> int:
    """Suppress every recipient whose send drew an unsubscribe, complaint or bounce."""
    rows = con.execute(
        f"""SELECT DISTINCT ON (lower(s.to_email)) lower(s.to_email) AS email, e.event_type AS reason,
                   'event:' || e.event_id AS source
            FROM raw.events e JOIN raw.sends s USING (send_id)
            WHERE e.event_type IN {SUPPRESSING_EVENTS}
            ORDER BY lower(s.to_email), e.occurred_at""",
    ).df()
    return _add(con, rows.assign(partition_day=run.partition_day, added_at=utcnow()))


def import_suppression_files(con: duckdb.DuckDBPyConnection, inbox: Path, run: RunContext) -> int:
    """Suppress the addresses of every new do-not-contact file; a file without `email` is rejected."""
    added = 0
    seen = registered_hashes(con)
    for path in sorted(Path(inbox).glob("*.csv")) if Path(inbox).exists() else []:
        sha = file_sha256(path)
        if sha in seen:
            continue
        seen.add(sha)  # the same list dropped twice under two names is imported once
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            error = None if "email" in frame.columns else f"{path}: missing column 'email'; found {', '.join(frame.columns)}"
        except ValueError as exc:  # empty, not UTF-8 or malformed: pandas raises ValueError subclasses
            error = f"{path}: cannot read the file as CSV: {exc}"
        with transaction(con):
            if error:
                register_file(con, run, "suppression", path, sha, error=error)
                record_incident(con, run, "suppression_file_rejected", "warning", error)
                continue
            emails = frame.email.str.strip().str.lower()
            # Even a malformed address is suppressed: suppressing too much is the safe side.
            keep = emails != ""
            rows = pd.DataFrame(
                {
                    "email": emails[keep],
                    "reason": frame.get("reason", pd.Series("do_not_contact", index=frame.index))[keep].replace(
                        "", "do_not_contact"
                    ),
                    "source": f"file:{path.name}",
                }
            ).drop_duplicates("email")
            added += _add(con, rows.assign(partition_day=run.partition_day, added_at=utcnow()))
            register_file(con, run, "suppression", path, sha, (len(frame), int(keep.sum()), int((~keep).sum())))
    return added
