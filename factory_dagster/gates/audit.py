"""The sampled premium audit (LLM-as-judge): the last gate before sending.

Each day a deterministic sample of the messages that passed the rule gates is scored
by the premium judge against the spec's rubric (1 = bad ... 5 = excellent). An audit
passes when every rubric score reaches `audit.pass_score`. A judge that gives no
usable verdict (error, refusal, an answer that does not cover the rubric) or is
deferred by the budget counts as a failed audit: better to hold than to send
unaudited. When the sample's failure rate exceeds `audit.max_failure_rate`,
`hold_reason` says why the day's sends must wait.

The message travels to the judge as JSON inside <message> tags, after the lead's
<lead> block; "<" is escaped in it, so text in a message cannot close the tag or
open a new one.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping
from datetime import date
from typing import Annotated, Any

import pandas as pd
from pydantic import BaseModel, BeforeValidator, Field, ValidationError

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.models.gateway import DEFERRED, CallRequest, CallResult, ModelGateway
from factory_dagster.models.prompts import build_messages

AUDIT_PROMPT_VERSION = "audit-v1"
AUDIT_STAGE = "audit"
# What the judge learns about the reader: enough to check the greeting, the company and the fit.
AUDIT_LEAD_FIELDS = ("first_name", "last_name", "company", "role", "industry", "segment")
# `raw.audits` without the ids RunContext.stamp adds (run_id, partition_day, campaign_id, created_at).
AUDIT_COLUMNS = (
    "audit_id",
    "message_id",
    "lead_id",
    "model",
    "prompt_version",
    "llm_call_id",
    "status",
    "scores",
    "passed",
    "reasons",
)


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a score is an integer from 1 to 5, not true/false")
    return value


Score = Annotated[int, Field(ge=1, le=5), BeforeValidator(_not_a_bool)]


class AuditAnswer(BaseModel):
    """What the judge must answer: a 1-5 score per rubric criterion and the reasons."""

    scores: dict[str, Score]
    reasons: str


def _criterion_key(name: str) -> str:
    return " ".join(name.casefold().replace("_", " ").split())


def rubric_scores(answer: AuditAnswer, rubric: Mapping[str, str]) -> dict[str, int]:
    """The answer's scores for the rubric's criteria, under the rubric's names (case and `_` ignored);
    criteria the rubric does not have are dropped."""
    given = {_criterion_key(k): v for k, v in answer.scores.items()}
    return {c: int(given[_criterion_key(c)]) for c in rubric if _criterion_key(c) in given}


def rubric_problems(answer: AuditAnswer, rubric: Mapping[str, str]) -> list[str]:
    """Why the answer is not a full verdict on this rubric (empty list: it is one)."""
    problems = []
    scores = rubric_scores(answer, rubric)
    missing = [c for c in rubric if c not in scores]
    if missing:
        problems.append(f"no score for {', '.join(missing)}")
    for criterion, score in scores.items():
        if isinstance(score, bool) or not 1 <= score <= 5:
            problems.append(f"{criterion} score {score!r} is outside 1-5")
    return problems


# -- sampling -------------------------------------------------------------------------------


def sample_size(n: int, spec: CampaignSpec) -> int:
    """max(min_sample, ceil(sample_rate x n)), and never more than there are."""
    rate_share = math.ceil(round(spec.audit.sample_rate * n, 9))
    return min(n, max(spec.audit.min_sample, rate_share))


# A generous audit prompt: the brief, the lead and one message (about 8,000 characters).
AUDIT_PROMPT_TOKENS_UPPER = 2700


def audit_reserve_usd(gateway: ModelGateway, spec: CampaignSpec) -> float:
    """What the day's audit can cost at most: the stages before it leave this much of the budget.

    The sample is sized for a full day (the daily send cap), each call at its worst case, so the
    audit can always run: an unaudited day would have to be held.
    """
    return sample_size(spec.limits.daily_send_cap, spec) * gateway.stage_worst_case_usd(AUDIT_STAGE, AUDIT_PROMPT_TOKENS_UPPER)


def _draw_key(campaign_id: str, day: date, message_id: str) -> str:
    return hashlib.sha256(f"audit-sample|{campaign_id}|{day}|{message_id}".encode()).hexdigest()


def audit_sample(messages: pd.DataFrame, spec: CampaignSpec, day: date) -> pd.DataFrame:
    """The day's messages to audit, in their original order.

    Each message is ranked by a hash of (campaign, day, message_id) and the first
    `sample_size` are taken: the same day always draws the same sample, whatever the
    row order, and a message's chance does not depend on the others.
    """
    size = sample_size(len(messages), spec)
    if size == 0:
        return messages.iloc[0:0].copy()
    keys = [_draw_key(spec.campaign_id, day, str(m)) for m in messages["message_id"]]
    chosen = sorted(sorted(range(len(keys)), key=keys.__getitem__)[:size])
    return messages.iloc[chosen].reset_index(drop=True)


# -- requests -------------------------------------------------------------------------------


def _field(row: Any, name: str) -> str:
    """A row's field as text ('' when absent or missing); rows may be dicts, Series or namedtuples."""
    value = row.get(name) if hasattr(row, "get") else getattr(row, name, None)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def audit_brief(spec: CampaignSpec, message_row: Any, lead_row: Any) -> dict[str, Any]:
    """Everything the judge needs from the spec: the rubric, the angle's claims and the rules of the voice."""
    angle_name = _field(message_row, "angle")
    angle = next((a for a in spec.angles if a.name == angle_name), None)
    segment_name = _field(lead_row, "segment")
    segment = next((s for s in spec.segments if s.name == segment_name), None)
    return {
        "task": "audit",
        "language": spec.language,
        "rubric": dict(spec.audit.rubric),
        "scale": "1 (bad) to 5 (excellent), an integer per criterion",
        "offer": spec.offer,
        "audience": spec.audience,
        "segment": segment_name,
        "segment_description": segment.description if segment else "",
        "angle": angle_name,
        "hypothesis": angle.hypothesis if angle else "",
        "claims": list(angle.claims) if angle else [],
        "banned_phrases": list(spec.banned_phrases),
        "call_to_action": spec.required.call_to_action,
        "unsubscribe_footer": spec.required.unsubscribe_footer,
        "sender": {
            "name": spec.sender.name,
            "company": spec.sender.company,
            "email": spec.sender.email,
            "postal_address": spec.sender.postal_address,
        },
        "tone": spec.voice.tone,
        "voice_rules": list(spec.voice.rules),
        "min_words": spec.limits.min_words,
        "max_words": spec.limits.max_words,
        "max_subject_chars": spec.limits.max_subject_chars,
    }


def message_block(message_row: Any) -> str:
    """The message as delimited JSON data; '<' is escaped so its text cannot close or open a tag."""
    payload = {"subject": _field(message_row, "subject"), "body": _field(message_row, "body")}
    data = json.dumps(payload, ensure_ascii=False, sort_keys=True).replace("<", "\\u003c")
    return "\n<message>\n" + data + "\n</message>"


def audit_request(spec: CampaignSpec, message_row: Any, lead_row: Any) -> CallRequest:
    """One judge call: the audit prompt, the brief, the lead in <lead> tags and the message in <message> tags."""
    lead = {name: _field(lead_row, name) for name in AUDIT_LEAD_FIELDS}
    messages = build_messages(AUDIT_PROMPT_VERSION, audit_brief(spec, message_row, lead_row), lead)
    messages = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + message_block(message_row)}]
    return CallRequest(
        stage=AUDIT_STAGE,
        prompt_version=AUDIT_PROMPT_VERSION,
        messages=messages,
        lead_id=_field(lead_row, "lead_id") or _field(message_row, "lead_id"),
        group=None,
        response_model=AuditAnswer,
    )


# -- verdicts -------------------------------------------------------------------------------


def audit_id(campaign_id: str, message_id: str, day: date) -> str:
    return "aud_" + hashlib.sha256(f"{campaign_id}|{message_id}|{day}".encode()).hexdigest()[:20]


def _call_errors(gateway: ModelGateway) -> dict[str, str]:
    ledger = gateway.ledger()
    if ledger.empty or "error" not in ledger:
        return {}
    failed = ledger[ledger.error.notna()]
    return dict(zip(failed.call_id, failed.error.astype(str)))


def _validation_problem(text: str) -> str | None:
    try:
        AuditAnswer.model_validate_json(text)
    except ValidationError as exc:
        problem = exc.errors()[0]
        return f"{problem['msg']} at {'.'.join(map(str, problem['loc'])) or 'top level'}"
    return None


def _verdict(spec: CampaignSpec, result: CallResult, call_error: str | None) -> tuple[str, dict[str, int], bool, str]:
    """(status, scores, passed, reasons) of one judge call."""
    audit = spec.audit
    if result.status == DEFERRED:
        return DEFERRED, {}, False, "Not audited: the day's model budget is spent (deferred); counted as a failed audit."
    answer = result.parsed if isinstance(result.parsed, AuditAnswer) else None
    if result.status == "ok" and answer is None:  # an answer not parsed on the way (should not happen)
        answer = None if _validation_problem(result.text) else AuditAnswer.model_validate_json(result.text)
    if result.status != "ok" or answer is None:
        status = "invalid" if result.status == "ok" else result.status
        detail = call_error or (_validation_problem(result.text) if status == "invalid" else None)
        because = f" ({detail[:200]})" if detail else ""
        return (
            status,
            {},
            False,
            f"The judge gave no verdict: call {status}{because}. Counted as a failed audit: better to hold than to send unaudited.",
        )
    scores = rubric_scores(answer, audit.rubric)
    problems = rubric_problems(answer, audit.rubric)
    if problems:
        return (
            "invalid",
            {c: s for c, s in scores.items() if 1 <= s <= 5},
            False,
            f"The judge's answer is not a full verdict ({'; '.join(problems)}); counted as a failed audit.",
        )
    reasons = answer.reasons.strip() or "(the judge gave no reasons)"
    low = [f"{c} {s}" for c, s in scores.items() if s < audit.pass_score]
    if low:
        reasons = f"Below the pass score {audit.pass_score}: {', '.join(low)}. {reasons}"
    return "ok", scores, not low, reasons


def audit_messages(gateway: ModelGateway, spec: CampaignSpec, sample: pd.DataFrame) -> pd.DataFrame:
    """Judge every message of the sample; one row per message, shaped as `raw.audits` without the run ids."""
    if sample.empty:
        return pd.DataFrame(columns=list(AUDIT_COLUMNS))
    rows = sample.to_dict("records")
    requests = [audit_request(spec, row, row) for row in rows]
    results = gateway.complete_many(requests)
    errors = _call_errors(gateway) if any(r.status not in {"ok", DEFERRED} for r in results) else {}
    day, campaign_id = gateway.run.partition_day, gateway.run.campaign_id
    audits = []
    for row, result in zip(rows, results, strict=True):
        status, scores, passed, reasons = _verdict(spec, result, errors.get(result.call_id or ""))
        audits.append(
            {
                "audit_id": audit_id(campaign_id, str(row["message_id"]), day),
                "message_id": row["message_id"],
                "lead_id": row["lead_id"],
                "model": result.model,
                "prompt_version": AUDIT_PROMPT_VERSION,
                "llm_call_id": result.call_id,
                "status": status,
                "scores": scores,
                "passed": passed,
                "reasons": reasons,
            }
        )
    return pd.DataFrame(audits, columns=list(AUDIT_COLUMNS))


# -- the hold -------------------------------------------------------------------------------


def _as_scores(value: Any) -> dict[str, int]:
    """A scores cell as a dict (DuckDB may hand a MAP back as {'key': [...], 'value': [...]})."""
    if isinstance(value, Mapping):
        if set(value) == {"key", "value"} and isinstance(value["key"], list | tuple):
            return dict(zip(value["key"], value["value"]))
        return dict(value)
    if isinstance(value, list | tuple):
        return dict(value)
    return {}


def hold_reason(audits: pd.DataFrame, spec: CampaignSpec) -> str | None:
    """Why the day's sends must be held (the sample's failure rate is above the limit), else None."""
    total = len(audits)
    if total == 0:
        return None
    passed = audits["passed"].fillna(False).astype(bool)
    failed = int((~passed).sum())
    rate, limit = failed / total, spec.audit.max_failure_rate
    if rate <= limit + 1e-12:
        return None
    pass_score = spec.audit.pass_score
    order = {c: i for i, c in enumerate(spec.audit.rubric)}
    low: Counter[str] = Counter()
    for cell in audits.loc[~passed, "scores"]:
        low.update(c for c, s in _as_scores(cell).items() if s is not None and s < pass_score)
    sentence = f"The premium audit failed {failed} of {total} sampled messages ({rate:.0%}, above the {limit:.0%} limit)"
    if low:
        criterion, count = min(low.items(), key=lambda kv: (-kv[1], order.get(kv[0], len(order)), kv[0]))
        sentence += f"; the commonest low criterion is {criterion} (below {pass_score} in {count} of them)"
    no_verdict = audits.loc[~passed & (audits["status"] != "ok"), "status"].value_counts()
    if not no_verdict.empty:
        kinds = ", ".join(f"{k} {v}" for k, v in no_verdict.items())
        sentence += f"; {int(no_verdict.sum())} got no verdict from the judge ({kinds})"
    return sentence + ". The day's sends are held until an operator reviews the audits."
