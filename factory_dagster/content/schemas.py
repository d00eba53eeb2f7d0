"""Pandera schema of a day's content pieces, built from the content spec: the blocking check after the gate.

One row per variant: `piece_id`, `variant_id`, `channel`, `segment`, `text`, `hook`,
`claims_used` (a list of claim ids) and `gate_verdict` (`content.gates.GATE_VERDICTS`). Like
`gates.schemas.message_schema` it re-states the rules on the stored rows, so a row that reached
the table by any path is caught before publishing:

- ids present, `variant_id` unique; channel and segment the spec's; claims the spec's claims;
- the hook is the text's first non-blank line;
- a `passed` row keeps its channel's limits (length, hook, one line) and has no banned phrase;
- a piece has at most `variants_per_piece` variants, all on one channel and for one segment, and
  the day has at most `cadence.pieces_per_day` pieces.

`piece_failures` returns the failure cases in the outreach schemas' shape (one readable line per
failing row), for `gates.schemas.failures_markdown`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pandera.pandas as pa

from factory_dagster.content.gates import GATE_VERDICTS, hook_of
from factory_dagster.content.spec import ContentSpec
from factory_dagster.gates.rules import banned_pattern
from factory_dagster.gates.schemas import _claims, _failures, _no_failures, _non_blank, _RowCheck, _show

PIECE_COLUMNS = ("piece_id", "variant_id", "channel", "segment", "text", "hook", "claims_used", "gate_verdict")
HOOK_CHECK = "hook is the text's first line"
LIMITS_CHECK = "a passed piece keeps its channel's limits"
BANNED_CHECK = "a passed piece has no banned phrase"
CLAIMS_CHECK = "claims used are the spec's claims"
VARIANTS_CHECK = "variants per piece within spec.variants_per_piece"
ONE_CHANNEL_CHECK = "a piece's variants share one channel and segment"
CADENCE_CHECK = "pieces within spec.cadence.pieces_per_day"


def _passed(row: pd.Series) -> bool:
    return row.get("gate_verdict") == "passed"


def _limit_breaches(row: pd.Series, spec: ContentSpec) -> list[str]:
    """How a passed row breaks its channel's limits (none for other verdicts or unknown channels: other checks say so)."""
    text, channel = row.get("text"), row.get("channel")
    if not _passed(row) or not isinstance(text, str) or channel not in spec.channels.names:
        return []
    limits = spec.channel(channel)
    breaches = []
    if len(text) > limits.max_chars:
        breaches.append(f"{len(text)} characters, limit {limits.max_chars}")
    if limits.hook_limit is not None and len(hook_of(text)) > limits.hook_limit:
        breaches.append(f"hook of {len(hook_of(text))} characters, limit {limits.hook_limit}")
    if limits.single_line and "\n" in text.strip():
        breaches.append("more than one line")
    return breaches


def _banned_in(row: pd.Series, spec: ContentSpec) -> list[str]:
    text = row.get("text")
    if not _passed(row) or not isinstance(text, str):
        return []
    norm = " ".join(text.casefold().split())
    return [p for p in spec.banned_phrases if banned_pattern(p).search(norm)]


def _hook_matches(row: pd.Series) -> bool:
    text, hook = row.get("text"), row.get("hook")
    return not isinstance(text, str) or not isinstance(hook, str) or hook.strip() == hook_of(text)


def _unknown_claims(value: Any, known: set[str]) -> list[Any] | None:
    """Claim ids not in the spec; None when the value is not a list at all."""
    claims = _claims(value)
    return None if claims is None else [c for c in claims if c not in known]


def _overfull_pieces(frame: pd.DataFrame, spec: ContentSpec) -> dict[str, int]:
    counts = frame.groupby("piece_id").size() if "piece_id" in frame.columns else pd.Series(dtype=int)
    return {str(k): int(v) for k, v in counts.items() if v > spec.variants_per_piece}


def _mixed_pieces(frame: pd.DataFrame) -> list[str]:
    if not {"piece_id", "channel", "segment"} <= set(frame.columns):
        return []
    spread = frame.groupby("piece_id")[["channel", "segment"]].nunique()
    return sorted(str(p) for p in spread.index[(spread > 1).any(axis=1)])


def _piece_count(frame: pd.DataFrame) -> int:
    return frame["piece_id"].nunique() if "piece_id" in frame.columns else 0


def piece_schema(spec: ContentSpec) -> pa.DataFrameSchema:
    """Schema of a day's pieces table (one row per variant) under the content spec."""
    known = {c.id for c in spec.claims}
    text = {"dtype": str, "nullable": False}
    return pa.DataFrameSchema(
        {
            "piece_id": pa.Column(**text, checks=_non_blank()),
            "variant_id": pa.Column(**text, checks=_non_blank(), unique=True),
            "channel": pa.Column(**text, checks=pa.Check.isin(spec.channels.names, error="one of the spec's channels")),
            "segment": pa.Column(
                **text, checks=pa.Check.isin([s.name for s in spec.segments], error="one of the spec's segments")
            ),
            "text": pa.Column(**text, checks=_non_blank("non-empty text")),
            "hook": pa.Column(**text),
            "claims_used": pa.Column(
                nullable=False,
                checks=pa.Check(lambda v: _unknown_claims(v, known) == [], element_wise=True, name=CLAIMS_CHECK),
            ),
            "gate_verdict": pa.Column(**text, checks=pa.Check.isin(list(GATE_VERDICTS), error=f"one of {list(GATE_VERDICTS)}")),
        },
        checks=[
            pa.Check(_hook_matches, element_wise=True, name=HOOK_CHECK),
            pa.Check(lambda row: not _limit_breaches(row, spec), element_wise=True, name=LIMITS_CHECK),
            pa.Check(lambda row: not _banned_in(row, spec), element_wise=True, name=BANNED_CHECK),
            pa.Check(lambda df: not _overfull_pieces(df, spec), name=VARIANTS_CHECK),
            pa.Check(lambda df: not _mixed_pieces(df), name=ONE_CHANNEL_CHECK),
            pa.Check(lambda df: _piece_count(df) <= spec.cadence.pieces_per_day, name=CADENCE_CHECK),
        ],
        strict=False,
        coerce=False,
    )


def piece_failures(pieces: pd.DataFrame, spec: ContentSpec) -> pd.DataFrame:
    """Pandera failure cases of a day's pieces (empty when they pass; a day without pieces passes)."""
    if pieces.empty:
        return _no_failures()
    known = {c.id for c in spec.claims}

    def hook_reason(row: pd.Series) -> str:
        return f"hook {_show(row.get('hook'))} but the first line is {_show(hook_of(str(row.get('text'))))}"

    def limits_reason(row: pd.Series) -> str:
        return f"{row.get('channel')}: " + "; ".join(_limit_breaches(row, spec))

    def banned_reason(row: pd.Series) -> str:
        return "contains banned phrase(s) " + ", ".join(repr(p) for p in _banned_in(row, spec))

    def variants_reason(frame: pd.DataFrame) -> tuple[str, str]:
        over = ", ".join(f"{p}: {n}" for p, n in _overfull_pieces(frame, spec).items())
        return "piece_id", f"more than {spec.variants_per_piece} variants: {over}"

    def mixed_reason(frame: pd.DataFrame) -> tuple[str, str]:
        return "piece_id, channel, segment", "variants on more than one channel or segment: " + ", ".join(_mixed_pieces(frame))

    def cadence_reason(frame: pd.DataFrame) -> tuple[str, str]:
        return "piece_id", f"{_piece_count(frame)} pieces, the cadence allows {spec.cadence.pieces_per_day} a day"

    failures = _failures(
        piece_schema(spec),
        pieces,
        {
            HOOK_CHECK: _RowCheck(("text", "hook"), hook_reason),
            LIMITS_CHECK: _RowCheck(("channel", "text", "gate_verdict"), limits_reason),
            BANNED_CHECK: _RowCheck(("text", "gate_verdict"), banned_reason),
        },
        {VARIANTS_CHECK: variants_reason, ONE_CHANNEL_CHECK: mixed_reason, CADENCE_CHECK: cadence_reason},
    )
    claims_rows = failures["check"].astype(str) == CLAIMS_CHECK
    if claims_rows.any():  # name the unknown ids, not the whole list
        failures.loc[claims_rows, "failure_case"] = [
            f"unknown claim(s) {unknown}" if (unknown := _unknown_claims(v, known)) else f"not a list of claim ids: {_show(v)}"
            for v in failures.loc[claims_rows, "failure_case"]
        ]
    return failures
