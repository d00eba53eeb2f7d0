"""Faults the line must survive, at small scale: corrupt lead files, a held warehouse, a crash mid-send.

The `reliability` benchmark runs the same faults at full size against the real line
(200 MB line, 60 s lock, kill -9); these tests keep the behaviour in CI in seconds.
"""

from __future__ import annotations

import functools
import os
import time
import tracemalloc
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from helpers_db import DAY, SPEC, run_for

from benchmarks.reliability_inputs import CORRUPT_INPUTS, good, million_columns, one_huge_line
from benchmarks.reliability_lock import LockHolder
from factory_dagster.delivery import FileTransport, OutgoingMessage
from factory_dagster.delivery.eml import STALE_PARTIAL_SECONDS
from factory_dagster.intake.importer import import_lead_files
from factory_dagster.intake.layout import MAX_COLUMNS, MAX_LINE_BYTES
from factory_dagster.intake.reading import LeadFileError, read_lead_file
from factory_dagster.warehouse.store import connect

# The benchmark's corrupt files, with the two big ones just over the limits instead of 13 MB and 200 MB.
SMALL_CORRUPT_INPUTS: dict[str, Callable[[Path, date], None]] = {
    **CORRUPT_INPUTS,
    "million_columns.csv": functools.partial(million_columns, columns=2 * MAX_COLUMNS),
    "one_200mb_line.csv": functools.partial(one_huge_line, size=2 * MAX_LINE_BYTES),
}
EXPECTED_ERRORS = {
    "truncated.csv": "looks cut short",
    "binary.csv": "the file is binary",
    "wrong_encoding_cp1252.csv": "not valid UTF-8",
    "wrong_encoding_utf16.csv": "UTF-16 encoded",
    "million_columns.csv": f"more than {MAX_COLUMNS:,} columns",
    "one_200mb_line.csv": f"line 1 is longer than {MAX_LINE_BYTES:,} bytes",
}


def test_each_corrupt_lead_file_is_rejected_by_name_and_the_good_one_imports(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name, write in SMALL_CORRUPT_INPUTS.items():
        write(inbox / name, DAY)
    good(inbox / "good.csv", DAY)
    run = run_for()
    with connect(tmp_path / "warehouse.duckdb") as con:
        summary = import_lead_files(con, [inbox], SPEC, run)
        files = {
            Path(path).name: (status, error, accepted)
            for path, status, error, accepted in con.execute(
                "SELECT file_path, status, error, rows_accepted FROM raw.intake_files WHERE kind = 'leads'"
            ).fetchall()
        }
        incidents = [d for (d,) in con.execute("SELECT detail FROM raw.incidents WHERE kind = 'lead_file_rejected'").fetchall()]
    assert summary.files == [str(inbox / "good.csv")]
    assert files["good.csv"] == ("imported", None, 40)
    for name, expected in EXPECTED_ERRORS.items():
        status, error, _ = files[name]
        assert status == "rejected" and error.startswith(f"{inbox / name}: ") and expected in error, (name, error)
        assert sum(str(inbox / name) in detail for detail in incidents) == 1


def test_a_huge_line_is_rejected_without_reading_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "one_line.csv"
    one_huge_line(path, DAY, size=16 * MAX_LINE_BYTES)
    tracemalloc.start()
    try:
        with pytest.raises(LeadFileError, match="line 1 is longer"):
            read_lead_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_LINE_BYTES  # the file is 16 MB; reading it whole took several times that


def test_a_complete_file_without_a_final_line_break_still_imports(tmp_path: Path) -> None:
    path = tmp_path / "no_final_newline.csv"
    good(path, DAY)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    assert len(read_lead_file(path)) == 40


def test_a_connection_waits_while_another_process_holds_the_warehouse(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with connect(warehouse):
        pass
    holder = LockHolder(warehouse, seconds=2.0)
    locked_at = holder.wait_locked()
    with pytest.raises(duckdb.IOException, match="lock"):
        with connect(warehouse, wait_s=0.2):
            pass
    with connect(warehouse) as con:
        waited = time.time() - locked_at
        assert con.execute("SELECT count(*) FROM raw.leads").fetchall() == [(0,)]
    released_at = holder.wait_released()
    assert 1.5 < waited < 10 and released_at - locked_at >= 2.0


def _message(day: date) -> OutgoingMessage:
    return OutgoingMessage(
        send_id="snd_0042",
        day=day,
        from_name=SPEC.sender.name,
        from_email=SPEC.sender.email,
        to_email="ana@northwind.example",
        subject="Closing the month faster",
        body="Hi Ana,\nWould a short call help?",
        postal_address=SPEC.sender.postal_address,
    )


def test_a_message_written_before_a_crash_is_not_delivered_again_the_next_day(tmp_path: Path) -> None:
    """Regression: a run killed after writing .eml files but before recording its sends left those
    messages pending, and the next day's run wrote them again under its own day folder."""
    first = FileTransport(tmp_path).deliver(_message(DAY))
    # The killed writer also left a half-written temp file behind.
    partial = Path(first).with_name(f".{Path(first).name}.x1y2.tmp")
    partial.write_bytes(b"From: half")
    old = partial.stat().st_mtime - STALE_PARTIAL_SECONDS - 1
    os.utime(partial, (old, old))
    # Another campaign's run is writing a message this moment: its temp file is fresh and stays.
    writing = Path(first).with_name(".snd_0043.eml.a1b2.tmp")
    writing.write_bytes(b"From: being written")

    again = FileTransport(tmp_path).deliver(_message(DAY + timedelta(days=1)))

    assert again == first
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        DAY.isoformat(),
        f"{DAY.isoformat()}/.snd_0043.eml.a1b2.tmp",
        f"{DAY.isoformat()}/snd_0042.eml",
    ]
