"""The content approval queue: a person approves, edits or rejects what the gate flagged or the audit failed.

Why a queue of flagged pieces only: the best content pipelines send a person what an automatic check
flagged, not everything; the rest is approved by the line itself (`auto_approve`, recorded as such so
that nobody mistakes it for a person's decision).

State is never updated in place. `raw.content_pieces` keeps the model's text and its verdicts, written
once (`store_pieces`); every decision is a row of `raw.content_reviews` (append-only, numbered per
variant by `seq`), and a variant's state is its latest decision:

- none: waiting, in the queue when the gate flagged it or the audit failed it, else for `auto_approve`;
- approve / auto_approve / edit: approved, with the latest edit's text (`approved_variants`);
- reject: rejected for good.

An edited text is re-checked by `content.gates.check_piece` against the piece's topic, brief source and
the texts published before its day; an edit that breaks a rule is refused with the violations. Approving
a flagged text as it stands re-checks it too: a rule a platform or the claims policy enforces (length,
banned phrase, a number no claim backs...) cannot be approved away, only fixed by an edit; a judgement
call (`OVERRIDABLE`, e.g. reading grade, near-duplicate, voice) may be, with a reason.

A decision on a variant that has moved on is refused and nothing is written: a rejected variant, a
published one (its day's `pieces.json` names it, or engagement was imported for it), or one whose text
changed since the person looked at it (`seen_sha256`, the hash `show` prints).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from factory_dagster.content.gates import GATE_VERDICTS, check_piece, hook_of
from factory_dagster.content.publish import JSON_NAME
from factory_dagster.content.spec import ContentSpec
from factory_dagster.gates.rules import Violation
from factory_dagster.review.analysis import text_diff, word_edit_distance
from factory_dagster.run_context import utcnow
from factory_dagster.warehouse.store import insert_rows, transaction

ACTIONS = ("approve", "edit", "reject", "auto_approve")
APPROVING = ("approve", "edit", "auto_approve")
AUDIT_VERDICTS = ("passed", "failed")
AUTO_ACTOR = "factory"
# Gate codes a person may approve a text with (a judgement, given a reason); every other code must be fixed by an edit.
OVERRIDABLE = frozenset(
    {"reading_grade", "near_duplicate", "voice_exclamation", "voice_all_caps", "voice_we", "voice_hashtags", "planted_text"}
    | {"injected_brief"}
)
# `injected_brief` is about the brief's outside source, not the text: an edit cannot remove it, a person's read can.
SOURCE_CODES = frozenset({"injected_brief"})
PIECE_REQUIRED = ("piece_id", "variant_id", "topic", "segment", "channel", "text", "gate_verdict", "model")


class ContentReviewError(ValueError):
    """A decision the review refuses (unknown variant, moved on, a broken rule); the message says which and why."""


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ContentItem:
    """One variant as a reviewer sees it: its effective text, verdicts and latest decision."""

    variant_id: str
    piece_id: str
    day: date
    content_id: str
    topic: str
    segment: str
    channel: str
    model_text: str
    text: str  # effective: the latest edit, else the model's text
    claim_ids: list[str]
    gate_verdict: str
    violation_codes: list[str]
    audit_verdict: str | None
    audit_reasons: str | None
    brief_source: str | None
    model: str
    last_action: str | None
    last_actor: str | None
    last_reason: str | None
    edits: int
    engaged: bool

    @property
    def sha256(self) -> str:
        return text_sha256(self.text)

    @property
    def needs_person(self) -> bool:
        """Flagged by the gate or failed by the audit: only a person may let it through."""
        return self.gate_verdict == "flagged" or self.audit_verdict == "failed"

    @property
    def approved(self) -> bool:
        return self.last_action in APPROVING

    @property
    def rejected(self) -> bool:
        return self.last_action == "reject"

    @property
    def status(self) -> str:
        if self.last_action is None:
            return "waiting for a person" if self.needs_person else "waiting for auto-approval"
        if self.rejected:
            return f"rejected by {self.last_actor}: {self.last_reason}"
        how = "auto-approved" if self.last_action == "auto_approve" else f"approved by {self.last_actor}"
        return how + (f", edited ({self.edits}x)" if self.edits else "")

    def why_flagged(self) -> str:
        parts = []
        if self.violation_codes:
            parts.append("gate: " + ", ".join(self.violation_codes))
        if self.audit_verdict == "failed":
            parts.append(f"audit failed: {self.audit_reasons or 'no reason given'}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Decision:
    """What a decision stored (or found already done: `already`)."""

    review_id: str
    variant_id: str
    action: str
    actor: str
    reason: str
    text_sha256: str
    edit_distance: float | None = None
    diff: str | None = None
    already: bool = False


# -- storing the day's pieces ----------------------------------------------------------------------


def _codes(value: object) -> list[str]:
    if _missing(value):
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]


_VERDICT_NAMES = {"passed": "passed", "pass": "passed", "failed": "failed", "fail": "failed"}


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA


def _text_or_none(value: object) -> str | None:
    return None if _missing(value) or not str(value).strip() else str(value)


def _audit_rows(audits: pd.DataFrame | None) -> dict[str, tuple[str, str | None]]:
    """variant_id -> (passed|failed, reasons) from an audit frame: `audit_verdict` (pass/fail, as content.stages
    writes it) or `verdict` or a boolean `passed`. A row without a verdict (deferred, unusable) is not an audit."""
    if audits is None or audits.empty:
        return {}
    found = {}
    for number, row in enumerate(audits.to_dict("records"), start=1):
        verdict = next((row[c] for c in ("audit_verdict", "verdict") if c in row and not _missing(row[c])), None)
        if verdict is None and "passed" in row and not _missing(row["passed"]):
            verdict = "passed" if bool(row["passed"]) else "failed"
        if verdict is None:
            continue
        if verdict not in _VERDICT_NAMES:
            raise ContentReviewError(f"audits row {number}, column audit_verdict: {verdict!r} is not pass or fail")
        reasons = row.get("reasons")
        found[str(row["variant_id"])] = (_VERDICT_NAMES[verdict], None if _missing(reasons) else str(reasons))
    return found


def store_pieces(
    con: duckdb.DuckDBPyConnection,
    pieces: pd.DataFrame,
    *,
    content_id: str,
    day: date,
    run_id: str,
    spec_version: str,
    audits: pd.DataFrame | None = None,
) -> int:
    """Write a day's variants (after the gate and the audit) to raw.content_pieces; the rows new to the table.

    `pieces` needs PIECE_REQUIRED; `hook` (else the first line), `claim_ids` or `claims_used`, `violation_codes` or
    `violations`, `brief_source`, `prompt_version` and `llm_call_id` or `call_id` are optional (content.stages'
    VARIANT_COLUMNS fit as they are; its audit frame goes in `audits`). A variant already stored is kept as it was
    (a re-run of the day never rewrites a text a person may have decided on). ContentReviewError names the row
    and column of a bad input; nothing is written then.
    """
    missing = [c for c in PIECE_REQUIRED if c not in pieces.columns]
    if missing:
        raise ContentReviewError(f"pieces lack column(s) {', '.join(missing)}; found {', '.join(map(str, pieces.columns))}")
    audit = _audit_rows(audits)
    rows, now = [], utcnow()
    for number, row in enumerate(pieces.to_dict("records"), start=1):
        for column in PIECE_REQUIRED:
            if row[column] is None or not str(row[column]).strip():
                raise ContentReviewError(f"pieces row {number}, column {column}: empty")
        if row["gate_verdict"] not in GATE_VERDICTS:
            raise ContentReviewError(f"pieces row {number}, column gate_verdict: {row['gate_verdict']!r} not in {GATE_VERDICTS}")
        verdict, reasons = audit.get(str(row["variant_id"]), (None, None))
        claims = row.get("claim_ids", row.get("claims_used"))
        codes = row.get("violation_codes", row.get("violations"))
        rows.append(
            {
                "variant_id": str(row["variant_id"]),
                "piece_id": str(row["piece_id"]),
                "day": day,
                "content_id": content_id,
                "spec_version": spec_version,
                "run_id": run_id,
                "topic": str(row["topic"]),
                "segment": str(row["segment"]),
                "channel": str(row["channel"]),
                "text": str(row["text"]),
                "hook": str(row.get("hook") or hook_of(str(row["text"]))),
                "claim_ids": _codes(claims),
                "gate_verdict": row["gate_verdict"],
                "violation_codes": _codes(codes),
                "audit_verdict": verdict,
                "audit_reasons": reasons,
                "brief_source": _text_or_none(row.get("brief_source")),
                "model": str(row["model"]),
                "prompt_version": _text_or_none(row.get("prompt_version")),
                "llm_call_id": _text_or_none(row.get("llm_call_id", row.get("call_id"))),
                "created_at": now,
            }
        )
    if not rows:
        return 0
    # One set-based insert, as the other stations write (row by row, DuckDB took about 2 ms a variant). A variant
    # twice in the frame keeps its first row, as a stored one keeps its stored row.
    frame = pd.DataFrame(rows).drop_duplicates("variant_id")
    with transaction(con):
        return insert_rows(con, "content_pieces", frame, skip_existing=True)


# -- reading the state -----------------------------------------------------------------------------

# CTEs ending in `decided`: each reviewed variant's latest decision and latest edit, by `seq` (one spelling for DuckDB
# and PostgreSQL, which has no arg_max).
LATEST_DECISIONS = """
    counted AS (
        SELECT variant_id, max(seq) AS last_seq, max(seq) FILTER (WHERE action = 'edit') AS edit_seq,
               (count(*) FILTER (WHERE action = 'edit'))::INTEGER AS edits
        FROM raw.content_reviews GROUP BY variant_id),
    decided AS (
        SELECT c.variant_id, l.action AS last_action, l.actor AS last_actor, l.reason AS last_reason, e.edited_text, c.edits
        FROM counted c JOIN raw.content_reviews l ON l.variant_id = c.variant_id AND l.seq = c.last_seq
        LEFT JOIN raw.content_reviews e ON e.variant_id = c.variant_id AND e.seq = c.edit_seq)"""

_ITEMS = f"""
    WITH {LATEST_DECISIONS}
    SELECT p.variant_id, p.piece_id, p.day, p.content_id, p.topic, p.segment, p.channel, p.text AS model_text,
           coalesce(d.edited_text, p.text) AS text, p.claim_ids, p.gate_verdict, p.violation_codes, p.audit_verdict,
           p.audit_reasons, p.brief_source, p.model, d.last_action, d.last_actor, d.last_reason, coalesce(d.edits, 0) AS edits,
           p.variant_id IN (SELECT variant_id FROM raw.content_engagement) AS engaged
    FROM raw.content_pieces p LEFT JOIN decided d USING (variant_id)
    WHERE p.content_id = $content AND ($day::DATE IS NULL OR p.day = $day) AND ($variant::VARCHAR IS NULL OR p.variant_id = $variant)"""


def variants(
    con: duckdb.DuckDBPyConnection, content_id: str, day: date | None = None, where: str = "TRUE", variant: str | None = None
) -> list[ContentItem]:
    """Every variant of the content spec (of `day`), by day, piece and variant, with its state."""
    params = {"content": content_id, "day": day, "variant": variant}
    cursor = con.execute(f"{_ITEMS} AND {where} ORDER BY p.day, p.piece_id, p.variant_id", params)
    names = [d[0] for d in cursor.description]
    return [ContentItem(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]


def queue(con: duckdb.DuckDBPyConnection, content_id: str, day: date | None = None) -> list[ContentItem]:
    """The variants waiting for a person: flagged by the gate or failed by the audit, and not decided on yet."""
    return variants(con, content_id, day, "d.last_action IS NULL AND (p.gate_verdict = 'flagged' OR p.audit_verdict = 'failed')")


def find_variant(con: duckdb.DuckDBPyConnection, content_id: str, variant_id: str) -> ContentItem:
    found = variants(con, content_id, variant=variant_id.strip())
    if not found:
        raise ContentReviewError(f"no variant of {content_id} has the id {variant_id!r}")
    return found[0]


# The approved variants of a day range with their effective text (the latest edit): what publishing takes
# and what the near-duplicate rule compares with.
_APPROVED = f"""
    WITH {LATEST_DECISIONS}
    SELECT p.piece_id, p.variant_id, p.channel, p.segment, p.topic, coalesce(d.edited_text, p.text) AS text,
           d.edited_text IS NOT NULL AS edited, d.last_action AS decision, p.content_id
    FROM raw.content_pieces p JOIN decided d USING (variant_id)
    WHERE p.day BETWEEN $first AND $last AND ($content::VARCHAR IS NULL OR p.content_id = $content)
      AND d.last_action IN ('approve', 'edit', 'auto_approve')"""


def approved_variants(con: duckdb.DuckDBPyConnection, day: date, content_id: str | None = None) -> pd.DataFrame:
    """The day's approved variants with their effective text (the latest edit), in `publish.publish_day`'s shape."""
    params = {"first": day, "last": day, "content": content_id}
    return con.execute(f"{_APPROVED} ORDER BY p.piece_id, p.variant_id", params).df()


def published_texts(con: duckdb.DuckDBPyConnection, content_id: str, before: date) -> list[str]:
    """The effective texts approved for days before `before`: what the near-duplicate rule compares with."""
    params = {"first": date.min, "last": before - timedelta(days=1), "content": content_id}
    return list(con.execute(f"{_APPROVED} ORDER BY p.day, p.variant_id", params).df()["text"])


def history(con: duckdb.DuckDBPyConnection, variant_id: str) -> list[dict]:
    """Every decision on a variant, oldest first."""
    cursor = con.execute(
        "SELECT seq, action, actor, reason, edit_distance, diff, reviewed_at FROM raw.content_reviews "
        "WHERE variant_id = ? ORDER BY seq",
        [variant_id],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


# -- decisions --------------------------------------------------------------------------------------


def is_published(item: ContentItem, published_dir: Path | None) -> bool:
    """Engagement came back for it, or its day's pieces.json names it."""
    if item.engaged:
        return True
    if published_dir is None:
        return False
    path = Path(published_dir) / item.day.isoformat() / JSON_NAME
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(isinstance(p, dict) and p.get("variant_id") == item.variant_id for p in document.get("pieces", []))


def _still_open(item: ContentItem, action: str, seen_sha256: str | None, published_dir: Path | None) -> None:
    """Refuse a decision on a variant that has moved on (nothing is written)."""
    if item.rejected:
        raise ContentReviewError(
            f"{item.variant_id} was rejected by {item.last_actor} ({item.last_reason}): too late to {action} it"
        )
    if is_published(item, published_dir):
        raise ContentReviewError(f"{item.variant_id} was already published: too late to {action} it")
    if seen_sha256 and not item.sha256.startswith(seen_sha256.strip().lower()):
        raise ContentReviewError(
            f"{item.variant_id} changed since you looked at it (text {item.sha256[:12]}, you saw {seen_sha256[:12]}): "
            f"look again (factory content show {item.variant_id})"
        )


def _actor(actor: str) -> str:
    if not actor or not actor.strip():
        raise ContentReviewError("every decision records who made it: give --actor (default: the OS user)")
    return actor.strip()


def _review_row(
    item: ContentItem,
    seq: int,
    action: str,
    actor: str,
    reason: str,
    text: str,
    edit: tuple[str, str, float] | None = None,
) -> dict[str, object]:
    """The raw.content_reviews row of decision number `seq` on the variant. `edit`: (new text, diff, distance)."""
    edited_text, diff, distance = edit if edit else (None, None, None)
    return {
        "review_id": "crv_" + hashlib.sha256(f"{item.variant_id}|{seq}".encode()).hexdigest()[:20],
        "variant_id": item.variant_id,
        "seq": seq,
        "content_id": item.content_id,
        "day": item.day,
        "action": action,
        "text_sha256": text_sha256(text),
        "edited_text": edited_text,
        "diff": diff,
        "edit_distance": distance,
        "actor": actor,
        "reason": reason,
        "reviewed_at": utcnow(),
    }


def _record(
    con: duckdb.DuckDBPyConnection,
    item: ContentItem,
    action: str,
    actor: str,
    reason: str,
    text: str,
    edit: tuple[str, str, float] | None = None,
) -> Decision:
    """Append one row to raw.content_reviews, numbered after the variant's last (call inside a transaction)."""
    seq = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM raw.content_reviews WHERE variant_id = ?", [item.variant_id])
    row = _review_row(item, seq.fetchall()[0][0], action, actor, reason, text, edit)
    con.execute(f"INSERT INTO raw.content_reviews ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})", list(row.values()))
    return Decision(
        row["review_id"], item.variant_id, action, actor, reason, row["text_sha256"], row["edit_distance"], row["diff"]
    )


def check_text(con: duckdb.DuckDBPyConnection, spec: ContentSpec, item: ContentItem, text: str) -> list[Violation]:
    """The content gate on `text` as this variant: its channel, topic, brief source, and what was published before its day."""
    topic = item.topic if item.topic in {t.name for t in spec.topics} else None
    return check_piece(text, item.channel, spec, published_texts(con, item.content_id, item.day), item.brief_source, topic)


def _rules(violations: Sequence[Violation]) -> str:
    return "; ".join(f"{v.code}: {v.detail}" for v in violations)


def approve(
    con: duckdb.DuckDBPyConnection,
    spec: ContentSpec,
    variant_id: str,
    actor: str,
    reason: str = "",
    *,
    seen_sha256: str | None = None,
    published_dir: Path | None = None,
) -> Decision:
    """Approve the variant's text as it stands. A flagged text is re-checked: a hard rule refuses it (edit it
    instead), a judgement code (OVERRIDABLE) needs a reason. Approving an approved text again stores nothing."""
    actor = _actor(actor)
    item = find_variant(con, spec.content_id, variant_id)
    _still_open(item, "approve", seen_sha256, published_dir)
    if item.approved:
        return Decision("", item.variant_id, "approve", actor, reason, item.sha256, already=True)
    broken = check_text(con, spec, item, item.text)
    hard = [v for v in broken if v.code not in OVERRIDABLE]
    if hard:
        raise ContentReviewError(
            f"{item.variant_id} breaks rules a person cannot approve away, so nothing was stored: {_rules(hard)}. "
            "Edit it (factory content edit) or reject it."
        )
    if broken and not reason.strip():
        raise ContentReviewError(f"approving {item.variant_id} over the gate needs a --reason; it flags {_rules(broken)}")
    with transaction(con):
        return _record(con, item, "approve", actor, reason.strip(), item.text)


def edit(
    con: duckdb.DuckDBPyConnection,
    spec: ContentSpec,
    variant_id: str,
    new_text: str,
    actor: str,
    reason: str = "",
    *,
    seen_sha256: str | None = None,
    published_dir: Path | None = None,
) -> Decision:
    """Replace the variant's text, which approves the new text. Refused (nothing stored) when the new text breaks a
    rule of the content gate, changes nothing, or the variant has moved on. Diff and distance are against the text
    that would have gone before this edit."""
    actor = _actor(actor)
    item = find_variant(con, spec.content_id, variant_id)
    _still_open(item, "edit", seen_sha256, published_dir)
    text = new_text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if text == item.text:
        raise ContentReviewError(f"the edit changes nothing in {item.variant_id}")
    broken = [v for v in check_text(con, spec, item, text) if v.code not in SOURCE_CODES]
    if broken:
        raise ContentReviewError(
            f"the edited text of {item.variant_id} breaks the content gate's rules, so it was not stored: {_rules(broken)}"
        )
    change = (text, text_diff(item.text, text), word_edit_distance(item.text, text))
    with transaction(con):
        return _record(con, item, "edit", actor, reason.strip(), text, change)


def reject(
    con: duckdb.DuckDBPyConnection,
    spec: ContentSpec,
    variant_id: str,
    actor: str,
    reason: str,
    *,
    seen_sha256: str | None = None,
    published_dir: Path | None = None,
) -> Decision:
    """Keep the variant from being published, for good; the reason is required (the loop reads it)."""
    actor = _actor(actor)
    if not reason or not reason.strip():
        raise ContentReviewError("a rejection needs a reason")
    item = find_variant(con, spec.content_id, variant_id)
    _still_open(item, "reject", seen_sha256, published_dir)
    with transaction(con):
        return _record(con, item, "reject", actor, reason.strip(), item.text)


def auto_approve(con: duckdb.DuckDBPyConnection, content_id: str, day: date, actor: str = AUTO_ACTOR) -> list[str]:
    """Approve, as the line, the day's variants nobody needs to see: gate passed, audit not failed, no decision yet.
    Recorded as `auto_approve` so the marts and the history tell them apart from a person's approval."""
    with transaction(con):
        waiting = variants(
            con,
            content_id,
            day,
            "d.last_action IS NULL AND p.gate_verdict = 'passed' AND coalesce(p.audit_verdict, 'passed') = 'passed'"
            " AND p.variant_id NOT IN (SELECT variant_id FROM raw.content_engagement)",
        )
        # No decision yet: each is the variant's first (seq 1), written in one insert.
        rows = [
            _review_row(
                item,
                1,
                "auto_approve",
                actor,
                "passed the gate and the audit"
                if item.audit_verdict == "passed"
                else "passed the gate (not sampled by the audit)",
                item.text,
            )
            for item in waiting
        ]
        insert_rows(con, "content_reviews", pd.DataFrame(rows))
    return [i.variant_id for i in waiting]


def when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M}"
