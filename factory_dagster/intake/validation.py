"""Lead validation: normalise the text, accept the good rows, quarantine each bad row once.

Two Pandera models hold the rules. `_IncomingLeads` checks the normalised text of every
cell, so each failed check maps to one row and one reason code; `LeadSchema` checks
accepted, typed leads and backs the blocking asset check. Encoding damage and duplicates
are found in plain Python first, because they concern characters and rows, not values.
Every input row ends up in exactly one of the two outputs, so intake can prove it lost none.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.intake.reading import LEAD_COLUMNS, SOURCE_COLUMNS

SENIORITIES: tuple[str, ...] = ("C-level", "VP", "Director", "Manager", "Individual Contributor")
REGIONS: tuple[str, ...] = ("UK & Ireland", "DACH", "Nordics", "Benelux", "North America")
# Industry is open-ended; known names are only used to fix their case ('software' -> 'Software').
KNOWN_INDUSTRIES: tuple[str, ...] = (
    "Software",
    "Fintech",
    "Healthcare",
    "Manufacturing",
    "Logistics",
    "Retail",
    "Professional Services",
)
COMPANY_SIZE_MIN = 1
COMPANY_SIZE_MAX = 1_000_000
EMAIL_PATTERN = (
    r"^(?=.{6,254}$)[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)
# In priority order: a quarantined row's reason_code is its first problem in this order.
REASON_CODES: tuple[str, ...] = (
    "encoding",
    "missing_field",
    "invalid_email",
    "invalid_company_size",
    "invalid_value",
    "duplicate",
)
ACCEPTED_COLUMNS: tuple[str, ...] = ("lead_id", *SOURCE_COLUMNS, *LEAD_COLUMNS, "segment")
QUARANTINE_COLUMNS: tuple[str, ...] = (*SOURCE_COLUMNS, "column_name", "reason_code", "reason", "raw_record")
FAILURE_CASE_COLUMNS: tuple[str, ...] = ("schema_context", "column", "check", "check_number", "failure_case", "index")

_OPTIONAL = ("last_name", "note")
_ALLOWED = {"seniority": SENIORITIES, "region": REGIONS}
_CANONICAL = {
    column: {value.casefold(): value for value in values}
    for column, values in {"seniority": SENIORITIES, "region": REGIONS, "industry": KNOWN_INDUSTRIES}.items()
}
# Invisible characters that copy-paste leaves behind; they carry no meaning in a lead, so they go.
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
_DAMAGE = "\ufffd"  # the replacement character: an earlier decoder already lost the original
_MOJIBAKE_MARKERS = re.compile("Ã[\u0080-\u00bf]|Â[\u00a0-\u00bf]|â€")
_SIZE_TEXT = re.compile(r"^(\d{1,3}(?:,\d{3})+|\d+)(?:\.0+)?$")


class LeadSchema(pa.DataFrameModel):
    """Accepted leads as written to raw.leads (before partition_day, run_id, campaign_id, imported_at)."""

    lead_id: Series[str] = pa.Field(str_matches=r"^lead_[0-9a-f]{16}$", unique=True)
    source_file: Series[str] = pa.Field(str_length={"min_value": 1})
    source_row: Series[int] = pa.Field(ge=1, coerce=True)
    email: Series[str] = pa.Field(str_matches=EMAIL_PATTERN, unique=True)
    first_name: Series[str]
    last_name: Series[str] = pa.Field(nullable=True)
    company: Series[str]
    industry: Series[str]
    company_size: Series[int] = pa.Field(ge=COMPANY_SIZE_MIN, le=COMPANY_SIZE_MAX, coerce=True)
    role: Series[str]
    seniority: Series[str] = pa.Field(isin=SENIORITIES)
    region: Series[str] = pa.Field(isin=REGIONS)
    note: Series[str] = pa.Field(nullable=True)
    segment: Series[str] = pa.Field(str_length={"min_value": 1})

    class Config:
        unique = ["source_file", "source_row"]

    @pa.check("first_name", "last_name", "company", "industry", "role", name="clean_text", element_wise=True)
    def _clean_single_line(cls, value: str) -> bool:
        return value == _normalise_text(value) and value != "" and _text_problem(value, multiline=False) is None

    @pa.check("note", name="clean_text", element_wise=True)
    def _clean_note(cls, value: str) -> bool:
        return _text_problem(value, multiline=True) is None


class _IncomingLeads(pa.DataFrameModel):
    """Per-cell rules on normalised text, where an empty value arrives as null."""

    email: Series[str] = pa.Field(str_matches=EMAIL_PATTERN)
    first_name: Series[str]
    last_name: Series[str] = pa.Field(nullable=True)
    company: Series[str]
    industry: Series[str]
    company_size: Series[str]
    role: Series[str]
    seniority: Series[str] = pa.Field(isin=SENIORITIES)
    region: Series[str] = pa.Field(isin=REGIONS)
    note: Series[str] = pa.Field(nullable=True)

    @pa.check("company_size", name="company_size_in_range", element_wise=True)
    def _company_size_in_range(cls, value: str) -> bool:
        return parse_company_size(value) is not None


# A failed `_IncomingLeads` check is `missing_field` if the value is empty, else the column's code.
_COLUMN_CODES = {
    "email": "invalid_email",
    "company_size": "invalid_company_size",
    "seniority": "invalid_value",
    "region": "invalid_value",
}


class _Issue(NamedTuple):
    """One problem with one input row (`row` is its position in the batch)."""

    row: int
    column: str | None
    code: str
    reason: str


def validate_leads(raw: pd.DataFrame, spec: CampaignSpec, known_emails: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw lead rows into (accepted, quarantined); every input row lands in exactly one.

    `raw` is what `read_lead_file` returns (one or more files concatenated); `known_emails`
    are the addresses already in raw.leads. Within the batch the first otherwise-valid
    occurrence of an address wins, so a broken first copy does not cost the lead.
    """
    missing = [c for c in (*LEAD_COLUMNS, *SOURCE_COLUMNS) if c not in raw.columns]
    if missing:
        raise ValueError(f"lead frame lacks columns {missing}; read it with read_lead_file")
    raw = raw.reset_index(drop=True)
    if raw.duplicated(list(SOURCE_COLUMNS)).any():
        raise ValueError("lead frame repeats a (source_file, source_row); was a file read twice?")
    text = raw[list(LEAD_COLUMNS)].map(_as_text)
    normalised, issues = _normalise(text)
    issues += _schema_issues(normalised)
    flagged = {issue.row for issue in issues}
    issues += _duplicate_issues(normalised["email"], raw, flagged, known_emails)
    by_row: dict[int, list[_Issue]] = defaultdict(list)
    for issue in issues:
        by_row[issue.row].append(issue)
    accepted_rows = [row for row in range(len(raw)) if row not in by_row]
    return _accepted(normalised, raw, accepted_rows, spec), _quarantined(text, raw, by_row)


def lead_schema_failures(df: pd.DataFrame) -> pd.DataFrame:
    """Pandera failure cases of an accepted-leads frame (empty when it is valid), for the asset check."""
    try:
        LeadSchema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return exc.failure_cases.reset_index(drop=True)
    return pd.DataFrame(columns=list(FAILURE_CASE_COLUMNS))


def lead_id_for(email: str) -> str:
    """Stable id from the normalised address, so the same person gets the same id in every run."""
    return "lead_" + hashlib.sha256(email.encode("utf-8")).hexdigest()[:16]


def parse_company_size(value: str) -> int | None:
    """Headcount from export text ('250', '1,200', '250.0'), or None if it is not a plausible one."""
    match = _SIZE_TEXT.match(value.strip())
    if not match:
        return None
    size = int(match.group(1).replace(",", ""))
    return size if COMPANY_SIZE_MIN <= size <= COMPANY_SIZE_MAX else None


# --- normalisation and encoding damage ------------------------------------------------------------


def _as_text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _normalise_text(value: str, multiline: bool = False) -> str:
    """Zero-width characters removed, NFC, trimmed; single-line values get single spaces."""
    value = unicodedata.normalize("NFC", value.translate(_ZERO_WIDTH).replace("\u00a0", " "))
    return value.replace("\r\n", "\n").strip() if multiline else " ".join(value.split())


def _normalise_cell(column: str, value: str) -> str:
    value = _normalise_text(value, multiline=column == "note")
    if column == "email":
        return value.lower()
    return _CANONICAL.get(column, {}).get(value.casefold(), value)


def _text_problem(value: str, multiline: bool) -> str | None:
    """Why this text is damaged (mis-decoded, control or invisible characters), or None."""
    try:
        repaired = value.encode("cp1252").decode("utf-8")
    except UnicodeError:
        repaired = value
    if repaired != value:
        return f"looks like UTF-8 read as Windows-1252 (probably {_show(repaired)})"
    if _MOJIBAKE_MARKERS.search(value):
        return "looks like UTF-8 read as Windows-1252"
    allowed = "\n\r\t" if multiline else ""
    bad = next((c for c in value if c in _DAMAGE or unicodedata.category(c)[0] == "C" and c not in allowed), None)
    if bad is not None:
        return f"contains the control or invisible character U+{ord(bad):04X} {unicodedata.name(bad, '')}".rstrip()
    return None


def _normalise(text: pd.DataFrame) -> tuple[pd.DataFrame, list[_Issue]]:
    """Normalised copy of the text plus one `encoding` issue per damaged cell."""
    issues: list[_Issue] = []
    columns: dict[str, list[str]] = {}
    for column in LEAD_COLUMNS:
        cleaned = []
        for row, value in enumerate(text[column]):
            # Leading and trailing whitespace (tabs and newlines too) is padding; inside a value it is damage.
            problem = _text_problem(value.translate(_ZERO_WIDTH).strip(), multiline=column == "note")
            if problem:
                issues.append(_Issue(row, column, "encoding", f"{column} {_show(value)} {problem}"))
            cleaned.append(_normalise_cell(column, value))
        columns[column] = cleaned
    return pd.DataFrame(columns, dtype=object), issues


def _show(value: object, limit: int = 60) -> str:
    """A value quoted for a reason sentence, with invisible characters made visible."""
    text = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in str(value))
    return f"'{text if len(text) <= limit else text[: limit - 1] + '…'}'"


# --- rule checks and duplicates -------------------------------------------------------------------


def _schema_issues(normalised: pd.DataFrame) -> list[_Issue]:
    """Run `_IncomingLeads` lazily and turn each failure case into an issue on its row."""
    incoming = normalised.where(normalised != "", None)
    try:
        _IncomingLeads.validate(incoming, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        if cases["index"].isna().any():  # a frame-level failure means this module built a bad frame
            raise
        return [_issue_for(case) for case in cases.to_dict("records")]
    return []


def _issue_for(case: dict[str, object]) -> _Issue:
    column = str(case["column"])
    code = "missing_field" if case["check"] == "not_nullable" else _COLUMN_CODES[column]
    return _Issue(int(case["index"]), column, code, _reason(code, column, case["failure_case"]))


def _reason(code: str, column: str, value: object) -> str:
    if code == "missing_field":
        return f"{column} is empty but required"
    if code == "invalid_email":
        return f"email {_show(value)} is not a valid e-mail address"
    if code == "invalid_company_size":
        return f"company_size {_show(value)} is not a whole number of employees from {COMPANY_SIZE_MIN} to {COMPANY_SIZE_MAX:,}"
    return f"{column} {_show(value)} is not one of {', '.join(_ALLOWED[column])}"


def _duplicate_issues(emails: pd.Series, raw: pd.DataFrame, flagged: set[int], known_emails: set[str]) -> list[_Issue]:
    """Rows whose address was imported before, or repeats the address of the row that is kept."""
    known = {_normalise_cell("email", email) for email in known_emails}
    rows_by_email: dict[str, list[int]] = defaultdict(list)
    for row, email in enumerate(emails):
        if email:
            rows_by_email[email].append(row)
    issues: list[_Issue] = []
    for email, rows in rows_by_email.items():
        if email in known:
            issues += [_Issue(r, "email", "duplicate", f"email {_show(email)} was already imported") for r in rows]
            continue
        kept = next((r for r in rows if r not in flagged), rows[0])
        where = f"row {raw.at[kept, 'source_row']} of {Path(str(raw.at[kept, 'source_file'])).name}"
        issues += [_Issue(r, "email", "duplicate", f"email {_show(email)} repeats {where}") for r in rows if r != kept]
    return issues


# --- outputs --------------------------------------------------------------------------------------


def _accepted(normalised: pd.DataFrame, raw: pd.DataFrame, rows: list[int], spec: CampaignSpec) -> pd.DataFrame:
    leads = normalised.iloc[rows].reset_index(drop=True)
    leads["company_size"] = leads["company_size"].map(parse_company_size).astype("int64")
    for column in _OPTIONAL:
        leads[column] = leads[column].where(leads[column] != "", None)
    leads["lead_id"] = leads["email"].map(lead_id_for)
    leads["segment"] = [spec.segment_for(lead) for lead in leads.to_dict("records")]
    leads["source_file"] = raw["source_file"].iloc[rows].astype(str).to_numpy()
    leads["source_row"] = raw["source_row"].iloc[rows].astype("int64").to_numpy()
    return leads[list(ACCEPTED_COLUMNS)]


def _quarantined(text: pd.DataFrame, raw: pd.DataFrame, by_row: dict[int, list[_Issue]]) -> pd.DataFrame:
    order = {code: i for i, code in enumerate(REASON_CODES)}
    position = {column: i for i, column in enumerate(LEAD_COLUMNS)}
    records = []
    for row in sorted(by_row):
        issues = sorted(by_row[row], key=lambda i: (order[i.code], position.get(i.column or "", -1)))
        records.append(
            {
                "source_file": str(raw.at[row, "source_file"]),
                "source_row": int(raw.at[row, "source_row"]),
                "column_name": issues[0].column,
                "reason_code": issues[0].code,
                "reason": "; ".join(issue.reason for issue in issues),
                "raw_record": json.dumps(text.iloc[row].to_dict(), ensure_ascii=False),
            }
        )
    quarantined = pd.DataFrame(records, columns=list(QUARANTINE_COLUMNS))
    return quarantined.astype({"source_row": "int64"})
