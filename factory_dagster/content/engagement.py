"""Engagement ingest for the content line: LinkedIn post analytics, GA4 sessions and e-mail subject events.

Each importer turns an export into rows keyed by `variant_id` (variant_id, channel, metric, value,
day, plus where the row came from), and every input row ends accepted or quarantined with a
reason, never dropped; a file that cannot be read at all raises `EngagementFileError` naming the
file, row and column (the outreach importer's strict CSV reader, `feedback.events.parse_csv`).
Which variants exist comes from the published days (`publish.read_published`): a row that names
no published variant is quarantined, not guessed.

Assumptions about the exports (column names are matched without regard to case or spaces at the ends):

- **LinkedIn post analytics** (a page's content export saved as CSV, header on the first line):
  `Post title` (the start of the post's text; `Post text` also accepted), optional `Post link`,
  `Impressions`, `Clicks`, `Reactions` (or `Likes`), `Comments`, `Reposts` (or `Shares`), and an
  optional `Date` (the day the counts cover; else the caller's day). LinkedIn's post link is an
  activity URN that says nothing of our variant, so a post maps to its variant by a `utm_content=`
  parameter in its text or link (our links carry it) or, failing that, by its text: the title
  must be the start of exactly one published variant's text (at least 20 characters).
- **GA4** (an exploration or report exported as CSV): GA4's `#` preamble lines are skipped (its
  `# Start date: YYYYMMDD` / `# End date:` give the day when they agree), then a header with
  `Session manual ad content` (GA4's name for utm_content; `utm_content` also accepted),
  `Session source / medium` (or `Session source` and `Session medium`), `Session campaign`,
  `Sessions`, `Engaged sessions`, `Key events` (or the older `Conversions`), and an optional
  `Date` (YYYYMMDD or YYYY-MM-DD). Rows of other traffic (`(not set)` content) are quarantined as
  `no_utm_content`: the export holds the whole site's traffic, and we account for every row.
  Several rows for one variant (one per source / medium) are all accepted; marts sum them.
- **E-mail subject lines**: events in the `raw.events` columns (`event_id`, `send_id`, `event_type`,
  `occurred_at`) with the subject variant of their send (`variant_id`), from the outreach line's
  events or an ESP's event export dropped as CSV in `email/`; `clicked` is accepted too (ESP clicks
  are kept in `raw.esp_events_skipped`). Each event is one row of value 1, credited once per send and type.

Re-importing a file is harmless: `import_engagement_files` keys files by content hash in the
`raw.intake_files` register (kind `content_engagement`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from urllib.parse import unquote_plus

import duckdb
import pandas as pd

from factory_dagster.feedback.events import EVENT_TYPES, decode_utf8, parse_csv
from factory_dagster.run_context import RunContext
from factory_dagster.warehouse.file_registry import inbox_files, register_file, reject_file, unregistered_files
from factory_dagster.warehouse.store import insert_rows, transaction

ACCEPTED_COLUMNS = ["variant_id", "channel", "metric", "value", "day", "source", "source_file", "source_row"]
QUARANTINE_COLUMNS = ["source", "source_file", "source_row", "column_name", "reason_code", "reason", "raw_record"]
LINKEDIN_METRICS = {"impressions": ("impressions",), "clicks": ("clicks",), "reactions": ("reactions", "likes")}
LINKEDIN_METRICS |= {"comments": ("comments",), "reposts": ("reposts", "shares")}
LINKEDIN_TEXT = ("post title", "post text")
GA4_CONTENT = ("session manual ad content", "utm_content", "session ad content")
GA4_METRICS = {"sessions": ("sessions",), "engaged_sessions": ("engaged sessions",), "key_events": ("key events", "conversions")}
EMAIL_METRICS = (*EVENT_TYPES, "clicked")
REGISTER_KIND = "content_engagement"
MIN_TITLE_CHARS = 20
_NOT_SET = {"", "(not set)", "(none)", "(direct)"}
_UTM_CONTENT = re.compile(r"[?&]utm_content=([^&#\s]+)")
_NUMBER = re.compile(r"^(?:\d+|\d{1,3}(?:,\d{3})+)(?:\.0+)?$")


class EngagementFileError(ValueError):
    """An export that cannot be read at all; the message names the file (and row and column)."""


@dataclass(frozen=True)
class Engagement:
    """Accepted metric rows and quarantined input rows; `rows` is how many input rows there were."""

    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    rows: int

    def accounted_rows(self) -> int:
        """Input rows that ended somewhere (accepted rows count once, whatever their metrics)."""
        keys = pd.concat([self.accepted[["source_file", "source_row"]], self.quarantined[["source_file", "source_row"]]])
        return len(keys.drop_duplicates())


@dataclass(frozen=True)
class Variants:
    """The published variants the importers may credit: id -> channel, and id -> text for LinkedIn's titles."""

    channel: Mapping[str, str]
    text: Mapping[str, str]

    @classmethod
    def from_pieces(cls, pieces: pd.DataFrame) -> Variants:
        ids = pieces["variant_id"].astype(str)
        return cls(
            dict(zip(ids, pieces["channel"].astype(str), strict=True)), dict(zip(ids, pieces["text"].astype(str), strict=True))
        )

    def by_title(self, title: str) -> list[str]:
        """Variants whose text starts with this (possibly cut) title, whitespace collapsed."""
        title = " ".join(title.split()).rstrip(".… ")
        if len(title) < MIN_TITLE_CHARS:
            return []
        return sorted(v for v, text in self.text.items() if " ".join(text.split()).startswith(title))


# -- shared reading ------------------------------------------------------------------------


def _read(path: Path, check_header: Callable[[Path, list[str]], None]) -> tuple[list[str], pd.DataFrame, list[str]]:
    """(header, rows as strings with source_row, preamble lines) of a CSV export; bad files raise naming file and row."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise EngagementFileError(f"{path}: unsupported extension {path.suffix!r}; expected .csv")
    text = decode_utf8(path, path.read_bytes(), EngagementFileError)
    lines = text.splitlines(keepends=True)
    skip = 0
    while skip < len(lines) and (lines[skip].startswith("#") or not lines[skip].strip()):
        skip += 1
    preamble = [line.strip() for line in lines[:skip] if line.strip()]
    try:
        header, rows, numbers = parse_csv(path, "".join(lines[skip:]), check_header, EngagementFileError)
    except EngagementFileError as exc:  # rows counted after the preamble: name them as an editor shows them
        shifted = re.sub(r"^(.*?, row )(\d+)", lambda m: f"{m.group(1)}{int(m.group(2)) + skip}", str(exc), count=1)
        raise EngagementFileError(shifted) from exc
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    frame["source_row"] = pd.Series([n + skip for n in numbers], dtype="int64")
    return header, frame, preamble


def _column(header: Sequence[str], names: Sequence[str]) -> str | None:
    lowered = {name.strip().lower(): name for name in header}
    return next((lowered[n] for n in names if n in lowered), None)


def _require(path: Path, header: list[str], wanted: Mapping[str, Sequence[str]]) -> None:
    if not header or header == [""]:
        raise EngagementFileError(f"{path}: empty file, expected a header row")
    duplicated = sorted({n for n in header if header.count(n) > 1})
    if duplicated:
        raise EngagementFileError(f"{path}: duplicate column(s) {', '.join(duplicated)}")
    missing = [" or ".join(repr(n) for n in names) for names in wanted.values() if _column(header, names) is None]
    if missing:
        raise EngagementFileError(f"{path}: missing column(s) {'; '.join(missing)}; found {', '.join(header)}")


def _count(value: str) -> int | None:
    """A non-negative whole count ("1,234" and "12.0" included), None when it is not one."""
    value = value.strip()
    return int(float(value.replace(",", ""))) if _NUMBER.match(value) else None


def _day(value: str) -> date | None:
    value = value.strip()
    for pattern in ("%Y-%m-%d", "%Y%m%d", "%m/%d/%Y"):
        try:
            return datetime.strptime(value, pattern).date()
        except ValueError:
            continue
    return None


class _Sorter:
    """Collects each row's fate for one source and builds the two frames."""

    def __init__(self, source: str, source_file: str) -> None:
        self.source, self.source_file = source, source_file
        self.accepted: list[dict] = []
        self.quarantined: list[dict] = []

    def accept(self, row: int, variant: str, channel: str, day: date, metrics: Mapping[str, float]) -> None:
        self.accepted += [
            {"variant_id": variant, "channel": channel, "metric": m, "value": float(v), "day": day}
            | {"source": self.source, "source_file": self.source_file, "source_row": row}
            for m, v in metrics.items()
        ]

    def reject(self, row: int, column: str | None, code: str, reason: str, record: Mapping[str, object]) -> None:
        raw = json.dumps({k: v for k, v in record.items() if k != "source_row"}, ensure_ascii=False, default=str)
        self.quarantined.append(
            {"source": self.source, "source_file": self.source_file, "source_row": row}
            | {"column_name": column, "reason_code": code, "reason": reason, "raw_record": raw}
        )

    def result(self, rows: int) -> Engagement:
        accepted = pd.DataFrame(self.accepted, columns=ACCEPTED_COLUMNS).astype({"source_row": "int64", "value": "float64"})
        quarantined = pd.DataFrame(self.quarantined, columns=QUARANTINE_COLUMNS).astype({"source_row": "int64"})
        return Engagement(accepted, quarantined, rows)


def _day_of(record: Mapping[str, str], day_column: str | None, default: date | None) -> tuple[date | None, str | None]:
    """(the row's day, an error) from its Date column or the file's default day."""
    if day_column is None:
        return default, None
    found = _day(record[day_column])
    return found, None if found else f"{day_column} {record[day_column]!r} is not a date (YYYY-MM-DD, YYYYMMDD or MM/DD/YYYY)"


def _counts(record: Mapping[str, str], columns: Mapping[str, str]) -> tuple[dict[str, int], str | None]:
    counts = {}
    for metric, column in columns.items():
        value = _count(record[column])
        if value is None:
            return counts, column
        counts[metric] = value
    return counts, None


# -- LinkedIn ------------------------------------------------------------------------------


def _linkedin_header(path: Path, header: list[str]) -> None:
    _require(path, header, {"text": LINKEDIN_TEXT, **LINKEDIN_METRICS})


def _linkedin_variant(
    record: Mapping[str, str], text_col: str, link_col: str | None, variants: Variants
) -> tuple[str | None, str]:
    """(variant, why not) for one post: its utm_content first, then its title."""
    for value in (record[text_col], record[link_col] if link_col else ""):
        found = _UTM_CONTENT.search(value)
        if found:
            variant = unquote_plus(found.group(1))
            return (variant, "") if variant in variants.channel else (None, f"utm_content {variant!r} is not a published variant")
    matches = variants.by_title(record[text_col])
    if len(matches) == 1:
        return matches[0], ""
    if matches:
        return None, f"post title matches {len(matches)} published variants ({', '.join(matches[:5])})"
    return None, "no utm_content in the post and its title is not the start of any published variant's text"


def import_linkedin(path: Path, variants: Variants, day: date | None = None) -> Engagement:
    """A LinkedIn post-analytics export: five metrics per post (impressions, clicks, reactions, comments, reposts)."""
    header, frame, _ = _read(Path(path), _linkedin_header)
    text_col = _column(header, LINKEDIN_TEXT)
    link_col = _column(header, ("post link", "post url"))
    day_col = _column(header, ("date",))
    if day_col is None and day is None:
        raise EngagementFileError(f"{path}: no Date column and no day given: the counts' day is unknown")
    metrics = {m: _column(header, names) for m, names in LINKEDIN_METRICS.items()}
    sorter, first_row = _Sorter("linkedin", str(path)), {}
    for record in frame.to_dict("records"):
        row = int(record["source_row"])
        variant, why = _linkedin_variant(record, text_col, link_col, variants)
        row_day, day_error = _day_of(record, day_col, day)
        counts, bad = _counts(record, metrics)
        if variant is None:
            sorter.reject(row, text_col, "unknown_post", why, record)
        elif day_error:
            sorter.reject(row, day_col, "bad_date", day_error, record)
        elif bad:
            sorter.reject(row, bad, "bad_number", f"{bad} {record[bad]!r} is not a whole count >= 0", record)
        elif counts["clicks"] > counts["impressions"]:
            sorter.reject(
                row, metrics["clicks"], "inconsistent", f"{counts['clicks']} clicks > {counts['impressions']} impressions", record
            )
        elif (variant, row_day) in first_row:
            reason = f"variant {variant} on {row_day} was already counted at row {first_row[(variant, row_day)]}"
            sorter.reject(row, text_col, "duplicate_variant", reason, record)
        else:
            first_row[(variant, row_day)] = row
            sorter.accept(row, variant, variants.channel[variant], row_day, counts)
    return sorter.result(len(frame))


# -- GA4 -----------------------------------------------------------------------------------


def _ga4_header(path: Path, header: list[str]) -> None:
    _require(path, header, {"content": GA4_CONTENT, **GA4_METRICS})


def _preamble_day(preamble: list[str]) -> date | None:
    found = {}
    for line in preamble:
        match = re.match(r"#\s*(Start|End) date:\s*(\S+)", line, re.IGNORECASE)
        if match:
            found[match.group(1).lower()] = _day(match.group(2))
    return found.get("start") if found.get("start") and found.get("start") == found.get("end") else None


def import_ga4(path: Path, variants: Variants, day: date | None = None) -> Engagement:
    """A GA4 sessions export keyed by utm_content: sessions, engaged sessions and key events per variant."""
    header, frame, preamble = _read(Path(path), _ga4_header)
    content_col = _column(header, GA4_CONTENT)
    day_col = _column(header, ("date",))
    default_day = _preamble_day(preamble) or day
    if day_col is None and default_day is None:
        raise EngagementFileError(f"{path}: no Date column, no single-day '# Start date' / '# End date' and no day given")
    dims = [
        c for c in (_column(header, n) for n in (("session source / medium",), ("session source",), ("session medium",))) if c
    ]
    dims += [c for c in (_column(header, ("session campaign", "session manual campaign name")),) if c]
    metrics = {m: _column(header, names) for m, names in GA4_METRICS.items()}
    sorter, first_row = _Sorter("ga4", str(path)), {}
    for record in frame.to_dict("records"):
        row, content = int(record["source_row"]), record[content_col].strip()
        row_day, day_error = _day_of(record, day_col, default_day)
        counts, bad = _counts(record, metrics)
        key = (content, row_day, *(record[c].strip() for c in dims))
        if content.lower() in _NOT_SET:
            sorter.reject(
                row, content_col, "no_utm_content", f"{content_col} is {content!r}: traffic that is not a variant's", record
            )
        elif content not in variants.channel:
            sorter.reject(row, content_col, "unknown_variant", f"utm_content {content!r} is not a published variant", record)
        elif day_error:
            sorter.reject(row, day_col, "bad_date", day_error, record)
        elif bad:
            sorter.reject(row, bad, "bad_number", f"{bad} {record[bad]!r} is not a whole count >= 0", record)
        elif counts["engaged_sessions"] > counts["sessions"]:
            reason = f"{counts['engaged_sessions']} engaged sessions > {counts['sessions']} sessions"
            sorter.reject(row, metrics["engaged_sessions"], "inconsistent", reason, record)
        elif key in first_row:
            sorter.reject(
                row, content_col, "duplicate_row", f"same variant, day, source and campaign as row {first_row[key]}", record
            )
        else:
            first_row[key] = row
            sorter.accept(row, content, variants.channel[content], row_day, counts)
    return sorter.result(len(frame))


# -- e-mail subject lines ------------------------------------------------------------------


EMAIL_COLUMNS = ["event_id", "send_id", "event_type", "occurred_at", "variant_id"]


def email_subject_engagement(events: pd.DataFrame, variants: Variants, source_file: str = "raw.events") -> Engagement:
    """Subject-line metrics from e-mail events joined to their send's subject variant (`variant_id`).

    `source_row` is the event's row in its file (a `source_row` column), else its position in `events`
    (1-based); the raw record keeps its event_id.
    """
    missing = [c for c in EMAIL_COLUMNS if c not in events.columns]
    if missing:
        raise EngagementFileError(f"{source_file}: events lack column(s) {', '.join(missing)}")
    sorter, seen = _Sorter("email", source_file), {}
    stamps = pd.to_datetime(events["occurred_at"], errors="coerce", utc=True, format="mixed")
    positions = events["source_row"] if "source_row" in events.columns else range(1, len(events) + 1)
    for position, record, stamp in zip(positions, events[EMAIL_COLUMNS].to_dict("records"), stamps, strict=True):
        variant = "" if pd.isna(record["variant_id"]) else str(record["variant_id"]).strip()
        event_type, key = str(record["event_type"]).strip(), (str(record["send_id"]), str(record["event_type"]).strip())
        if not variant:
            sorter.reject(position, "variant_id", "no_variant", "the send has no subject variant", record)
        elif variants.channel.get(variant) != "email_subject":
            sorter.reject(
                position, "variant_id", "unknown_variant", f"{variant!r} is not a published e-mail subject variant", record
            )
        elif event_type not in EMAIL_METRICS:
            sorter.reject(
                position,
                "event_type",
                "bad_event_type",
                f"event_type {event_type!r} is not one of {', '.join(EMAIL_METRICS)}",
                record,
            )
        elif pd.isna(stamp):
            sorter.reject(
                position, "occurred_at", "bad_timestamp", f"occurred_at {record['occurred_at']!r} is not a timestamp", record
            )
        elif key in seen:
            reason = f"send {key[0]} already has a {event_type} event (row {seen[key]}); a subject is credited once per send"
            sorter.reject(position, "send_id", "repeat_event", reason, record)
        else:
            seen[key] = position
            sorter.accept(position, variant, "email_subject", stamp.date(), {event_type: 1})
    return sorter.result(len(events))


def _email_header(path: Path, header: list[str]) -> None:
    _require(path, header, {name: (name,) for name in EMAIL_COLUMNS})


def import_email_events(path: Path, variants: Variants, day: date | None = None) -> Engagement:
    """An ESP's event export (CSV, the `EMAIL_COLUMNS`) as subject-line metrics; `day` is unused (events carry their time)."""
    header, frame, _ = _read(Path(path), _email_header)
    frame = frame.rename(columns={name: name.strip().lower() for name in header})
    return email_subject_engagement(frame, variants, str(path))


# -- the warehouse -------------------------------------------------------------------------

IMPORTERS = {"linkedin": import_linkedin, "ga4": import_ga4, "email": import_email_events}


@dataclass
class EngagementImportSummary:
    files: list[str] = field(default_factory=list)
    rejected_files: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    accepted_rows: int = 0  # metric rows written (a LinkedIn post gives five)
    quarantined: int = 0


def store_engagement(con: duckdb.DuckDBPyConnection, run: RunContext, result: Engagement) -> None:
    """Append one importer's result to raw.content_engagement and its quarantine (call inside a transaction)."""
    insert_rows(con, "content_engagement", run.stamp(result.accepted, "imported_at"))
    insert_rows(con, "content_engagement_quarantine", run.stamp(result.quarantined, "imported_at"))


def import_engagement_files(
    con: duckdb.DuckDBPyConnection, inbox: Path, run: RunContext, variants: Variants, day: date | None = None
) -> EngagementImportSummary:
    """Import every new export in `inbox/linkedin/`, `inbox/ga4/` and `inbox/email/`, each file once (by content hash).

    A file that cannot be read is registered as rejected with an incident naming it; the other files go on.
    """
    summary = EngagementImportSummary()
    for source, importer in IMPORTERS.items():
        for path, sha in unregistered_files(con, REGISTER_KIND, inbox_files(Path(inbox) / source, {".csv"})):
            try:
                result = importer(path, variants, day)
            except EngagementFileError as exc:
                reject_file(con, run, REGISTER_KIND, path, sha, str(exc))
                summary.rejected_files[str(path)] = str(exc)
                continue
            accepted_inputs = result.accepted["source_row"].nunique()
            with transaction(con):
                store_engagement(con, run, result)
                register_file(con, run, REGISTER_KIND, path, sha, (result.rows, accepted_inputs, len(result.quarantined)))
            summary.files.append(str(path))
            summary.rows += result.rows
            summary.accepted_rows += len(result.accepted)
            summary.quarantined += len(result.quarantined)
    return summary
