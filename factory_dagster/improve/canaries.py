"""Routing canaries: move the draft stage one model tier down (cheaper) or up (more capable), as an experiment.

Why canaries and not a switch: a cheaper tier slips more often, and its repairs and escalations
(charged to it in `marts.model_stage_quality`) may eat the saving, or its slips may cost replies.
So a change of model is never made on the mart's figures alone: a small share of the traffic
(`max_traffic_share`) drafts with the challenger, and the decision step promotes it only when its
positive replies per send are not worse than the current model's × (1 − margin) (a non-inferiority
`StoppingRule`) with unsubscribes, complaints and negative replies held, and with its drafts failing
the gate rejecting its first-round drafts at most 1.25 times as often (`metrics.FIRST_ROUND_GUARDRAIL`,
counted the day they are written); a breach of any of them rolls it back.

When: the current draft model *holds its KPIs with margin* (first-pass gate rate and audit failure
rate comfortably inside the limits, on enough leads and mature sends) → propose the next cheaper
tier (downshift); its first-pass gate rate or audit failures are *poor* → propose the next more
capable tier (upshift). Otherwise, or when the figures are too thin, nothing. Routing experiments
always need a person (`experiments.NEVER_AUTO_APPROVED`).

Names: control and challenger are the models that really serve (the mart's `model`, the assignment
arm's model, e.g. offline stand-ins without a key); `registry.next_tier` keeps the challenger served
the same way as the control. On promotion the winner becomes `LoopState.routing["draft"]`, and
`models.routing.stage_model` resolves it for the assign stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.improve.experiments import Experiment, propose
from factory_dagster.improve.metrics import FIRST_ROUND_GUARDRAIL, PRIMARY_METRIC, mart_number, relative_guardrails
from factory_dagster.improve.stats import StoppingRule
from factory_dagster.models.registry import ModelRegistry

STAGE = "draft"
KIND = "routing"
PROPOSER = "routing canaries (marts.model_stage_quality)"

# The columns of marts.model_stage_quality the canaries read (one row per campaign, stage and model).
QUALITY_COLUMNS: tuple[str, ...] = (
    "campaign_id",
    "stage",
    "model",
    "leads",
    "first_pass_rate",
    "first_round_failure_rate",
    "repairs_per_accepted",
    "escalations_per_accepted",
    "audited",
    "audit_failure_rate",
    "mature_sends",
    "positive_reply_rate",
    "unsubscribe_rate",
    "complaint_rate",
    "negative_reply_rate",
    "cost_per_accepted_usd",
)


@dataclass(frozen=True)
class CanaryPolicy:
    """When the current draft model's figures count, and what makes them good or poor."""

    min_leads: int = 200  # jobs of the current model at the stage before its gate figures count
    min_mature_sends: int = 100  # and mature sends before its replies and guardrail rates do (downshift)
    min_audited: int = 10  # audited messages before the audit failure rate counts
    downshift_first_pass: float = 0.95  # holds with margin: at least this first-pass gate rate ...
    downshift_audit_share: float = 0.5  # ... and audit failures at most this share of the spec's hold limit
    upshift_first_pass: float = 0.85  # poor: a first-pass gate rate under this, or audit failures over the spec's limit
    margin: float = 0.2  # non-inferiority margin on positive replies per send (also the power calculation's mde)
    # A fifth of each segment: at 180 leads a day a slipping model shows in its first-pass failures
    # within about three days of drafts (a tenth takes four or five).
    max_traffic_share: float = 0.2
    base_rate_floor: float = 0.01  # primary metric's base rate when the mart knows too little
    cool_down: timedelta = timedelta(days=30)  # a canary rejected, retired or rolled back is not proposed again before


DEFAULT_POLICY = CanaryPolicy()


def _row(quality: pd.DataFrame, campaign_id: str, model: str) -> dict[str, Any] | None:
    missing = sorted(set(QUALITY_COLUMNS) - set(quality.columns))
    if missing:
        raise ValueError(f"model stage quality rows lack columns {missing}")
    rows = quality[(quality.campaign_id == campaign_id) & (quality.stage == STAGE) & (quality.model == model)]
    return None if rows.empty else rows.iloc[0].to_dict()


@dataclass(frozen=True)
class Assessment:
    """What the current draft model's figures call for: -1 downshift, +1 upshift, 0 nothing; and why."""

    step: int
    reason: str


def assess(quality: pd.DataFrame, spec: CampaignSpec, current_model: str, policy: CanaryPolicy = DEFAULT_POLICY) -> Assessment:
    """Does the current draft model hold its KPIs with margin, do poorly, or neither (or is it too early to say)?"""
    return _assess(_row(quality, spec.campaign_id, current_model), spec.audit.max_failure_rate, policy)


def _assess(row: dict[str, Any] | None, audit_limit: float, policy: CanaryPolicy) -> Assessment:
    if row is None or row["leads"] < policy.min_leads:
        leads = 0 if row is None else int(row["leads"])
        return Assessment(0, f"too thin: {leads} leads drafted at the {STAGE} stage (need {policy.min_leads})")
    first_pass = float(row["first_pass_rate"])
    audit_failure = mart_number(row["audit_failure_rate"]) if row["audited"] >= policy.min_audited else None
    audit_words = "too few audits" if audit_failure is None else f"audit failure rate {audit_failure:.1%}"
    figures = f"first-pass gate rate {first_pass:.1%} over {int(row['leads'])} leads, {audit_words}"
    if first_pass < policy.upshift_first_pass or (audit_failure is not None and audit_failure > audit_limit):
        return Assessment(
            1, f"poor: {figures} (limits: first pass >= {policy.upshift_first_pass:.0%}, audit failures <= {audit_limit:.0%})"
        )
    if row["mature_sends"] < policy.min_mature_sends or audit_failure is None:
        return Assessment(
            0, f"too thin to downshift: {figures}, {int(row['mature_sends'])} mature sends (need {policy.min_mature_sends})"
        )
    if first_pass >= policy.downshift_first_pass and audit_failure <= policy.downshift_audit_share * audit_limit:
        bar = policy.downshift_audit_share * audit_limit
        return Assessment(
            -1, f"holds with margin: {figures} (first pass >= {policy.downshift_first_pass:.0%}, audit failures <= {bar:.0%})"
        )
    return Assessment(0, f"neither poor nor with margin to spare: {figures}")


def _blocked(history: Sequence[Experiment], control: str, challenger: str, at: datetime, cool_down: timedelta) -> bool:
    """A routing experiment is still open (one model change at a time), or this very move was
    rejected, retired or rolled back within the cool-down."""
    for past in history:
        if past.kind != KIND:
            continue
        if past.is_open:
            return True
        same_move = past.control == control and challenger in past.challengers
        if same_move and past.state != "promoted" and (past.updated_at or past.proposed_at) >= at - cool_down:
            return True
    return False


def _figures(row: dict[str, Any] | None) -> dict[str, float | None]:
    return {column: None if row is None else mart_number(row[column]) for column in QUALITY_COLUMNS[3:]}


def propose_routing_canaries(
    quality: pd.DataFrame,
    registry: ModelRegistry,
    current_model: str,
    spec: CampaignSpec,
    at: datetime,
    *,
    history: Sequence[Experiment] = (),
    policy: CanaryPolicy = DEFAULT_POLICY,
) -> list[Experiment]:
    """At most one routing canary for the draft stage, as a proposed experiment (`assess` says why, or why not).

    `quality`: rows of marts.model_stage_quality (at least QUALITY_COLUMNS; other campaigns and stages
    are ignored). `current_model`: the model serving the draft stage now, as served (see
    `models.routing.stage_model`). `history`: the campaign's experiments (e.g. `store.list_experiments`):
    nothing is proposed while a routing experiment is open, nor a move recently turned down again.
    No tier further that way: none.
    """
    at = at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo is not None else at  # naive UTC, as the warehouse keeps times
    row = _row(quality, spec.campaign_id, current_model)
    assessment = _assess(row, spec.audit.max_failure_rate, policy)
    step = assessment.step
    challenger = registry.next_tier(current_model, step) if step else None
    if row is None or challenger is None or _blocked(history, current_model, challenger, at, policy.cool_down):
        return []
    control_entry, challenger_entry = registry.entry(current_model), registry.entry(challenger)
    challenger_row = _row(quality, spec.campaign_id, challenger)
    control_cost = mart_number(row["cost_per_accepted_usd"])
    challenger_cost = None if challenger_row is None else mart_number(challenger_row["cost_per_accepted_usd"])
    # Never drafted here: priced from the control's cost at the challenger's list price (its repairs unknown).
    estimated = challenger_cost is None and control_cost is not None
    if estimated:
        challenger_cost = control_cost * challenger_entry.list_price / control_entry.list_price
    base_rate = max(mart_number(row["positive_reply_rate"]) or 0.0, policy.base_rate_floor)
    move = "downshift" if step < 0 else "upshift"
    motivating: dict[str, Any] = {
        "stage": STAGE,
        "direction": move,
        "assessment": assessment.reason,
        "tiers": {current_model: control_entry.tier, challenger: challenger_entry.tier},
        "cost_per_accepted_usd": {current_model: control_cost, challenger: challenger_cost},
        "challenger_cost_estimated": estimated,
        "control_figures": _figures(row),
        "challenger_figures": None if challenger_row is None else _figures(challenger_row),
    }
    if not control_cost or challenger_cost is None:
        cost_words = "a different cost per accepted message"
    elif estimated:
        cost_words = f"about {challenger_cost / control_cost:.0%} of the cost per accepted message at list price (its own repairs and escalations show once it drafts)"
    else:
        cost_words = (
            f"about {challenger_cost / control_cost:.0%} of the cost per accepted message, repairs and escalations included"
        )
    if step < 0:
        hypothesis = (
            f"Drafting with {challenger} (tier {challenger_entry.tier}) instead of {current_model} "
            f"(tier {control_entry.tier}) keeps positive replies per send within {policy.margin:.0%} of today's "
            f"at {cost_words}; today's model {assessment.reason}."
        )
    else:
        hypothesis = (
            f"Drafting with {challenger} (tier {challenger_entry.tier}) instead of {current_model} "
            f"(tier {control_entry.tier}) fixes what the gates and the audit keep catching without losing positive "
            f"replies per send (within {policy.margin:.0%}), at {cost_words}; today's model is {assessment.reason}."
        )
    return [
        propose(
            campaign_id=spec.campaign_id,
            kind=KIND,
            hypothesis=hypothesis,
            control=current_model,
            challengers=[challenger],
            target_segments=[segment.name for segment in spec.segments],
            primary_metric=PRIMARY_METRIC,
            base_rate=base_rate,
            mde=policy.margin,
            guardrails=relative_guardrails(row)
            + relative_guardrails({FIRST_ROUND_GUARDRAIL.metric: row["first_round_failure_rate"]}, (FIRST_ROUND_GUARDRAIL,)),
            max_traffic_share=policy.max_traffic_share,
            motivating_figures=motivating,
            proposed_by=PROPOSER,
            at=at,
            stopping_rule=StoppingRule(non_inferiority_margin=policy.margin),
        )
    ]
