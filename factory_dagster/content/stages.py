"""The content line's model stages: the day's briefs, each brief's variants, and the audit of what the gate flagged.

Plain functions over a `ModelGateway` (no Dagster), as the outreach stages are:

- `write_briefs`: the premium model (stage `content_brief`) writes `cadence.pieces_per_day` briefs.
  The calendar gives each slot its topic, rotating through the spec's topics day by day; the model
  picks the segment and channel, states the angle, picks the topic's claims and passes on guidance
  from earlier pieces (`guidance_lines`).
- `write_variants`: the cheap model (stage `content_variants`) writes `variants_per_piece` variants
  per brief; each goes through the content gate (`content.gates.check_piece`) and carries its verdict.
- `audit_pieces`: the premium judge (stage `content_audit`) scores every flagged variant and a
  seeded sample of the passed ones on truthfulness, voice and channel fit, and says pass or fail.

Every answer is validated (pydantic, then the spec's rules). An unusable answer is asked again
with a new seed (`ATTEMPTS` in all); what stays unusable is quarantined with its reason, never a
crash. A call the budget defers stops the stage: the work left waits for another day, with a note.
Calls are on the gateway's ledger; the caller writes it (`models.ledger.write_ledger`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, Field

from factory_dagster.content.gates import check_piece, claims_used, hook_of, verdict
from factory_dagster.content.spec import ContentSpec
from factory_dagster.improve.premium import parse_answer
from factory_dagster.models.gateway import DEFERRED, CallRequest, CallResult, ModelGateway
from factory_dagster.models.prompts import (
    CONTENT_AUDIT_PROMPT_VERSION,
    CONTENT_BRIEF_PROMPT_VERSION,
    CONTENT_VARIANTS_PROMPT_VERSION,
    GUIDANCE_TAG,
    PIECE_TAG,
    SOURCE_TAG,
    build_messages,
)

BRIEF_STAGE = "content_brief"
VARIANTS_STAGE = "content_variants"
AUDIT_STAGE = "content_audit"
ATTEMPTS = 2  # one answer and one re-ask with a new seed, as the planner gets
BUDGET_SPENT = "the daily model budget is spent"
AUDIT_RUBRIC = {
    "truthfulness": "every figure, quote and statement comes from the piece's claims; nothing invented or promised",
    "voice": "the brand's tone and rules; no banned phrase, hype or shouting",
    "channel_fit": "within the channel's limits (length, hook, one line) and written for that channel",
}
# How a feature of the cross-piece prior (content.prior.TERMS) reads in a brief's guidance.
TERM_WORDS = {
    "chars_per_10": "every 10 characters",
    "words": "every extra word",
    "has_number": "a number from the claims",
    "starts_with_number": "opening with a number",
    "is_question": "a question",
    "has_exclamation": "an exclamation mark",
    "has_quote": "a quote",
    "any_second_person": "talking to the reader (you)",
    "any_first_person": "talking about us (we)",
    "forward_reference": "pointing ahead (this, here is why)",
    "negative_words": "a negative word",
    "negative_share": "a negative tone",
    "positive_words": "a positive word",
    "reading_grade": "each reading grade",
    "any_all_caps": "words in capitals",
}
GUIDANCE_EFFECTS = 3  # the strongest feature effects a brief passes on
MIN_EFFECT_PCT = 1.0  # smaller effects are noise, not guidance

BRIEF_COLUMNS = (
    "piece_id", "day", "slot", "topic", "segment", "channel", "angle", "brief", "claim_ids", "guidance",
    "brief_source", "model", "call_id", "prompt_version",
)  # fmt: skip
VARIANT_COLUMNS = (
    "piece_id", "variant_id", "variant_index", "day", "topic", "segment", "channel", "text", "hook", "claims_used",
    "gate_verdict", "violations", "violation_details", "brief_source", "model", "call_id", "prompt_version",
)  # fmt: skip
AUDIT_COLUMNS = (
    "variant_id", "piece_id", "reason_audited", "audit_status", "audit_verdict", "truthfulness", "voice", "channel_fit",
    "reasons", "model", "call_id", "prompt_version",
)  # fmt: skip


# ---------------------------------------------------------------- answers the models must give


class BriefAnswer(BaseModel):
    topic: str
    segment: str
    channel: str
    angle: str = Field(min_length=1)
    claims: list[str]
    guidance: list[str] = []
    brief: str = Field(min_length=1)


class VariantText(BaseModel):
    text: str


class VariantsAnswer(BaseModel):
    variants: list[VariantText]


class AuditAnswer(BaseModel):
    scores: dict[str, int]
    verdict: Literal["pass", "fail"]
    reasons: str


# ---------------------------------------------------------------- asking until an answer is usable

Key = Hashable


@dataclass
class Asked:
    """What a stage's rounds of calls came to: each key accepted, refused (with why) or deferred."""

    accepted: dict[Key, tuple[Any, CallResult]] = field(default_factory=dict)
    problems: dict[Key, list[str]] = field(default_factory=dict)
    deferred: list[Key] = field(default_factory=list)


def ask_in_rounds(
    gateway: ModelGateway,
    keys: Sequence[Key],
    request_for: Callable[[Key, int, Asked], CallRequest],
    accept: Callable[[Key, Any, Asked], tuple[Any | None, list[str]]],
    shape: type[BaseModel],
    what: str,
    attempts: int = ATTEMPTS,
) -> Asked:
    """Ask for every key at once, then again (seed = attempt) for those whose answer was unusable.

    The contract of `improve.premium.ask_premium`, for many requests in one `complete_many` per
    round: `accept(key, parsed, asked)` sees the keys accepted so far (in key order) and returns
    (value, []) or (None, problems); a call the budget defers ends every round at once, and the
    keys left are `deferred`; after `attempts` rounds the keys still unusable keep their problems.
    """
    asked = Asked()
    pending = list(keys)
    for attempt in range(attempts):
        if not pending:
            break
        results = gateway.complete_many([request_for(key, attempt, asked) for key in pending])
        still = []
        for key, result in zip(pending, results, strict=True):
            if result.status == DEFERRED or asked.deferred:
                asked.deferred.append(key)
                asked.problems.pop(key, None)
                continue
            problems = asked.problems.setdefault(key, [])
            if result.status not in {"ok", "invalid"}:
                problems.append(
                    f"attempt {attempt + 1}: model call {result.status}" + (f": {result.error}" if result.error else "")
                )
                still.append(key)
                continue
            parsed, wrong = parse_answer(result.text, shape, what)
            if parsed is not None:
                value, wrong = accept(key, parsed, asked)
            if parsed is None or wrong:
                problems.append(f"attempt {attempt + 1} ({result.model}): " + "; ".join(wrong))
                still.append(key)
                continue
            asked.accepted[key] = (value, result)
            asked.problems.pop(key, None)
        pending = [] if asked.deferred else still
    return asked


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- briefs


def calendar(spec: ContentSpec, day: date) -> list[str]:
    """The topic of each of the day's slots: the spec's topics in turn, moving on by a day's pieces each day."""
    topics, n = spec.topics, spec.cadence.pieces_per_day
    return [topics[(day.toordinal() * n + slot) % len(topics)].name for slot in range(n)]


def piece_id(spec: ContentSpec, day: date, topic: str, segment: str, channel: str) -> str:
    """Content-addressed: the same line, day, topic, segment and channel is the same piece."""
    return "p_" + _digest(spec.content_id, day.isoformat(), topic, segment, channel)[:16]


def guidance_lines(guidance: Mapping[str, Any] | None) -> list[str]:
    """The cross-piece learning in words for a brief.

    `guidance` keys: `feature_effects` (term -> % change in clicks, as `content.prior.HeadlinePrior.describe`
    gives them; the strongest `GUIDANCE_EFFECTS` of at least `MIN_EFFECT_PCT` are kept) and `notes`
    (sentences from the marts, e.g. "questions cost clicks in segment controllers", passed on as written).
    """
    if not guidance:
        return []
    unknown = sorted(set(guidance) - {"feature_effects", "notes"})
    if unknown:
        raise ValueError(f"guidance has unknown key(s) {unknown}; expected feature_effects and notes")
    effects = dict(guidance.get("feature_effects") or {})
    strongest = sorted(
        ((term, float(pct)) for term, pct in effects.items() if abs(float(pct)) >= MIN_EFFECT_PCT),
        key=lambda item: (-abs(item[1]), item[0]),
    )[:GUIDANCE_EFFECTS]
    lines = [f"{TERM_WORDS.get(term, term)}: {pct:+.0f}% clicks across earlier pieces" for term, pct in strongest]
    notes = guidance.get("notes") or []
    if isinstance(notes, str):
        raise ValueError("guidance notes must be a list of sentences, not one string")
    return lines + [" ".join(str(n).split()) for n in notes if str(n).strip()]


def _claims_of(spec: ContentSpec, ids: Sequence[str]) -> list[dict[str, str]]:
    by_id = {c.id: c for c in spec.claims}
    return [{"id": i, "text": by_id[i].text, "source": by_id[i].source} for i in ids if i in by_id]


def _brief_request(
    spec: ContentSpec, day: date, topics: list[str], lines: list[str], sources: Sequence[str]
) -> Callable[[Key, int, Asked], CallRequest]:
    def request(slot: Key, attempt: int, asked: Asked) -> CallRequest:
        topic = spec.topic(topics[slot])
        planned = [
            {"topic": row["topic"], "segment": row["segment"], "channel": row["channel"]} for row, _ in asked.accepted.values()
        ]
        brief = {
            "task": "content_brief",
            "day": day.isoformat(),
            "slot": slot,
            "pieces_today": len(topics),
            "topic": {"name": topic.name, "angle": topic.angle, "claims": _claims_of(spec, topic.claims)},
            "brand": {"name": spec.brand.name, "tone": spec.brand.voice.tone, "rules": spec.brand.voice.rules},
            "segments": [{"name": s.name, "description": s.description} for s in spec.segments],
            "channels": [
                {"name": name, "max_chars": spec.channel(name).max_chars, "hook_max_chars": spec.channel(name).hook_limit}
                for name in spec.channels.names
            ],
            "planned_today": planned,
        }
        data = {GUIDANCE_TAG: {"lines": lines}}
        if slot < len(sources):  # outside text: only ever inside its data block
            data[SOURCE_TAG] = {"text": sources[slot]}
        messages = build_messages(CONTENT_BRIEF_PROMPT_VERSION, brief, data=data)
        return CallRequest(
            BRIEF_STAGE, CONTENT_BRIEF_PROMPT_VERSION, messages, seed=attempt, group=f"brief-{slot}", response_model=BriefAnswer
        )

    return request


def brief_problems(answer: BriefAnswer, spec: ContentSpec, topic: str) -> list[str]:
    """Why a brief cannot be used: another topic than the slot's, a segment, channel or claim the spec does not allow."""
    problems = []
    if answer.topic != topic:
        problems.append(f"topic {answer.topic!r} is not the slot's topic {topic!r}")
    if answer.segment not in {s.name for s in spec.segments}:
        problems.append(f"unknown segment {answer.segment!r}; the spec's are {[s.name for s in spec.segments]}")
    if answer.channel not in spec.channels.names:
        problems.append(f"unknown channel {answer.channel!r}; the spec's are {spec.channels.names}")
    allowed = set(spec.topic(topic).claims)
    if wrong := [c for c in answer.claims if c not in allowed]:
        problems.append(f"claim(s) {wrong} not among topic {topic!r}'s claims {sorted(allowed)}")
    return problems


def write_briefs(
    gateway: ModelGateway,
    spec: ContentSpec,
    day: date,
    guidance: Mapping[str, Any] | None = None,
    sources: Sequence[str] = (),
) -> tuple[pd.DataFrame, list[str]]:
    """The day's briefs by the premium model: (rows `BRIEF_COLUMNS`, notes on slots quarantined or deferred).

    `sources`: outside texts (`content.sources`), one per slot from the first; the brief sees each only as data,
    and its variants are gated against it (`brief_source`).
    """
    topics = calendar(spec, day)
    lines = guidance_lines(guidance)

    def accept(slot: Key, answer: BriefAnswer, asked: Asked) -> tuple[dict | None, list[str]]:
        topic = topics[slot]
        problems = brief_problems(answer, spec, topic)
        if problems:
            return None, problems
        pid = piece_id(spec, day, topic, answer.segment, answer.channel)
        if taken := [s for s, (row, _) in asked.accepted.items() if row["piece_id"] == pid]:
            return None, [f"repeats slot {taken[0]}'s piece ({topic}, {answer.segment}, {answer.channel})"]
        row = {
            "piece_id": pid,
            "day": day,
            "slot": slot,
            "topic": topic,
            "segment": answer.segment,
            "channel": answer.channel,
            "angle": answer.angle.strip(),
            "brief": answer.brief.strip(),
            "claim_ids": list(dict.fromkeys(answer.claims)),
            "guidance": [" ".join(g.split()) for g in answer.guidance if g.strip()],
            "brief_source": sources[slot] if slot < len(sources) else None,
        }
        return row, []

    asked = ask_in_rounds(
        gateway, range(len(topics)), _brief_request(spec, day, topics, lines, sources), accept, BriefAnswer, "a content brief"
    )
    rows = [
        {**row, "model": result.model, "call_id": result.call_id, "prompt_version": CONTENT_BRIEF_PROMPT_VERSION}
        for slot in sorted(asked.accepted)
        for row, result in [asked.accepted[slot]]
    ]
    notes = [
        f"brief slot {slot} ({topics[slot]}) quarantined after {ATTEMPTS} attempts: " + " | ".join(problems)
        for slot, problems in sorted(asked.problems.items())
    ]
    if asked.deferred:
        notes.append(f"{BUDGET_SPENT}: brief slot(s) {sorted(asked.deferred)} left for another day")
    return pd.DataFrame(rows, columns=list(BRIEF_COLUMNS)), notes


# ---------------------------------------------------------------- variants


def _variants_request(
    spec: ContentSpec, briefs: pd.DataFrame, versions: Mapping[str, str]
) -> Callable[[Key, int, Asked], CallRequest]:
    def request(index: Key, attempt: int, asked: Asked) -> CallRequest:
        row = briefs.loc[index]
        version = versions.get(str(row["piece_id"]), CONTENT_VARIANTS_PROMPT_VERSION)
        limits = spec.channel(row["channel"])
        segment = next(s for s in spec.segments if s.name == row["segment"])
        brief = {
            "task": "content_variants",
            "piece_id": row["piece_id"],
            "channel": row["channel"],
            "max_chars": limits.max_chars,
            "hook_max_chars": limits.hook_limit,
            "single_line": limits.single_line,
            "count": spec.variants_per_piece,
            "topic": row["topic"],
            "topic_angle": spec.topic(row["topic"]).angle,
            "angle": row["angle"],
            "segment": {"name": segment.name, "description": segment.description},
            "brief": row["brief"],
            "claims": _claims_of(spec, list(row["claim_ids"])),
            "banned_phrases": spec.banned_phrases,
            "voice": {"tone": spec.brand.voice.tone, "rules": spec.brand.voice.rules},
            "voice_checks": spec.brand.voice.checks.model_dump(),
            "reading_grade_max": spec.reading_grade_max,
            "language": spec.language,
        }
        messages = build_messages(version, brief, data={GUIDANCE_TAG: {"lines": list(row["guidance"])}})
        return CallRequest(
            VARIANTS_STAGE,
            version,
            messages,
            seed=attempt,
            group=str(row["piece_id"]),
            response_model=VariantsAnswer,
        )

    return request


def variants_problems(answer: VariantsAnswer, count: int) -> list[str]:
    """Why a variants answer cannot be used: the wrong number of variants, an empty or a repeated text."""
    texts = [v.text.strip() for v in answer.variants]
    problems = []
    if len(texts) != count:
        problems.append(f"{len(texts)} variants, the spec asks for {count}")
    if empty := [i for i, t in enumerate(texts) if not t]:
        problems.append(f"variant(s) {empty} have no text")
    if len(set(texts)) != len(texts):
        problems.append("two variants have the same text")
    return problems


def write_variants(
    gateway: ModelGateway,
    spec: ContentSpec,
    briefs: pd.DataFrame,
    published: Sequence[str] = (),
    prompt_versions: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Each brief's variants by the cheap model, gated: (rows `VARIANT_COLUMNS`, notes on pieces quarantined or deferred).

    `published`: texts already published (any day, any channel), for the gate's near-duplicate rule.
    `prompt_versions`: piece id -> the variants prompt it is written with (`content.edit_proposals`; default the
    hand-written one).
    """
    versions = dict(prompt_versions or {})
    briefs = briefs.reset_index(drop=True)
    if briefs.empty:
        return pd.DataFrame(columns=list(VARIANT_COLUMNS)), []

    def accept(index: Key, answer: VariantsAnswer, asked: Asked) -> tuple[list[str] | None, list[str]]:
        problems = variants_problems(answer, spec.variants_per_piece)
        return (None, problems) if problems else ([v.text.strip() for v in answer.variants], [])

    asked = ask_in_rounds(
        gateway, list(briefs.index), _variants_request(spec, briefs, versions), accept, VariantsAnswer, "a list of variants"
    )
    rows = []
    for index in sorted(asked.accepted):
        texts, result = asked.accepted[index]
        brief = briefs.loc[index]
        for number, text in enumerate(texts):
            source = brief.get("brief_source")
            source = source if isinstance(source, str) and source else None
            found = check_piece(text, brief["channel"], spec, published=published, brief_source=source, topic=brief["topic"])
            rows.append(
                {
                    "piece_id": brief["piece_id"],
                    "variant_id": "v_" + _digest(brief["piece_id"], text)[:16],
                    "variant_index": number,
                    "day": brief["day"],
                    "topic": brief["topic"],
                    "segment": brief["segment"],
                    "channel": brief["channel"],
                    "text": text,
                    "hook": hook_of(text),
                    "claims_used": claims_used(text, spec, brief["topic"]),
                    "gate_verdict": verdict(found),
                    "violations": sorted({v.code for v in found}),
                    "violation_details": [f"{v.code}: {v.detail}" for v in found],
                    "brief_source": source,
                    "model": result.model,
                    "call_id": result.call_id,
                    "prompt_version": versions.get(str(brief["piece_id"]), CONTENT_VARIANTS_PROMPT_VERSION),
                }
            )
    notes = [
        f"piece {briefs.loc[i, 'piece_id']} ({briefs.loc[i, 'topic']}, {briefs.loc[i, 'channel']}) quarantined after "
        f"{ATTEMPTS} attempts: " + " | ".join(problems)
        for i, problems in sorted(asked.problems.items())
    ]
    if asked.deferred:
        notes.append(f"{BUDGET_SPENT}: piece(s) {[briefs.loc[i, 'piece_id'] for i in asked.deferred]} left for another day")
    return pd.DataFrame(rows, columns=list(VARIANT_COLUMNS)), notes


# ---------------------------------------------------------------- audit


def in_sample(variant_id: str, sample_rate: float, seed_key: str) -> bool:
    """Whether a passed variant is in the audit's sample: a seeded draw per variant, the same on every re-run."""
    return int(_digest(seed_key, variant_id)[:15], 16) / 16**15 < sample_rate


def _audit_request(spec: ContentSpec, pieces: pd.DataFrame) -> Callable[[Key, int, Asked], CallRequest]:
    def request(index: Key, attempt: int, asked: Asked) -> CallRequest:
        row = pieces.loc[index]
        limits = spec.channel(row["channel"])
        claims = spec.claims_for(row["topic"]) if "topic" in pieces.columns else spec.claims
        brief = {
            "task": "content_audit",
            "rubric": AUDIT_RUBRIC,
            "channel": row["channel"],
            "max_chars": limits.max_chars,
            "hook_max_chars": limits.hook_limit,
            "single_line": limits.single_line,
            "brand": spec.brand.name,
            "website": spec.brand.website,
            "claims": [{"id": c.id, "text": c.text, "source": c.source} for c in claims],
            "banned_phrases": spec.banned_phrases,
            "voice": {"tone": spec.brand.voice.tone, "rules": spec.brand.voice.rules},
            "voice_checks": spec.brand.voice.checks.model_dump(),
        }
        messages = build_messages(CONTENT_AUDIT_PROMPT_VERSION, brief, data={PIECE_TAG: {"text": str(row["text"])}})
        return CallRequest(
            AUDIT_STAGE,
            CONTENT_AUDIT_PROMPT_VERSION,
            messages,
            seed=attempt,
            group=str(row["variant_id"]),
            response_model=AuditAnswer,
        )

    return request


def audit_problems(answer: AuditAnswer) -> list[str]:
    """Why an audit cannot be used: a rubric criterion without a score, or a score outside 1..5."""
    problems = [f"no score for {c!r}" for c in AUDIT_RUBRIC if c not in answer.scores]
    problems += [
        f"score {s} for {c!r} is outside 1..5" for c, s in answer.scores.items() if c in AUDIT_RUBRIC and not 1 <= s <= 5
    ]
    return problems


def audit_pieces(
    gateway: ModelGateway, spec: ContentSpec, pieces: pd.DataFrame, sample_rate: float, seed_key: str
) -> pd.DataFrame:
    """The premium judge's audit of every flagged variant and a seeded sample of the passed ones.

    One row per variant chosen (`AUDIT_COLUMNS`): `audit_status` is `audited` (scores, verdict and
    reasons), `unusable` (no usable answer in `ATTEMPTS`: `reasons` says why) or `deferred` (the
    budget was spent: audit it another day). Variants neither flagged nor sampled get no row.
    """
    if not 0 <= sample_rate <= 1:
        raise ValueError(f"sample_rate must be between 0 and 1, got {sample_rate}")
    missing = sorted({"piece_id", "variant_id", "channel", "text", "gate_verdict"} - set(pieces.columns))
    if missing:
        raise ValueError(f"pieces lack column(s) {missing}")
    flagged = pieces["gate_verdict"] == "flagged"
    sampled = (pieces["gate_verdict"] == "passed") & pieces["variant_id"].map(lambda v: in_sample(str(v), sample_rate, seed_key))
    chosen = pieces[flagged | sampled].reset_index(drop=True)
    if chosen.empty:
        return pd.DataFrame(columns=list(AUDIT_COLUMNS))

    def accept(index: Key, answer: AuditAnswer, asked: Asked) -> tuple[AuditAnswer | None, list[str]]:
        problems = audit_problems(answer)
        return (None, problems) if problems else (answer, [])

    asked = ask_in_rounds(gateway, list(chosen.index), _audit_request(spec, chosen), accept, AuditAnswer, "an audit")
    rows = []
    for index, row in chosen.iterrows():
        base = {
            "variant_id": row["variant_id"],
            "piece_id": row["piece_id"],
            "reason_audited": "flagged" if row["gate_verdict"] == "flagged" else "sample",
            "prompt_version": CONTENT_AUDIT_PROMPT_VERSION,
        }
        if index in asked.accepted:
            answer, result = asked.accepted[index]
            scores = {c: answer.scores[c] for c in AUDIT_RUBRIC}
            rows.append(
                {
                    **base,
                    **scores,
                    "audit_status": "audited",
                    "audit_verdict": answer.verdict,
                    "reasons": answer.reasons,
                    "model": result.model,
                    "call_id": result.call_id,
                }
            )
        elif index in asked.deferred:
            rows.append({**base, "audit_status": "deferred", "reasons": BUDGET_SPENT})
        else:
            rows.append({**base, "audit_status": "unusable", "reasons": " | ".join(asked.problems.get(index, []))})
    frame = pd.DataFrame(rows, columns=list(AUDIT_COLUMNS))
    return frame.astype({c: "Int64" for c in AUDIT_RUBRIC})
