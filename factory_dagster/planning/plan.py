"""Per-segment campaign plan: which angles, which hooks, which claims.

The premium model plans; this module builds its brief, parses its answer and
checks it (every segment covered, every angle known, only the spec's claims).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from pydantic import BaseModel, ValidationError

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.gates.schemas import plan_failures
from factory_dagster.models.gateway import DEFERRED, CallRequest, ModelGateway

PLAN_PROMPT_VERSION = "plan-v1"
PLAN_ATTEMPTS = 2


class PlanError(ValueError):
    """The planner's answer cannot be used."""


def plan_brief(spec: CampaignSpec, performance: pd.DataFrame) -> dict[str, Any]:
    """The planner's brief: spec essentials plus last known reply rates per segment and angle."""
    perf = {
        f"{row.segment}/{row.angle}": {"sends": int(row.sends), "replies": int(row.replies)} for row in performance.itertuples()
    }
    return {
        "task": "plan",
        "offer": spec.offer,
        "audience": spec.audience,
        "voice": spec.voice.tone,
        "segments": [{"name": s.name, "description": s.description} for s in spec.segments],
        "angles": [{"name": a.name, "hypothesis": a.hypothesis, "claims": a.claims} for a in spec.angles],
        "performance": perf,
    }


class AnglePlan(BaseModel):
    angle: str
    hook: str
    claims: list[str]


class SegmentPlan(BaseModel):
    segment: str
    angles: list[AnglePlan]


class PlanAnswer(BaseModel):
    """What the planning model must answer (JSON schema for servers that support it)."""

    segments: list[SegmentPlan]


def parse_plan(text: str) -> pd.DataFrame:
    """Rows (segment, angle, hook, claims) from the planner's JSON; PlanError when malformed."""
    try:
        answer = PlanAnswer.model_validate_json(text)
    except ValidationError as exc:
        raise PlanError(f"planner answer is not a plan: {exc.errors()[0]['msg']}: {text[:200]!r}") from exc
    rows = [
        {"segment": seg.segment, "angle": a.angle, "hook": a.hook, "claims": list(a.claims)}
        for seg in answer.segments
        for a in seg.angles
    ]
    return pd.DataFrame(rows, columns=["segment", "angle", "hook", "claims"])


def plan_violations(plan: pd.DataFrame, spec: CampaignSpec) -> list[str]:
    """What makes a plan unusable: a segment without angles, an unknown angle, a claim the spec does not allow, an empty hook."""
    problems = [f"segment '{s.name}' has no angle" for s in spec.segments if s.name not in set(plan["segment"])]
    segment_names = {s.name for s in spec.segments}
    angles = {a.name: set(a.claims) for a in spec.angles}
    for row in plan.itertuples():
        claims = list(row.claims)  # a list from the planner, an array when read back from DuckDB
        if row.segment not in segment_names:
            problems.append(f"unknown segment '{row.segment}'")
        if row.angle not in angles:
            problems.append(f"segment '{row.segment}': unknown angle '{row.angle}'")
            continue
        problems += [
            f"segment '{row.segment}', angle '{row.angle}': claim not allowed: {c!r}"
            for c in claims
            if c not in angles[row.angle]
        ]
        if not claims:
            problems.append(f"segment '{row.segment}', angle '{row.angle}': no claims")
        if not str(row.hook).strip():
            problems.append(f"segment '{row.segment}', angle '{row.angle}': empty hook")
    return problems


def plan_problems(plan: pd.DataFrame, spec: CampaignSpec) -> list[str]:
    """Everything that keeps a plan out of `raw.plans`: the plan rules and the blocking Pandera plan check."""
    problems = plan_violations(plan, spec)
    if problems:
        return problems
    failures = plan_failures(plan, spec)
    return [f"{row.column}: {row.check}: {row.failure_case}" for row in failures.itertuples()]


def ask_planner(
    gateway: ModelGateway, spec: CampaignSpec, messages: list[dict[str, str]]
) -> tuple[pd.DataFrame | None, str, list[str]]:
    """Up to `PLAN_ATTEMPTS` planner answers: (last parsed plan or None, its model, what is wrong with it)."""
    problems: list[str] = []
    plan, planner = None, spec.routing["plan"]
    for seed in range(PLAN_ATTEMPTS):
        answer = gateway.complete(CallRequest("plan", PLAN_PROMPT_VERSION, messages, seed=seed, response_model=PlanAnswer))
        if answer.status == DEFERRED:
            return plan, planner, ["the daily model budget is spent"]
        try:
            plan, planner = parse_plan(answer.text), answer.model
            problems = plan_problems(plan, spec)
        except PlanError as exc:
            problems = [f"attempt {seed + 1}: {exc}"]
        if not problems:
            break
    return plan, planner, problems
