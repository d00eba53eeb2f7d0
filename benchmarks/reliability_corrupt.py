"""Corrupt files in the lead inbox next to good ones: each rejected by name, the rest of the day runs.

The day's normal sample file and one more clean export share the inbox with the corrupt
files of `reliability_inputs`. Each corrupt file must end up `rejected` in `raw.intake_files`
with an error naming it and a `lead_file_rejected` incident; both good files must be imported
and their leads sent; and the line's process must not balloon on the 200 MB line (peak RSS
against a clean day's).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb

from benchmarks.reliability_inputs import CORRUPT_INPUTS, good
from benchmarks.reliability_line import RunWatcher, run_day

GOOD_FILE = "good_export.csv"


def corrupt_inputs(home: Path, day: date, baseline_rss_mb: float) -> dict:
    """Drop the corrupt files and a good one into a fresh folder's inbox, run `day`, report per file."""
    inbox = home / "inbox" / "leads"
    inbox.mkdir(parents=True, exist_ok=True)
    for name, write in CORRUPT_INPUTS.items():
        write(inbox / name, day)
    good(inbox / GOOD_FILE, day)
    watcher = RunWatcher(home)
    run = run_day(home, day, f"corrupt-{day}")
    status = watcher.status(watcher.new_run(day) or "")
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        files = {
            Path(path).name: {"status": file_status, "error": error, "rows": rows, "accepted": accepted}
            for path, file_status, error, rows, accepted in con.execute(
                """SELECT file_path, status, error, rows_total, rows_accepted FROM raw.intake_files
                   WHERE kind = 'leads' AND partition_day = ?""",
                [day],
            ).fetchall()
        }
        incidents = [
            row[0] for row in con.execute("SELECT detail FROM raw.incidents WHERE kind = 'lead_file_rejected'").fetchall()
        ]
        by_file = {
            source: (messages, sent)
            for source, messages, sent in con.execute(
                """SELECT l.source_file, count(m.lead_id), count(s.lead_id) FROM raw.leads l
                   LEFT JOIN raw.messages m USING (lead_id) LEFT JOIN raw.sends s USING (lead_id)
                   WHERE l.partition_day = ? GROUP BY 1""",
                [day],
            ).fetchall()
        }
    outcome = {}
    for name in [*CORRUPT_INPUTS, GOOD_FILE, f"leads_{day.isoformat()}.csv"]:
        path = str((inbox / name).resolve())
        row = files.get(name, {"status": "not registered", "error": None, "rows": 0, "accepted": 0})
        outcome[name] = {
            **row,
            "bytes": (inbox / name).stat().st_size,
            "error_names_file": bool(row["error"]) and path in row["error"],
            "incident": any(path in detail for detail in incidents),
            "messages": by_file.get(path, (0, 0))[0],
            "sent": by_file.get(path, (0, 0))[1],  # the rest of the messages wait for tomorrow's daily cap
        }
    rejected = [n for n in CORRUPT_INPUTS if outcome[n]["status"] == "rejected" and outcome[n]["error_names_file"]]
    return {
        "files": outcome,
        "corrupt_files": len(CORRUPT_INPUTS),
        "rejected_by_name": len(rejected),
        "with_incident": sum(outcome[n]["incident"] for n in CORRUPT_INPUTS),
        "good_files_sent": sum(outcome[n]["sent"] > 0 for n in (GOOD_FILE, f"leads_{day.isoformat()}.csv")),
        "day_s": round(run.seconds, 1),
        "exit_code": run.exit_code,
        "run_status": status,
        "completed": run.exit_code == 0 and status == "SUCCESS",
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "clean_day_peak_rss_mb": round(baseline_rss_mb, 1),
    }
