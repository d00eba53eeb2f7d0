"""Candidate drafts: one brief per (lead, arm), N cheap completions, each parsed and kept."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.models.gateway import ModelGateway
from factory_dagster.models.prompts import build_messages

LEAD_FIELDS = ("first_name", "last_name", "company", "role", "industry", "note")


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


def parse_draft(text: str) -> tuple[str | None, str | None, str | None]:
    """(subject, body, parse_error) from a model answer that should be {"subject", "body"}."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, None, f"not JSON: {exc.msg}"
    if not isinstance(data, dict) or not isinstance(data.get("subject"), str) or not isinstance(data.get("body"), str):
        return None, None, "JSON lacks string fields 'subject' and 'body'"
    return data["subject"].strip(), data["body"].strip(), None


def draft_id(campaign_id: str, lead_id: str, attempt: int, candidate: int) -> str:
    return "drf_" + hashlib.sha256(f"{campaign_id}|{lead_id}|{attempt}|{candidate}".encode()).hexdigest()[:20]


def request_draft(
    gateway: ModelGateway,
    stage: str,
    model: str,
    prompt_version: str,
    brief: dict[str, Any],
    lead: Any,
    attempt: int,
    candidate: int,
) -> dict[str, Any]:
    """One completion turned into a draft row (kept even when it does not parse)."""
    messages = build_messages(prompt_version, brief, lead_payload(lead))
    result = gateway.complete(stage, model, prompt_version, messages, lead_id=lead.lead_id, seed_key=f"{attempt}|{candidate}")
    subject, body, error = parse_draft(result.text)
    return {
        "draft_id": draft_id(gateway.run.campaign_id, lead.lead_id, attempt, candidate),
        "lead_id": lead.lead_id,
        "arm_id": lead.arm_id,
        "candidate_index": candidate,
        "attempt": attempt,
        "model": model,
        "prompt_version": prompt_version,
        "llm_call_id": result.call_id,
        "subject": subject,
        "body": body,
        "parse_error": error,
    }


def draft_candidates(gateway: ModelGateway, spec: CampaignSpec, work: pd.DataFrame) -> pd.DataFrame:
    """N candidates per row of `work` (assignment joined with lead fields, hook and claims)."""
    rows = []
    for lead in work.itertuples():
        brief = draft_brief(spec, lead.angle, lead.hook, list(lead.claims), lead.prompt_version)
        rows += [
            request_draft(gateway, "draft", lead.model, lead.prompt_version, brief, lead, attempt=0, candidate=i)
            for i in range(spec.drafting.candidates)
        ]
    return pd.DataFrame(rows)
