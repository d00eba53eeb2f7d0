"""The suppression list: addresses and whole domains the line must never write to again.

Fed by outcomes (unsubscribed, complained, bounced) and by do-not-contact files
dropped in the suppression inbox (CSV with an `email` column, optional `reason`); an
entry without a local part (`@example.com` or `example.com`) suppresses the whole domain.
One list for every campaign; an address once suppressed stays suppressed. It is honoured
before assignment and checked again right before each message is handed to the transport
(`warehouse.suppressed.suppressed_sql`, the one definition of "suppressed").
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from factory_dagster.run_context import RunContext, utcnow
from factory_dagster.warehouse.file_registry import (
    inbox_files,
    one_import_at_a_time,
    register_file,
    reject_file,
    unregistered_files,
)
from factory_dagster.warehouse.store import insert_rows, transaction

SUPPRESSING_EVENTS = ("unsubscribed", "complained", "bounced")


def suppress_from_events(con: duckdb.DuckDBPyConnection, run: RunContext) -> int:
    """Suppress every recipient whose send drew an unsubscribe, complaint or bounce."""
    rows = con.execute(
        f"""SELECT DISTINCT ON (lower(s.to_email)) lower(s.to_email) AS email, e.event_type AS reason,
                   'event:' || e.event_id AS source
            FROM raw.events e JOIN raw.sends s USING (send_id)
            WHERE e.event_type IN {SUPPRESSING_EVENTS}
            ORDER BY lower(s.to_email), e.occurred_at""",
    ).df()
    return insert_rows(con, "suppression", rows.assign(partition_day=run.partition_day, added_at=utcnow()), skip_existing=True)


@one_import_at_a_time("suppression")
def import_suppression_files(con: duckdb.DuckDBPyConnection, inbox: Path, run: RunContext) -> int:
    """Suppress the addresses of every new do-not-contact file; a file without `email` is rejected."""
    added = 0
    for path, sha in unregistered_files(con, "suppression", inbox_files(inbox, {".csv"})):
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            error = None if "email" in frame.columns else f"{path}: missing column 'email'; found {', '.join(frame.columns)}"
        except ValueError as exc:  # empty, not UTF-8 or malformed: pandas raises ValueError subclasses
            error = f"{path}: cannot read the file as CSV: {exc}"
        if error:
            reject_file(con, run, "suppression", path, sha, error)
            continue
        with transaction(con):
            emails = frame.email.str.strip().str.lower()
            emails = emails.where(emails.str.contains("@") | (emails == ""), "@" + emails)  # a bare domain: all of it
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
            added += insert_rows(
                con, "suppression", rows.assign(partition_day=run.partition_day, added_at=utcnow()), skip_existing=True
            )
            register_file(con, run, "suppression", path, sha, (len(frame), int(keep.sum()), int((~keep).sum())))
    return added
