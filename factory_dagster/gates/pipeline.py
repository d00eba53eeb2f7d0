"""The gate between drafting and sending: check, pick, repair, escalate, or quarantine.

For each lead: score every candidate by the rules and by agreement with the other
candidates; the best passing one becomes the message. If none passes, the cheap
model is re-asked with the violations (up to `max_repair_attempts`), then the premium
model drafts it; if that fails too the lead is quarantined with the reasons.
Every attempt is a draft row, a gate result and a ledger row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.drafting.draft import draft_brief, request_draft
from factory_dagster.gates.rules import Violation, agreement, check_draft, key_facts
from factory_dagster.models.gateway import ModelGateway

REPAIR_PROMPT_VERSION = "repair-v1"


def send_id_for(campaign_id: str, lead_id: str) -> str:
    """One first-touch send per lead and campaign: the id that makes re-sending impossible."""
    return "snd_" + hashlib.sha256(f"{campaign_id}|{lead_id}|first-touch".encode()).hexdigest()[:20]


@dataclass
class GateOutput:
    drafts: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {
            "drafts": pd.DataFrame(self.drafts),
            "gate_results": pd.DataFrame(self.results),
            "messages": pd.DataFrame(self.messages),
            "messages_quarantine": pd.DataFrame(self.quarantine),
        }


def _evaluate(drafts: list[dict[str, Any]], lead: Any, spec: CampaignSpec) -> list[dict[str, Any]]:
    angle = spec.angle(lead.angle)
    lead_fields = {"first_name": lead.first_name, "company": lead.company}
    scores = agreement([key_facts(d["subject"], d["body"]) for d in drafts])
    results = []
    for d, score in zip(drafts, scores, strict=True):
        violations = (
            [Violation("parse_error", d["parse_error"])]
            if d["parse_error"]
            else check_draft(d["subject"], d["body"], lead_fields, spec, angle)
        )
        results.append(
            {
                "draft_id": d["draft_id"],
                "lead_id": d["lead_id"],
                "arm_id": d["arm_id"],
                "attempt": d["attempt"],
                "model": d["model"],
                "prompt_version": d["prompt_version"],
                "passed": not violations,
                "violation_codes": [v.code for v in violations],
                "violation_details": [v.detail for v in violations],
                "agreement": score,
                "selected": False,
            }
        )
    return results


def gate_lead(gateway: ModelGateway, spec: CampaignSpec, lead: Any, candidates: list[dict[str, Any]], out: GateOutput) -> None:
    """Run one lead through the gate, appending its drafts, results and message or quarantine row to `out`."""
    attempt_drafts = candidates
    # Without candidates (drafting did not cover this lead) there is nothing to repair: escalate right away.
    attempt = 0 if candidates else spec.drafting.max_repair_attempts
    brief = draft_brief(spec, lead.angle, lead.hook, list(lead.claims), lead.prompt_version)
    while True:
        results = _evaluate(attempt_drafts, lead, spec)
        if attempt > 0:
            out.drafts += attempt_drafts
        passing = [(r, d) for r, d in zip(results, attempt_drafts, strict=True) if r["passed"]]
        if passing:
            best_result, best = max(passing, key=lambda pair: (pair[0]["agreement"], -pair[1]["candidate_index"]))
            best_result["selected"] = True
            out.results += results
            out.messages.append(_message(gateway, lead, best))
            return
        out.results += results
        attempt += 1
        if attempt <= spec.drafting.max_repair_attempts:
            # Repair the candidate closest to passing (a parsed one before an unparseable one),
            # telling the model what was wrong with it.
            closest, closest_draft = min(
                zip(results, attempt_drafts, strict=True),
                key=lambda pair: (pair[1]["parse_error"] is not None, len(pair[0]["violation_codes"])),
            )
            repair_brief = {
                **brief,
                "task": "repair",
                "previous_draft": {"subject": closest_draft["subject"], "body": closest_draft["body"]},
                "violations": closest["violation_details"],
            }
            model = spec.routing.get("repair", lead.model)
            attempt_drafts = [request_draft(gateway, "repair", model, REPAIR_PROMPT_VERSION, repair_brief, lead, attempt, 0)]
        elif attempt == spec.drafting.max_repair_attempts + 1:
            model = spec.routing["escalate"]
            attempt_drafts = [request_draft(gateway, "escalate", model, lead.prompt_version, brief, lead, attempt, 0)]
        else:
            codes = sorted({c for r in results for c in r["violation_codes"]})
            out.quarantine.append(
                {
                    "lead_id": lead.lead_id,
                    "arm_id": lead.arm_id,
                    # Attempts after the candidates: the repairs and the escalation (the last draft's `attempt`).
                    "attempts": attempt - 1,
                    "reason_codes": codes,
                    "reason": "; ".join(dict.fromkeys(d for r in results for d in r["violation_details"])),
                }
            )
            return


def _message(gateway: ModelGateway, lead: Any, draft: dict[str, Any]) -> dict[str, Any]:
    campaign_id = gateway.run.campaign_id
    return {
        "message_id": "msg_"
        + hashlib.sha256(f"{campaign_id}|{lead.lead_id}|{gateway.run.partition_day}".encode()).hexdigest()[:20],
        "send_id": send_id_for(campaign_id, lead.lead_id),
        "lead_id": lead.lead_id,
        "to_email": lead.email,
        "arm_id": lead.arm_id,
        "angle": lead.angle,
        "prompt_version": draft["prompt_version"],
        "model": draft["model"],
        "draft_id": draft["draft_id"],
        "subject": draft["subject"],
        "body": draft["body"],
    }


def run_gates(gateway: ModelGateway, spec: CampaignSpec, work: pd.DataFrame, drafts: pd.DataFrame) -> GateOutput:
    """Gate every lead of `work` given its candidate drafts."""
    out = GateOutput()
    by_lead = {lead_id: g.sort_values("candidate_index").to_dict("records") for lead_id, g in drafts.groupby("lead_id")}
    for lead in work.itertuples():
        gate_lead(gateway, spec, lead, by_lead.get(lead.lead_id, []), out)
    return out
