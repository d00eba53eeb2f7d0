"""Read lead files (CSV or Parquet) from the inbox as text, keeping where each row came from.

Everything is read as a string so that validation, not the reader, decides what a bad
value is, and every row keeps `source_file`/`source_row` so a quarantined row can be found
in the original file. A file that cannot be read as a whole raises `LeadFileError` naming
the file (and the row and column where that applies), so the intake can record the file as
failed instead of silently importing part of it.

Before a CSV is read whole, `layout.layout_problem` rejects what no lead export looks like
(binary, UTF-16, thousands of columns, a line longer than a megabyte) in one streaming pass.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from factory_dagster.intake.layout import DELIMITERS, MAX_COLUMNS, layout_problem
from factory_dagster.warehouse.file_registry import inbox_files

REQUIRED_COLUMNS: tuple[str, ...] = (
    "email",
    "first_name",
    "company",
    "industry",
    "company_size",
    "role",
    "seniority",
    "region",
)
# Optional columns may be absent from a file; they are then read as empty strings.
OPTIONAL_COLUMNS: tuple[str, ...] = ("last_name", "note")
LEAD_COLUMNS: tuple[str, ...] = (
    "email",
    "first_name",
    "last_name",
    "company",
    "industry",
    "company_size",
    "role",
    "seniority",
    "region",
    "note",
)
SOURCE_COLUMNS: tuple[str, ...] = ("source_file", "source_row")
LEAD_FILE_SUFFIXES: frozenset[str] = frozenset({".csv", ".parquet"})

_SHOWN_COLUMNS = 20
_SURROGATES = re.compile("[\udc80-\udcff]+")


class LeadFileError(ValueError):
    """A lead file that cannot be imported; the message names the file, row and column where known."""


def list_lead_files(inbox: Path) -> list[Path]:
    """Lead files waiting in the inbox, by name; hidden and partial files are not leads yet."""
    return inbox_files(inbox, LEAD_FILE_SUFFIXES)


def read_lead_file(path: Path) -> pd.DataFrame:
    """The file's leads as strings (LEAD_COLUMNS) plus `source_file` and `source_row`.

    CSV `source_row` is the line the record starts on, header = 1, so it matches what an
    editor shows even when a quoted note spans lines; Parquet `source_row` is the 1-based
    record index. Extra columns are dropped; missing optional columns read as "".
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        columns, row_numbers = _read_csv(path)
    elif suffix == ".parquet":
        columns, row_numbers = _read_parquet(path)
    else:
        raise LeadFileError(f"{path}: unsupported file type '{path.suffix}' (expected .csv or .parquet)")
    if not row_numbers:
        raise LeadFileError(f"{path}: the file has no data rows, only a header")
    frame = pd.DataFrame({column: columns.get(column, [""] * len(row_numbers)) for column in LEAD_COLUMNS}, dtype=object)
    frame["source_file"] = str(path)
    frame["source_row"] = pd.Series(row_numbers, dtype="int64")
    return frame


def _column_positions(path: Path, header: list[str]) -> dict[str, int]:
    """Lead column -> position in the file; 'First Name', ' first-name' and 'first_name' are the same column."""
    positions: dict[str, int] = {}
    for position, name in enumerate(header):
        key = re.sub(r"[\s\-]+", "_", name.strip().lower())
        if key in LEAD_COLUMNS:
            if key in positions:
                raise LeadFileError(f"{path}: columns '{header[positions[key]]}' and '{name}' both read as '{key}'; keep one")
            positions[key] = position
    missing = [c for c in REQUIRED_COLUMNS if c not in positions]
    if missing:
        found = ", ".join(repr(h) for h in header[:_SHOWN_COLUMNS]) or "none"
        if len(header) > _SHOWN_COLUMNS:
            found += f", … ({len(header):,} columns)"
        raise LeadFileError(f"{path}: missing required column(s) {', '.join(repr(m) for m in missing)} (found: {found})")
    return positions


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LeadFileError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    if not data.strip():
        raise LeadFileError(f"{path}: the file is empty")
    return data


def _read_csv(path: Path) -> tuple[dict[str, list[str]], list[int]]:
    try:
        problem = layout_problem(path)
    except OSError as exc:
        raise LeadFileError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    if problem:
        raise LeadFileError(f"{path}: {problem}")
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
        undecodable = False
    except UnicodeDecodeError:
        # Decode anyway, keeping bad bytes as surrogates, to report the row and column they sit in.
        text = data.decode("utf-8-sig", errors="surrogateescape")
        undecodable = True
    records = _csv_records(path, text)
    if undecodable:
        _raise_for_undecodable(path, records)
    if not records:
        raise LeadFileError(f"{path}: the file is empty")
    (_, header), body = records[0], records[1:]
    positions = _column_positions(path, header)
    _raise_if_cut_short(path, data, header, body)
    for line, fields in body:
        if len(fields) > len(header) and any(f.strip() for f in fields[len(header) :]):
            raise LeadFileError(
                f"{path}: row {line} has {len(fields)} fields but the header has {len(header)}; "
                "a value containing the delimiter must be quoted"
            )
    # A short row (truncated line) reads its missing trailing fields as empty; validation says which.
    columns = {
        column: [fields[position] if position < len(fields) else "" for _, fields in body]
        for column, position in positions.items()
    }
    return columns, [line for line, _ in body]


def _raise_if_cut_short(path: Path, data: bytes, header: list[str], body: list[tuple[int, list[str]]]) -> None:
    """A last row short of fields with no line break after it is a copy or upload cut short.

    Importing its first part would import those leads again, as duplicates, once the
    complete file arrives; rejected, the complete file (another hash) imports whole.
    """
    if body and not data.endswith((b"\n", b"\r")) and len(body[-1][1]) < len(header):
        line, fields = body[-1]
        raise LeadFileError(
            f"{path}: row {line} has {len(fields)} of {len(header)} fields and the file ends there without a "
            "line break: the file looks cut short (truncated); drop the complete file again"
        )


def _csv_records(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """(start line, fields) of each non-blank record; blank spreadsheet rows (',,,') are not leads."""
    header_line = text.lstrip().split("\n", 1)[0]
    delimiter = max(DELIMITERS, key=header_line.count)  # Excel writes ';' in many European locales
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[tuple[int, list[str]]] = []
    end_of_previous = 0
    try:
        for fields in reader:
            if any(field.strip() for field in fields):
                records.append((end_of_previous + 1, fields))
            end_of_previous = reader.line_num
    except csv.Error as exc:
        raise LeadFileError(f"{path}: row {end_of_previous + 1}: malformed CSV ({exc})") from exc
    return records


def _raise_for_undecodable(path: Path, records: list[tuple[int, list[str]]]) -> None:
    header_line, header = records[0] if records else (1, [])
    for line, fields in records:
        for position, field in enumerate(fields):
            bad = _SURROGATES.search(field)
            if bad:
                raw = bad.group().encode("utf-8", errors="surrogateescape")
                where = f"row {line}"
                if line != header_line:
                    where += f", column '{_column_name(header, position)}'"
                raise LeadFileError(
                    f"{path}: {where}: bytes {raw!r} are not valid UTF-8 "
                    "(saved as Windows-1252/Latin-1?); re-export the file as UTF-8"
                )
    raise LeadFileError(f"{path}: the file is not valid UTF-8")


def _column_name(header: list[str], position: int) -> str:
    return header[position] if position < len(header) else f"#{position + 1}"


def _read_parquet(path: Path) -> tuple[dict[str, list[str]], list[int]]:
    _read_bytes(path)  # same messages as CSV for a missing, unreadable or empty file
    try:
        names = pq.read_schema(path).names
        if len(names) > MAX_COLUMNS:
            raise LeadFileError(f"{path}: the file has {len(names):,} columns (at most {MAX_COLUMNS:,}); not a lead export")
        positions = _column_positions(path, names)
        table = pq.read_table(path, columns=[names[i] for i in positions.values()])
    except (OSError, pa.ArrowException) as exc:
        raise LeadFileError(f"{path}: not a readable Parquet file: {exc}") from exc
    columns = {
        column: [_as_text(path, value, row, column) for row, value in enumerate(table.column(i).to_pylist(), 1)]
        for i, column in enumerate(positions)
    }
    return columns, list(range(1, table.num_rows + 1))


def _as_text(path: Path, value: object, row: int, column: str) -> str:
    """A Parquet cell as the text a CSV export would hold: null or NaN -> '', 250 -> '250'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LeadFileError(f"{path}: row {row}, column '{column}': bytes are not valid UTF-8") from exc
    return str(value)
