"""Classify replies: rules first, then the cheap model, then the premium model when the cheap one is unsure.

Every reply ends in exactly one class of `REPLY_CLASSES`, or quarantined with a reason (empty
text, nothing of its own after the quotes, no usable model answer, the day's budget spent):
never dropped.

1. `text.clean_reply` keeps only the person's words (no quotes, signature or our own footer).
2. `rules.decide` settles the certain cases (bounces, automatic replies, unsubscribe requests).
3. The cheap model (stage `classify`) answers the rest with structured output (`ReplyAnswer`).
4. The premium model (stage `classify_escalate`) reads a reply again when the cheap answer's
   confidence is under `ClassifySettings.escalate_below` or the answer is unusable (an error, a
   refusal, a class outside the list, not JSON). Its answer decides; when it is unusable too, a
   usable cheap answer stands. Erring on the side of unsubscribe: when the cheap model read an
   unsubscribe request and the premium one a negative or not-now, the reply is an unsubscribe.

Both model stages go through the one `ModelGateway` (routing, budget, cache, ledger), in two
batched `complete_many` calls. `decided_by` says which step decided: `rule`, `cheap`, `premium`
(or `none` for a quarantined reply).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from factory_dagster.models.gateway import DEFERRED, CallRequest, CallResult, ModelGateway
from factory_dagster.models.prompts import CLASSIFY_PROMPT_VERSION, REPLY_TAG, build_messages
from factory_dagster.replies.rules import decide
from factory_dagster.replies.text import clean_reply
from factory_dagster.run_context import RunContext

REPLY_CLASSES: tuple[str, ...] = ("positive", "question", "not_now", "negative", "unsubscribe", "out_of_office", "auto_reply")
ReplyClass = Literal["positive", "question", "not_now", "negative", "unsubscribe", "out_of_office", "auto_reply"]
CLASSIFY_STAGE = "classify"
ESCALATE_STAGE = "classify_escalate"
# What each class means, as the brief gives it to the models.
CLASS_DEFINITIONS: dict[str, str] = {
    "positive": "interest in the offer: agrees to or proposes a call, a meeting or a demo, or hands us to the right colleague",
    "question": "asks for information (price, integrations, security, how it works, who we are) without committing",
    "not_now": "the timing is wrong: maybe later, another quarter, after a project, no budget this year",
    "negative": "not interested, already has a tool, not the right person, or hostile, without asking us to stop",
    "unsubscribe": "asks to stop the emails or to be removed from the list, in any words, language or tone",
    "out_of_office": "an absence notice: on leave, on holiday, out of the office until a date",
    "auto_reply": "any other automatic message: a bounce or delivery failure, a ticket receipt, left the company, unmonitored mailbox",
}
OUTPUT_COLUMNS: tuple[str, ...] = (
    "reply_id",
    "class",
    "confidence",
    "model",
    "decided_by",
    "rule",
    "reason",
    "quarantine_reason",
    "llm_call_ids",
    "cost_usd",
)
UNSUBSCRIBE_WINS_OVER = frozenset({"negative", "not_now"})


class ReplyAnswer(BaseModel):
    """What a classifying model must answer: one class of the list, its confidence 0..1 and a short reason."""

    model_config = ConfigDict(populate_by_name=True)

    label: ReplyClass = Field(alias="class")
    confidence: float = Field(ge=0.0, le=1.0)
    reason: str = Field(max_length=400)


@dataclass(frozen=True)
class ClassifySettings:
    """How replies are classified. `own_texts`: our fixed texts (e.g. the spec's unsubscribe footer) to ignore in a reply."""

    escalate_below: float = 0.75
    prompt_version: str = CLASSIFY_PROMPT_VERSION
    own_texts: tuple[str, ...] = ()
    max_reply_chars: int = 4000  # a reply's own words sent to a model at most (bounds the cost of a rambling one)

    def __post_init__(self) -> None:
        if not 0.0 <= self.escalate_below <= 1.0:
            raise ValueError(f"escalate_below must be between 0 and 1, got {self.escalate_below}")


def classify_brief() -> dict[str, Any]:
    """The brief every classifying call gets: the task, the classes and what they mean."""
    return {"task": "classify_reply", "classes": list(REPLY_CLASSES), "definitions": dict(CLASS_DEFINITIONS)}


def classify_request(stage: str, subject: str, text: str, settings: ClassifySettings, lead_id: str | None) -> CallRequest:
    """One model read of one reply: the brief, then the reply's subject and own words inside <reply> tags."""
    reply = {"subject": subject, "text": text[: settings.max_reply_chars]}  # no id: the same words get the same (cached) answer
    return CallRequest(
        stage=stage,
        prompt_version=settings.prompt_version,
        messages=build_messages(settings.prompt_version, classify_brief(), None, {REPLY_TAG: reply}),
        lead_id=lead_id,
        response_model=ReplyAnswer,
    )


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return str(value)


def _headers(value: Any) -> dict[str, str]:
    """Headers as given: a mapping, or raw `Name: value` lines (continuation lines joined)."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    headers: dict[str, str] = {}
    last = None
    for line in _text(value).splitlines():
        if line[:1] in (" ", "\t") and last:
            headers[last] += " " + line.strip()
        elif ":" in line:
            last, _, rest = line.partition(":")
            last = last.strip()
            headers[last] = rest.strip()
    return headers


def _answer(result: CallResult) -> ReplyAnswer | None:
    return result.parsed if result.status == "ok" and isinstance(result.parsed, ReplyAnswer) else None


def _why_unusable(result: CallResult) -> str:
    if result.status == DEFERRED:
        return "deferred: the day's model budget is spent"
    detail = f": {result.error[:160]}" if result.error else ""
    if result.status == "invalid":
        return f"{result.model} answered something that is not a class of the list{detail}"
    return f"{result.model} call {result.status}{detail}"


def _row(reply_id: str, **values: Any) -> dict[str, Any]:
    row = dict.fromkeys(OUTPUT_COLUMNS)
    row.update(reply_id=reply_id, llm_call_ids=[], cost_usd=0.0, decided_by="none", **values)
    return row


def _paid(row: dict[str, Any], result: CallResult) -> None:
    if result.call_id is not None:
        row["llm_call_ids"] = [*row["llm_call_ids"], result.call_id]
        row["cost_usd"] += result.cost_usd


def _decided(row: dict[str, Any], answer: ReplyAnswer, model: str, by: str, note: str = "") -> None:
    row.update({"class": answer.label, "confidence": float(answer.confidence), "model": model, "decided_by": by})
    row["reason"] = (answer.reason.strip() or "(no reason given)") + note


def _settle(row: dict[str, Any], cheap: CallResult, premium: CallResult | None) -> None:
    """The reply's class from its cheap and (if any) premium answer (see the module docstring)."""
    first, second = _answer(cheap), _answer(premium) if premium is not None else None
    if second is not None:
        if first is not None and first.label == "unsubscribe" and second.label in UNSUBSCRIBE_WINS_OVER:
            note = (
                f" (the premium model read {second.label}; the cheap model's unsubscribe stands: an unsubscribe is never missed)"
            )
            _decided(row, first, cheap.model, "cheap", note)
        else:
            _decided(row, second, premium.model, "premium")
        return
    if first is not None:
        note = ""
        if premium is not None:
            note = f" (escalated at confidence {first.confidence:.2f}, but {_why_unusable(premium)}; the cheap answer stands)"
        _decided(row, first, cheap.model, "cheap", note)
        return
    why = [_why_unusable(cheap)] + ([_why_unusable(premium)] if premium is not None else [])
    row["quarantine_reason"] = "no usable model answer: " + "; ".join(why)


def classify_replies(
    gateway: ModelGateway, run: RunContext, replies_frame: pd.DataFrame, settings: ClassifySettings | None = None
) -> pd.DataFrame:
    """One row per input reply, in order: its class, confidence, model, decided_by, rule and reason, or a quarantine reason.

    `replies_frame` needs `reply_id` and `text`; `subject`, `headers` (a mapping or raw header lines),
    `sender` and `lead_id` are used when present. The rows carry `run`'s ids and `classified_at`.
    """
    settings = settings or ClassifySettings()
    missing = [c for c in ("reply_id", "text") if c not in replies_frame.columns]
    if missing:
        raise ValueError(f"replies need column(s) {', '.join(missing)}; found {', '.join(map(str, replies_frame.columns))}")
    rows: list[dict[str, Any]] = []
    pending: list[tuple[int, CallRequest]] = []
    for record in replies_frame.to_dict("records"):
        reply_id, raw, subject = _text(record["reply_id"]), _text(record["text"]), _text(record.get("subject"))
        if not reply_id.strip():
            reply_id = "rpl_" + hashlib.sha256(f"{len(rows)}|{subject}|{raw}".encode()).hexdigest()[:16]
        rows.append(_row(reply_id))
        row = rows[-1]
        if not raw.strip():
            row["quarantine_reason"] = "empty reply: the text is blank"
            continue
        own = clean_reply(raw, settings.own_texts)
        decision = decide(subject, raw, own, _headers(record.get("headers")), _text(record.get("sender")) or None)
        if decision is not None:
            row.update({"class": decision.label, "confidence": 1.0, "model": "rules", "decided_by": "rule"})
            row.update(rule=decision.rule, reason=decision.reason)
            continue
        if not own:
            row["quarantine_reason"] = "empty reply: nothing but quoted text, a signature or our own footer"
            continue
        lead_id = _text(record.get("lead_id")) or None
        pending.append((len(rows) - 1, classify_request(CLASSIFY_STAGE, subject, own, settings, lead_id)))
    cheap = gateway.complete_many([request for _, request in pending])
    unsure = []
    for (index, request), result in zip(pending, cheap, strict=True):
        _paid(rows[index], result)
        answer = _answer(result)
        if result.status != DEFERRED and (answer is None or answer.confidence < settings.escalate_below):
            unsure.append((index, request))
    escalated = gateway.complete_many([replace(request, stage=ESCALATE_STAGE) for _, request in unsure])
    premium_of = dict(zip((index for index, _ in unsure), escalated, strict=True))
    for (index, _), result in zip(pending, cheap, strict=True):
        premium = premium_of.get(index)
        if premium is not None:
            _paid(rows[index], premium)
        _settle(rows[index], result, premium)
    frame = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
    frame["confidence"] = frame["confidence"].astype("float64")
    return run.stamp(frame, "classified_at")
