"""Outcome-event files (ESP exports, the simulated market): read them, check every row, lose none.

Events come from outside the line, so each row is untrusted and ends in exactly one place:

- accepted: valid and new;
- quarantined: with one reason (the first check it fails) naming the column and value;
- already_imported (a count): its event_id is in the warehouse already, or it repeats an
  earlier row of the same batch with identical content. Events are immutable facts, so
  the first copy wins and importing a file twice adds no events.

Rows that share an event_id within a batch but disagree (send, type or time) are all
quarantined as `duplicate_event`: there is no telling which copy is true.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pandera.pandas as pa

EVENT_TYPES = (
    "delivered",
    "bounced",
    "opened",
    "replied",
    "positive_reply",
    "booked",
    "unsubscribed",
    "complained",
)
EVENT_COLUMNS = ("event_id", "send_id", "event_type", "occurred_at")
SUPPORTED_EXTENSIONS = (".csv",)
REASON_CODES = ("missing_field", "bad_event_type", "bad_timestamp", "unknown_send_id", "duplicate_event")
QUARANTINE_COLUMNS = ["source_file", "source_row", "column_name", "reason_code", "reason", "raw_record"]
_SOURCE_COLUMNS = ("source_file", "source_row")
_UTC_OFFSET = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"

# The gate on what reaches raw.events; occurred_at is naive UTC like the warehouse's TIMESTAMP.
ACCEPTED_EVENTS_SCHEMA = pa.DataFrameSchema(
    {
        "event_id": pa.Column(str, pa.Check.str_length(min_value=1), unique=True),
        "send_id": pa.Column(str, pa.Check.str_length(min_value=1)),
        "event_type": pa.Column(str, pa.Check.isin(EVENT_TYPES)),
        "occurred_at": pa.Column("datetime64[ns]"),
        "source_file": pa.Column(str, pa.Check.str_length(min_value=1)),
        "source_row": pa.Column("int64", pa.Check.ge(2)),
    },
    strict=True,
    ordered=True,
)


class EventFileError(ValueError):
    """An event file that cannot be read at all; the message names the file (and row/column)."""


class ValidatedEvents(NamedTuple):
    """The fate of every row of a batch: accepted + quarantined + already_imported == rows in."""

    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    already_imported: int


def read_event_file(path: Path | str) -> pd.DataFrame:
    """All columns of a CSV event file as strings, plus `source_file` and `source_row`.

    `source_row` is the line the record starts on (the header is line 1), so an operator
    finds a quarantined row in any editor. Structural damage (bad bytes, missing or
    duplicate columns, a row with the wrong number of fields) fails the whole file:
    its rows cannot be trusted to line up with their columns.
    """
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise EventFileError(f"{path}: unsupported extension {path.suffix!r}; expected one of {SUPPORTED_EXTENSIONS}")
    header, rows, lines = parse_csv(path, decode_utf8(path, path.read_bytes(), EventFileError), _check_header, EventFileError)
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    frame["source_file"] = str(path)
    frame["source_row"] = pd.Series(lines, dtype="int64")
    return frame


def parse_csv(
    path: Path, text: str, check_header: Callable[[Path, list[str]], None], error: type[ValueError]
) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, non-blank records, the line each record starts on), strictly: `check_header` refuses a
    header its caller cannot use, and a record with the wrong number of fields or broken quoting is
    `error`, naming the file and row. Shared by the event importer and `factory replies classify`."""
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, lines = [], []
    try:
        header = [name.strip() for name in next(reader, [])]
        check_header(path, header)
        start = reader.line_num + 1
        for record in reader:
            if record:
                if len(record) != len(header):
                    raise error(f"{path}, row {start}: {len(record)} fields, but the header has {len(header)}")
                rows.append(record)
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise error(f"{path}, row {reader.line_num}: {exc}") from exc
    return header, rows, lines


def decode_utf8(path: Path, data: bytes, error: type[ValueError]) -> str:
    """UTF-8 text (a spreadsheet's BOM dropped); bad bytes are located (row and column) so the sender can fix them."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        row = data.count(b"\n", 0, exc.start) + 1
        field = data.count(b",", line_start, exc.start)
        header = data.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").strip().split(",")
        column = header[field].strip() if row > 1 and field < len(header) else f"field {field + 1}"
        raise error(f"{path}, row {row}, column {column}: byte 0x{data[exc.start]:02x} is not valid UTF-8") from exc


def _check_header(path: Path, header: list[str]) -> None:
    if not header:
        raise EventFileError(f"{path}: empty file, expected a header row")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise EventFileError(f"{path}: duplicate column(s) {', '.join(duplicated)}")
    missing = [name for name in EVENT_COLUMNS if name not in header]
    if missing:
        raise EventFileError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header)}")


def validate_events(raw: pd.DataFrame, known_send_ids: set[str], known_event_ids: set[str]) -> ValidatedEvents:
    """Split a batch of raw event rows (from one or more files) into accepted, quarantined and skipped."""
    missing = [c for c in (*EVENT_COLUMNS, *_SOURCE_COLUMNS) if c not in raw.columns]
    if missing:
        raise ValueError(f"raw events lack column(s): {', '.join(missing)}")
    raw = raw.reset_index(drop=True)
    values = pd.DataFrame({c: raw[c].astype("string").fillna("").str.strip() for c in EVENT_COLUMNS})
    occurred = _parse_timestamps(values["occurred_at"])
    skipped = values["event_id"].isin(known_event_ids)
    failures = _first_failures(values, occurred, known_send_ids, open_rows=~skipped)
    valid = ~skipped & failures["reason_code"].isna()
    repeats, conflicts = _batch_duplicates(values, occurred, valid)
    failures.loc[conflicts, "reason_code"] = "duplicate_event"
    failures.loc[conflicts, "column_name"] = "event_id"
    accepted_rows = valid & ~repeats & ~conflicts
    accepted = pd.DataFrame(
        {
            **{c: values.loc[accepted_rows, c].astype(object) for c in ("event_id", "send_id", "event_type")},
            "occurred_at": occurred[accepted_rows],
            "source_file": raw.loc[accepted_rows, "source_file"].astype(str),
            "source_row": raw.loc[accepted_rows, "source_row"].astype("int64"),
        }
    ).reset_index(drop=True)
    quarantined = _quarantine(raw, values, failures)
    return ValidatedEvents(
        ACCEPTED_EVENTS_SCHEMA.validate(accepted),
        quarantined,
        int((skipped | repeats).sum()),
    )


def _parse_timestamps(text: pd.Series) -> pd.Series:
    """ISO-8601 strings as naive UTC (NaT where unparseable); a string without an offset is UTC.

    Strings with and without an offset are parsed apart: pandas 2 applies the offset of
    an earlier element to a later naive one when they are parsed together.
    """
    has_offset = text.str.contains(_UTC_OFFSET, regex=True)
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    for mask in (has_offset, ~has_offset):
        stamps = pd.to_datetime(text[mask], format="ISO8601", utc=True, errors="coerce")
        parsed[mask] = stamps.dt.tz_convert(None).astype("datetime64[ns]")
    return parsed


def _first_failures(values: pd.DataFrame, occurred: pd.Series, known_send_ids: set[str], open_rows: pd.Series) -> pd.DataFrame:
    """reason_code and column_name of the first check each open row fails (NA where it passes)."""
    checks = [
        *[("missing_field", c, values[c] == "") for c in EVENT_COLUMNS],
        ("bad_event_type", "event_type", ~values["event_type"].isin(EVENT_TYPES)),
        ("bad_timestamp", "occurred_at", occurred.isna()),
        ("unknown_send_id", "send_id", ~values["send_id"].isin(known_send_ids)),
    ]
    failures = pd.DataFrame({"reason_code": pd.NA, "column_name": pd.NA}, index=values.index, dtype=object)
    for code, column, failed in checks:
        hit = open_rows & failed & failures["reason_code"].isna()
        failures.loc[hit, ["reason_code", "column_name"]] = [code, column]
    return failures


def _batch_duplicates(values: pd.DataFrame, occurred: pd.Series, valid: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(identical repeats after the first copy, all copies of event_ids whose copies disagree)."""
    content = values[["event_id", "send_id", "event_type"]].assign(occurred_at=occurred)[valid]
    versions = content.drop_duplicates().groupby("event_id")["send_id"].size()
    conflicts = content["event_id"].map(versions).gt(1)
    repeats = content.duplicated() & ~conflicts
    return repeats.reindex(values.index, fill_value=False), conflicts.reindex(values.index, fill_value=False)


def _quarantine(raw: pd.DataFrame, values: pd.DataFrame, failures: pd.DataFrame) -> pd.DataFrame:
    bad = failures.index[failures["reason_code"].notna()]
    originals = raw.drop(columns=list(_SOURCE_COLUMNS))
    rows = [
        {
            "source_file": str(raw.at[i, "source_file"]),
            "source_row": int(raw.at[i, "source_row"]),
            "column_name": failures.at[i, "column_name"],
            "reason_code": failures.at[i, "reason_code"],
            "reason": _reason(failures.at[i, "reason_code"], failures.at[i, "column_name"], values, raw, i),
            "raw_record": json.dumps(originals.loc[i].to_dict(), ensure_ascii=False, default=str),
        }
        for i in bad
    ]
    frame = pd.DataFrame(rows, columns=QUARANTINE_COLUMNS)
    frame["source_row"] = frame["source_row"].astype("int64")
    return frame


def _reason(code: str, column: str, values: pd.DataFrame, raw: pd.DataFrame, i: int) -> str:
    value = values.at[i, column]
    if code == "missing_field":
        return f"{column} is empty"
    if code == "bad_event_type":
        return f"event_type {value!r} is not one of {', '.join(EVENT_TYPES)}"
    if code == "bad_timestamp":
        return f"occurred_at {value!r} is not an ISO-8601 timestamp"
    if code == "unknown_send_id":
        return f"send_id {value!r} does not match any send"
    same = values.index[values["event_id"] == value]
    where = ", ".join(f"{raw.at[j, 'source_file']}:{raw.at[j, 'source_row']}" for j in same)
    return f"event_id {value!r} appears {len(same)} times in this batch with different content ({where})"
