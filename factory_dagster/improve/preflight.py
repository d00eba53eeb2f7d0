"""Off-policy preflight: an allocation change takes effect only when the campaign's own logs back it.

A promotion that changes how leads are allocated (a segment split: each part then learns its own
angles) is checked on the campaign's logged assignments before it becomes the loop's state. Each
mature loop send of the target segments is a logged row (its angle, the angle's propensity that
day, a positive reply or not: `backtest.warehouse.connection_log`); the new policy (today's angle
shares of each part) and the current one (today's pooled shares) are scored on those rows with the
doubly robust estimator (`backtest.estimators.off_policy_estimates`). The change passes only when
the new policy's 95% lower bound clears the current policy's estimate and at least
MIN_REWARDED_ROWS rows carry a positive reply (with fewer the interval is falsely narrow). Either
way the estimates are stored with the decision (the look's evidence) and shown in the improve
stage's metadata.

Why on logged data: the experiment's own arms are a fifth of the segment's traffic; the logs hold
every send the segment ever made, with the propensities that make them comparable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import date
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from factory_dagster.backtest.estimators import off_policy_estimates, target_matrix
from factory_dagster.backtest.warehouse import WarehouseLogError, connection_log
from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.improve.allocation import angle_shares
from factory_dagster.improve.experiments import Experiment
from factory_dagster.improve.splits import SplitRule, part_performance, part_segment
from factory_dagster.improve.stats import Decision
from factory_dagster.learning.marts import LEAD_ATTRIBUTES, arm_performance, known_send_outcomes
from factory_dagster.planning.fallback import spec_only_plan

MIN_REWARDED_ROWS = 10
ESTIMATOR = "dr"


@dataclass(frozen=True)
class Preflight:
    """The verdict, and the figures it rests on (stored as the look's evidence)."""

    passed: bool
    reason: str
    rows: int
    rewarded_rows: int
    new: dict[str, Any] | None = None
    current: dict[str, Any] | None = None

    def evidence(self) -> dict[str, Any]:
        return {"estimator": ESTIMATOR, **asdict(self)}


def changes_allocation(experiment: Experiment) -> bool:
    """Kinds whose promotion changes how leads are allocated (the others change the message or model)."""
    return experiment.kind in ("segment_split", "allocation_policy")


def _with_attributes(con: duckdb.DuckDBPyConnection, campaign_id: str, rows: pd.DataFrame) -> pd.DataFrame:
    leads = con.execute(
        f"""SELECT lead_id, {", ".join(LEAD_ATTRIBUTES)} FROM raw.leads
            WHERE campaign_id = $campaign AND lead_id IN (SELECT unnest($ids::VARCHAR[]))""",
        {"campaign": campaign_id, "ids": list(rows["lead_id"])},
    ).df()
    return rows.merge(leads, on="lead_id", how="left")


def split_preflight(
    con: duckdb.DuckDBPyConnection, spec: CampaignSpec, experiment: Experiment, winner: str, day: date
) -> Preflight:
    """Score the split `winner` against pooling on the target segments' logged loop sends."""
    rule = SplitRule.from_name(winner)
    try:
        log = connection_log(con, spec.campaign_id, spec.improve.outcome_window_days)
    except WarehouseLogError as exc:
        return Preflight(False, f"no logged sends to check it on: {exc}", 0, 0)
    rows = log.rows[log.rows["segment"].isin(experiment.target_segments) & ~log.rows["holdout"].astype(bool)]
    rewarded = int(rows["reward"].sum())
    if rewarded < MIN_REWARDED_ROWS:
        return Preflight(
            False, f"{rewarded} of {len(rows)} logged sends got a positive reply, {MIN_REWARDED_ROWS} needed", len(rows), rewarded
        )
    rows = _with_attributes(con, spec.campaign_id, rows.reset_index(drop=True))
    known = known_send_outcomes(con, spec.campaign_id, day)
    plan = spec_only_plan(spec)
    plan = plan[plan["segment"].isin(experiment.target_segments)]
    pooled = angle_shares(plan, arm_performance(known), spec, day)
    parts_plan = pd.concat([plan.assign(segment=plan["segment"].map(lambda s, p=p: part_segment(s, p))) for p in ("in", "out")])
    rules = dict.fromkeys(experiment.target_segments, rule)
    parts = angle_shares(parts_plan, part_performance(known, rules), spec, day)
    as_now = rows.assign(context=rows["segment"])
    as_split = rows.assign(context=[part_segment(s, p) for s, p in zip(rows["segment"], rule.parts(rows), strict=True)])
    current = off_policy_estimates(as_now, target_matrix(as_now, pooled, "segment", "angle", "angle_share"))[ESTIMATOR]
    new = off_policy_estimates(as_split, target_matrix(as_split, parts, "segment", "angle", "angle_share"))[ESTIMATOR]
    passed = bool(np.isfinite(new.ci_low) and np.isfinite(current.value) and new.ci_low > current.value)
    verdict = "clears" if passed else "does not clear"
    reason = (
        f"off-policy preflight on {len(rows)} logged sends ({rewarded} positive): split {new.value:.4f} "
        f"[{new.ci_low:.4f}, {new.ci_high:.4f}] against pooled {current.value:.4f}; the lower bound {verdict} it"
    )
    return Preflight(passed, reason, len(rows), rewarded, new.to_dict(), current.to_dict())


def preflight_promotion(
    con: duckdb.DuckDBPyConnection, spec: CampaignSpec, experiment: Experiment, decision: Decision, day: date
) -> Decision:
    """The decision, checked off-policy when it promotes an allocation change: refused (retired, the
    state unchanged) unless the check passes; the check's figures go with the decision either way."""
    if decision.action != "promote" or decision.winner is None or not changes_allocation(experiment):
        return decision
    if experiment.kind == "segment_split":
        check = split_preflight(con, spec, experiment, decision.winner, day)
    else:
        check = Preflight(False, f"no off-policy check exists for {experiment.kind} experiments yet", 0, 0)
    evidence = {**decision.evidence, "preflight": check.evidence()}
    if check.passed:
        return replace(decision, reasons=(*decision.reasons, check.reason), evidence=evidence)
    refused = f"promotion of {decision.winner} refused: {check.reason}"
    return replace(decision, action="retire", winner=None, reasons=(*decision.reasons, refused), evidence=evidence)
