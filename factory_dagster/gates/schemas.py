"""Pandera schemas of the stored rows at the plan, draft and gate handoffs, built from the spec.

- `plan_schema`: `raw.plans` — known segments and angles, a hook, only the angle's own
  claims, one row per (segment, angle), and every segment of the spec covered.
- `draft_schema`: `raw.drafts` — ids present and unique, candidate and attempt numbers
  within the spec's drafting settings, the model call recorded, and each row either a
  parsed answer (subject and body) or a parse error.
- `message_schema`: `raw.messages` — it re-states the rules on the stored rows, so the
  blocking check after the gate catches anything that reached the table by any path.

Each `*_failures` function returns Pandera's failure cases (`FAILURE_CASE_COLUMNS`; empty
when the rows pass) with the row-level checks collapsed to one readable line per failing
row, and `failures_markdown` renders them for Dagster metadata.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.intake.validation import FAILURE_CASE_COLUMNS

# A subject longer than this is not a subject (the gate's own limit is spec.limits.max_subject_chars).
MIN_SUBJECT_BOUND = 500
SUBJECT_BOUND_FACTOR = 5

_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


def _contains(text: str) -> pa.Check:
    needle = " ".join(text.casefold().split())
    return pa.Check(
        lambda s: s.map(lambda body: needle in " ".join(str(body).casefold().split())),
        element_wise=False,
        name=f"contains {text[:40]!r}",
    )


def message_schema(spec: CampaignSpec) -> pa.DataFrameSchema:
    limits = spec.limits
    words = pa.Check(
        lambda s: s.str.split().str.len().between(limits.min_words, limits.max_words),
        name=f"between {limits.min_words} and {limits.max_words} words",
    )
    no_banned = pa.Check(
        lambda s: (
            ~s.str.casefold().str.contains("|".join(re.escape(p.casefold()) for p in spec.banned_phrases) or "(?!)", regex=True)
        ),
        name="no banned phrase",
    )
    return pa.DataFrameSchema(
        {
            "message_id": pa.Column(str, unique=True),
            "send_id": pa.Column(str, unique=True),
            "lead_id": pa.Column(str, unique=True),
            "to_email": pa.Column(str, pa.Check.str_matches(_EMAIL)),
            "subject": pa.Column(str, pa.Check.str_length(1, limits.max_subject_chars)),
            "body": pa.Column(
                str,
                [
                    words,
                    no_banned,
                    _contains(spec.required.call_to_action),
                    _contains(spec.required.unsubscribe_footer),
                    _contains(spec.sender.postal_address),
                    pa.Check(lambda s: ~s.str.contains(r"\{|\}|\[[A-Z]", regex=True), name="no unfilled placeholder"),
                ],
            ),
        },
        strict=False,
        coerce=False,
    )


def message_failures(messages: pd.DataFrame, spec: CampaignSpec) -> pd.DataFrame:
    """Pandera failure cases of the stored messages (empty when all pass)."""
    if messages.empty:
        return _no_failures()
    return _failures(message_schema(spec), messages, {})


# --- shared pieces ------------------------------------------------------------------------------


def _no_failures() -> pd.DataFrame:
    return pd.DataFrame(columns=list(FAILURE_CASE_COLUMNS))


def _present(value: Any) -> bool:
    """Not None/NaN (an array or list counts as present, whatever its content)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return True
    return not pd.isna(value)


def _show(value: Any, limit: int = 60) -> str:
    if not _present(value):
        return "missing"
    if isinstance(value, np.ndarray):
        value = value.tolist()
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _non_blank(what: str = "non-empty") -> pa.Check:
    return pa.Check(lambda s: s.astype(str).str.strip().str.len() > 0, name=what)


def _whole_numbers() -> pa.Check:
    return pa.Check(lambda s: pd.api.types.is_integer_dtype(s), name="whole numbers (an integer column)")


@dataclass(frozen=True)
class _RowCheck:
    """A DataFrame-level check and how to state one failing row of it in words."""

    columns: tuple[str, ...]
    describe: Callable[[pd.Series], str]
    label: str | None = None  # shown instead of Pandera's name for the check


def _failures(
    schema: pa.DataFrameSchema,
    frame: pd.DataFrame,
    row_checks: Mapping[str, _RowCheck],
    frame_checks: Mapping[str, Callable[[pd.DataFrame], tuple[str, str]]] | None = None,
) -> pd.DataFrame:
    """Validate lazily; the failure cases, with DataFrame-level checks made readable.

    Pandera reports a failing row of a DataFrame-level check as one line per cell of that
    row (and drops the null cells); these become one line per row, naming the columns the
    check is about and what is wrong with them. A failed whole-frame check (`frame_checks`:
    name -> function giving (column, reason)) gets its reason instead of `False`.
    """
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases.reset_index(drop=True)
    else:
        return _no_failures()
    cases = cases[[c for c in FAILURE_CASE_COLUMNS if c in cases.columns]]
    keep = ~cases["check"].astype(str).isin(row_checks)
    parts = [cases[keep]]
    for name, row_check in row_checks.items():
        mine = cases[cases["check"].astype(str) == name]
        if mine.empty:
            continue
        number = mine["check_number"].iloc[0]
        rows = []
        for index in dict.fromkeys(mine["index"].dropna()):
            row = frame.loc[[index]].iloc[0]
            rows.append(
                {
                    "schema_context": "DataFrameSchema",
                    "column": ", ".join(row_check.columns),
                    "check": row_check.label or name,
                    "check_number": number,
                    "failure_case": row_check.describe(row),
                    "index": index,
                }
            )
        parts.append(pd.DataFrame(rows, columns=list(FAILURE_CASE_COLUMNS)))
    out = pd.concat([p for p in parts if not p.empty], ignore_index=True) if any(not p.empty for p in parts) else _no_failures()
    out["failure_case"] = out["failure_case"].astype(object)
    for name, explain in (frame_checks or {}).items():
        hit = out["check"].astype(str) == name
        if hit.any():
            column, reason = explain(frame)
            out.loc[hit, "column"] = column
            out.loc[hit, "failure_case"] = reason
    return out


def failures_markdown(failures: pd.DataFrame, limit: int = 20) -> str:
    """The first `limit` failure cases as a Markdown table for Dagster metadata ("none" when empty)."""
    if failures is None or failures.empty:
        return "none"
    shown = failures.head(limit)
    table = pd.DataFrame(
        {
            "row": [("" if not _present(i) else str(i)) for i in shown.get("index", pd.Series([None] * len(shown)))],
            "column": [("" if not _present(c) else str(c)) for c in shown["column"]],
            "check": shown["check"].astype(str).to_list(),
            "failing value": [_cell(v) for v in shown["failure_case"]],
        }
    )
    text = table.to_markdown(index=False)
    if len(failures) > limit:
        text += f"\n\n… and {len(failures) - limit} more failure case(s), {len(failures)} in all."
    return text


def _cell(value: Any, limit: int = 80) -> str:
    """One table cell: plain text for strings, no line breaks or pipes, at most `limit` characters."""
    text = value if isinstance(value, str) and value.strip() else _show(value, limit)
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- raw.drafts ---------------------------------------------------------------------------------

DRAFT_SHAPE_CHECK = "subject and body, or a parse_error"


def _draft_shape(row: pd.Series) -> bool:
    parsed = _present(row.get("subject")) and _present(row.get("body"))
    return parsed != _present(row.get("parse_error"))


def _describe_draft_shape(row: pd.Series) -> str:
    missing = [c for c in ("subject", "body") if not _present(row.get(c))]
    if _present(row.get("parse_error")):
        return f"subject and body and also a parse_error ({_show(row.get('parse_error'))})"
    return f"{' and '.join(missing)} missing, and no parse_error saying why"


def subject_bound(spec: CampaignSpec) -> int:
    """The longest subject a stored draft may have: generous, it only stops garbage."""
    return max(MIN_SUBJECT_BOUND, SUBJECT_BOUND_FACTOR * spec.limits.max_subject_chars)


def draft_schema(spec: CampaignSpec) -> pa.DataFrameSchema:
    """Schema of `raw.drafts` rows (candidates, repairs and escalations) under the spec's drafting settings."""
    candidates = spec.drafting.candidates
    last_attempt = spec.drafting.max_repair_attempts + 1
    bound = subject_bound(spec)
    text = {"dtype": str, "nullable": False}
    return pa.DataFrameSchema(
        {
            "draft_id": pa.Column(**text, checks=_non_blank(), unique=True),
            "lead_id": pa.Column(**text, checks=_non_blank()),
            "arm_id": pa.Column(**text, checks=_non_blank()),
            "candidate_index": pa.Column(
                nullable=False,
                checks=[
                    _whole_numbers(),
                    pa.Check(
                        lambda s: (s >= 0) & (s < candidates),
                        name=f"from 0 to {candidates - 1} (spec.drafting.candidates = {candidates})",
                    ),
                ],
            ),
            "attempt": pa.Column(
                nullable=False,
                checks=[
                    _whole_numbers(),
                    pa.Check(
                        lambda s: (s >= 0) & (s <= last_attempt),
                        name=f"from 0 to {last_attempt} (max_repair_attempts + 1 escalation)",
                    ),
                ],
            ),
            "model": pa.Column(**text, checks=_non_blank()),
            "prompt_version": pa.Column(**text, checks=_non_blank()),
            "llm_call_id": pa.Column(**text, checks=_non_blank("the model call is recorded")),
            "subject": pa.Column(
                str, nullable=True, checks=pa.Check(lambda s: s.str.len() <= bound, name=f"at most {bound} characters")
            ),
            "body": pa.Column(str, nullable=True),
            "parse_error": pa.Column(str, nullable=True, checks=_non_blank("states the reason")),
        },
        checks=[pa.Check(_draft_shape, element_wise=True, name=DRAFT_SHAPE_CHECK)],
        strict=False,
        coerce=False,
    )


def draft_failures(drafts: pd.DataFrame, spec: CampaignSpec) -> pd.DataFrame:
    """Failure cases of stored draft rows (empty when they pass; no drafts pass too: all may be deferred)."""
    if drafts.empty:
        return _no_failures()
    return _failures(
        draft_schema(spec), drafts, {DRAFT_SHAPE_CHECK: _RowCheck(("subject", "body", "parse_error"), _describe_draft_shape)}
    )


# --- raw.plans ----------------------------------------------------------------------------------

PLAN_CLAIMS_CHECK = "only the angle's own claims"
PLAN_UNIQUE_CHECK = "multiple_fields_uniqueness"
PLAN_COVERAGE_CHECK = "every segment covered"


def _claims(value: Any) -> list[Any] | None:
    """The claims of a plan row: a list from the planner, an array when read back from DuckDB; None if neither."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    return None


def _claims_outside(row: pd.Series, allowed: Mapping[str, set[str]]) -> list[Any]:
    claims = _claims(row.get("claims")) or []
    own = allowed.get(row.get("angle"))
    return [] if own is None else [c for c in claims if c not in own]  # an unknown angle is the angle check's finding


def _missing_segments(plan: pd.DataFrame, spec: CampaignSpec) -> list[str]:
    planned = set(plan["segment"]) if "segment" in plan.columns else set()
    return [s.name for s in spec.segments if s.name not in planned]


def plan_schema(spec: CampaignSpec) -> pa.DataFrameSchema:
    """Schema of `raw.plans` rows: one row per (segment, angle) with a hook and the angle's own claims."""
    segments = [s.name for s in spec.segments]
    angles = [a.name for a in spec.angles]
    allowed = {a.name: set(a.claims) for a in spec.angles}
    return pa.DataFrameSchema(
        {
            "segment": pa.Column(str, pa.Check.isin(segments, error="one of the spec's segments"), nullable=False),
            "angle": pa.Column(str, pa.Check.isin(angles, error="one of the spec's angles"), nullable=False),
            "hook": pa.Column(str, _non_blank("non-empty hook"), nullable=False),
            "claims": pa.Column(
                nullable=False,
                checks=pa.Check(lambda c: bool(_claims(c)), element_wise=True, name="a non-empty list of claims"),
            ),
        },
        checks=[
            pa.Check(lambda row: not _claims_outside(row, allowed), element_wise=True, name=PLAN_CLAIMS_CHECK),
            pa.Check(lambda df: not _missing_segments(df, spec), name=PLAN_COVERAGE_CHECK),
        ],
        unique=["segment", "angle"],
        report_duplicates="all",
        strict=False,
        coerce=False,
    )


def plan_failures(plan: pd.DataFrame, spec: CampaignSpec) -> pd.DataFrame:
    """Failure cases of a stored plan (empty when it passes; an empty plan fails: it covers no segment)."""
    allowed = {a.name: set(a.claims) for a in spec.angles}

    def claims_reason(row: pd.Series) -> str:
        outside = _claims_outside(row, allowed)
        return f"angle {row.get('angle')!r} does not allow: " + "; ".join(_show(c) for c in outside)

    def duplicate_reason(row: pd.Series) -> str:
        return f"more than one row for segment {row.get('segment')!r}, angle {row.get('angle')!r}"

    def coverage_reason(frame: pd.DataFrame) -> tuple[str, str]:
        return "segment", "no row for segment(s): " + ", ".join(_missing_segments(frame, spec))

    return _failures(
        plan_schema(spec),
        plan,
        {
            PLAN_CLAIMS_CHECK: _RowCheck(("angle", "claims"), claims_reason),
            PLAN_UNIQUE_CHECK: _RowCheck(("segment", "angle"), duplicate_reason, "one row per (segment, angle)"),
        },
        {PLAN_COVERAGE_CHECK: coverage_reason},
    )
