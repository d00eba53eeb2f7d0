"""The old traffic allocation, `thompson-floor-v1`, kept as the `learning` benchmark's baseline, and
the arm id both policies share. The line now runs `improve.allocation` (policy loop-v2), which
learns on positive replies instead of raw replies (the reply-rate trap), runs experiments and
keeps a holdout.

Rule (policy `thompson-floor-v1`): in each segment every arm has a Beta posterior on
its reply rate — prior mean `prior_reply_rate` worth `prior_sends` sends, updated with
the arm's sends and replies in that segment from `marts.segment_arm_performance`.
The arm's share is `floor/K + (1 - floor) * P(arm is best)`, with P estimated from
seeded posterior draws. Every arm keeps at least `floor/K` of the traffic; shares sum
to 1. Each lead then draws its arm with those shares as propensities, seeded by the
lead and day, so a re-run draws the same arm.
"""

from __future__ import annotations

import hashlib
from datetime import date

import numpy as np
import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec

POLICY_VERSION = "thompson-floor-v1"
_DRAWS = 4000


def arm_id(angle: str, prompt_version: str, model: str) -> str:
    return f"{angle}|{prompt_version}|{model}"


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def candidate_arms(plan: pd.DataFrame, spec: CampaignSpec) -> pd.DataFrame:
    """Every (segment, arm) the plan allows: its angles × the spec's prompt versions × the draft model."""
    model = spec.routing["draft"]
    rows = [
        {"segment": r.segment, "angle": r.angle, "prompt_version": pv, "model": model, "arm_id": arm_id(r.angle, pv, model)}
        for r in plan.itertuples()
        for pv in spec.drafting.prompt_versions
    ]
    return pd.DataFrame(rows)


def arm_shares(arms: pd.DataFrame, performance: pd.DataFrame, spec: CampaignSpec, day: date) -> pd.DataFrame:
    """Per segment and arm: posterior, P(best), share (= propensity) and the reason, as words."""
    alloc = spec.allocation
    stats = performance.set_index(["segment", "arm_id"])[["sends", "replies"]] if not performance.empty else None
    out = []
    for segment, group in arms.groupby("segment", sort=True):
        group = group.reset_index(drop=True)
        sends = np.array([_stat(stats, segment, a, "sends") for a in group.arm_id], dtype=float)
        replies = np.array([_stat(stats, segment, a, "replies") for a in group.arm_id], dtype=float)
        alpha = replies + alloc.prior_sends * alloc.prior_reply_rate
        beta = np.maximum(sends - replies, 0) + alloc.prior_sends * (1 - alloc.prior_reply_rate)
        rng = np.random.default_rng(_seed(POLICY_VERSION, day, segment))
        draws = rng.beta(alpha[:, None], beta[:, None], size=(len(group), _DRAWS))
        p_best = np.bincount(draws.argmax(axis=0), minlength=len(group)) / _DRAWS
        k = len(group)
        shares = alloc.exploration_floor / k + (1 - alloc.exploration_floor) * p_best
        for i, row in group.iterrows():
            mean = alpha[i] / (alpha[i] + beta[i])
            out.append(
                {
                    **row.to_dict(),
                    "sends": int(sends[i]),
                    "replies": int(replies[i]),
                    "posterior_mean": mean,
                    "p_best": p_best[i],
                    "share": shares[i],
                    "reason": (
                        f"{POLICY_VERSION}: {int(replies[i])} replies in {int(sends[i])} sends in segment {segment}, "
                        f"posterior mean {mean:.3f}, P(best) {p_best[i]:.2f}; share = {alloc.exploration_floor}/{k} + "
                        f"{1 - alloc.exploration_floor:.2f} x P(best) = {shares[i]:.3f}"
                    ),
                }
            )
    return pd.DataFrame(out)


def _stat(stats: pd.DataFrame | None, segment: str, arm: str, column: str) -> float:
    if stats is None or (segment, arm) not in stats.index:
        return 0.0
    return float(stats.loc[(segment, arm), column])


def assign_leads(leads: pd.DataFrame, shares: pd.DataFrame, day: date) -> pd.DataFrame:
    """One arm per lead, drawn with its segment's shares; the propensity is the drawn arm's share."""
    rows = []
    by_segment = {seg: g.reset_index(drop=True) for seg, g in shares.groupby("segment")}
    for lead in leads.itertuples():
        options = by_segment[lead.segment]
        u = _seed(POLICY_VERSION, day, lead.lead_id) / 2**64
        index = min(int(np.searchsorted(options.share.cumsum().to_numpy(), u, side="right")), len(options) - 1)
        arm = options.iloc[index]
        rows.append(
            {
                "lead_id": lead.lead_id,
                "segment": lead.segment,
                "arm_id": arm.arm_id,
                "angle": arm.angle,
                "prompt_version": arm.prompt_version,
                "model": arm.model,
                "propensity": float(arm.share),
                "policy_version": POLICY_VERSION,
                "reason": arm.reason,
            }
        )
    return pd.DataFrame(rows)


def allocation_problems(shares: pd.DataFrame, floor: float) -> list[str]:
    """Why an allocation is invalid: shares per segment not summing to 1, an arm under the floor."""
    problems = []
    for segment, group in shares.groupby("segment"):
        total = group.share.sum()
        if abs(total - 1) > 1e-9:
            problems.append(f"segment {segment}: shares sum to {total:.6f}, not 1")
        minimum = floor / len(group)
        problems += [
            f"segment {segment}: arm {r.arm_id} share {r.share:.4f} under floor {minimum:.4f}"
            for r in group.itertuples()
            if r.share < minimum - 1e-12
        ]
    return problems
