"""Candidate drafts: one brief per (lead, arm), N cheap completions, each parsed and kept."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd
from pydantic import BaseModel, ValidationError

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.models.gateway import DEFERRED, CallRequest, CallResult, ModelGateway
from factory_dagster.models.prompts import build_messages

LEAD_FIELDS = ("first_name", "last_name", "company", "role", "industry", "note")
# Leads whose calls go to the gateway at once. Batches keep a large day's prompts from all being in memory
# together (about 4 KB a candidate, over a gigabyte on a 100,000-lead day); the calls, their order and the
# budget's verdicts are the same, since the gateway serves requests in order and a spent budget stays spent.
LEADS_PER_BATCH = 2_000


def draft_brief(spec: CampaignSpec, angle: str, hook: str, claims: list[str], prompt_version: str) -> dict[str, Any]:
    """Everything the drafting model needs from the spec and the plan, nothing from the lead."""
    return {
        "task": "draft",
        "style": prompt_version,
        "language": spec.language,
        "offer": spec.offer,
        "angle": angle,
        "hook": hook,
        "claims": claims,
        "tone": spec.voice.tone,
        "voice_rules": spec.voice.rules,
        "call_to_action": spec.required.call_to_action,
        "unsubscribe_footer": spec.required.unsubscribe_footer,
        "sender": {"name": spec.sender.name, "company": spec.sender.company, "postal_address": spec.sender.postal_address},
        "min_words": spec.limits.min_words,
        "max_words": spec.limits.max_words,
        "max_subject_chars": spec.limits.max_subject_chars,
        "banned_phrases": spec.banned_phrases,
    }


def lead_payload(lead: Any) -> dict[str, str]:
    """The lead's fields that personalise a message (passed to the model as delimited data)."""
    return {field: "" if getattr(lead, field) is None else str(getattr(lead, field)) for field in LEAD_FIELDS}


class DraftAnswer(BaseModel):
    """What a drafting model must answer (JSON schema for servers that support it)."""

    subject: str
    body: str


def parse_draft(text: str) -> tuple[str | None, str | None, str | None]:
    """(subject, body, parse_error) from a model answer that should be {"subject", "body"}."""
    try:
        answer = DraftAnswer.model_validate_json(text)
    except ValidationError as exc:
        problem = exc.errors()[0]
        return None, None, f"not a draft: {problem['msg']} at {'.'.join(map(str, problem['loc'])) or 'top level'}"
    return answer.subject.strip(), answer.body.strip(), None


def draft_id(campaign_id: str, day: date, lead_id: str, attempt: int, candidate: int) -> str:
    return "drf_" + hashlib.sha256(f"{campaign_id}|{day}|{lead_id}|{attempt}|{candidate}".encode()).hexdigest()[:20]


def draft_request(
    stage: str,
    prompt_version: str,
    brief: dict[str, Any],
    lead: Any,
    attempt: int,
    candidate: int,
    data: dict[str, dict[str, Any]] | None = None,
    model: str | None = None,
) -> CallRequest:
    """One completion for one lead; the lead's calls share a budget group (all of them, or none today).

    `model`: serve it with this model first instead of the stage's route (None: the route decides).
    """
    return CallRequest(
        stage=stage,
        prompt_version=prompt_version,
        messages=build_messages(prompt_version, brief, lead_payload(lead), data),
        lead_id=lead.lead_id,
        seed=attempt * 100 + candidate,
        group=lead.lead_id,
        response_model=DraftAnswer,
        model=model,
    )


def draft_row(
    gateway: ModelGateway, lead: Any, request: CallRequest, result: CallResult, attempt: int, candidate: int
) -> dict[str, Any]:
    """The `raw.drafts` row of one answer (kept even when it does not parse: it was paid for), with its call's stage and
    cost as the ledger records them (dbt's int_draft_jobs reads them here, not from raw.llm_calls)."""
    subject, body, error = parse_draft(result.text) if result.status in {"ok", "invalid"} else (None, None, _call_failure(result))
    return {
        "draft_id": draft_id(gateway.run.campaign_id, gateway.run.partition_day, lead.lead_id, attempt, candidate),
        "lead_id": lead.lead_id,
        "arm_id": lead.arm_id,
        "candidate_index": candidate,
        "attempt": attempt,
        "model": result.model,
        "prompt_version": request.prompt_version,
        "llm_call_id": result.call_id,
        "subject": subject,
        "body": body,
        "parse_error": error,
        "stage": request.stage,
        "cost_usd": result.cost_usd,
    }


def _call_failure(result: CallResult) -> str:
    """A draft's parse_error when no answer came: the call's status, and why when the gateway knows."""
    return f"model call {result.status}" + (f": {result.error}" if result.error else "")


@dataclass(frozen=True)
class DraftBatch:
    """One batch of the work drafted: its leads, their draft rows, and those of its leads the budget deferred."""

    lead_ids: list[str]
    drafts: pd.DataFrame
    deferred: list[str]


def draft_batches(
    gateway: ModelGateway, spec: CampaignSpec, work: pd.DataFrame, *, arm_models: bool = False
) -> Iterator[DraftBatch]:
    """`LEADS_PER_BATCH` rows of `work` at a time, N candidates each: a caller may write each batch before the next.

    `arm_models`: draft each lead with its assignment's `model` (the line does, so a routing
    experiment's challenger leads really get the challenger model); otherwise the draft stage's route.
    """
    for start in range(0, len(work), LEADS_PER_BATCH):
        batch = list(work.iloc[start : start + LEADS_PER_BATCH].itertuples())
        rows, deferred = _draft_batch(gateway, spec, batch, arm_models)
        yield DraftBatch([lead.lead_id for lead in batch], pd.DataFrame(rows), deferred)


def draft_candidates(
    gateway: ModelGateway, spec: CampaignSpec, work: pd.DataFrame, *, arm_models: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """N candidates per row of `work` (all batches at once); also the leads the budget deferred to another day."""
    batches = list(draft_batches(gateway, spec, work, arm_models=arm_models))
    frames = [b.drafts for b in batches if not b.drafts.empty]
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), [i for b in batches for i in b.deferred]


def _draft_batch(
    gateway: ModelGateway, spec: CampaignSpec, leads: list[Any], arm_models: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    """`draft_candidates` for a batch of leads: their draft rows, and the leads the budget deferred."""
    n = spec.drafting.candidates
    requests = [
        draft_request(
            "draft",
            lead.prompt_version,
            draft_brief(spec, lead.angle, lead.hook, list(lead.claims), lead.prompt_version),
            lead,
            0,
            i,
            model=lead.model if arm_models else None,
        )
        for lead in leads
        for i in range(n)
    ]
    results = gateway.complete_many(requests)
    rows, deferred = [], []
    for k, lead in enumerate(leads):
        mine = results[k * n : (k + 1) * n]
        if any(r.status == DEFERRED for r in mine):
            deferred.append(lead.lead_id)
            continue
        rows += [draft_row(gateway, lead, requests[k * n + i], r, 0, i) for i, r in enumerate(mine)]
    return rows, deferred
