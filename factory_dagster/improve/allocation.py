"""Policy `loop-v2`: how the assign stage runs the loop, as pure functions the line and the benchmark share.

Each lead of a segment goes through three layers, each for a reason:

1. **Holdout** (`is_holdout`): a fixed share of the campaign's leads (`spec.improve.holdout_share`),
   chosen by a hash of (campaign, lead), keeps the frozen baseline `holdout-uniform-v1`: uniform
   over the spec's own arms (plan angles x the spec's prompt versions x the spec's served draft
   model), never in an experiment. The hash makes membership sticky and independent of
   everything the loop learns, so `marts.loop_lift` measures the loop's value instead of assuming it.
2. **Angle** (`angle_shares`): Thompson sampling on the primary metric, positive replies per send,
   per segment over the plan's angles. Counts are pooled over the prompt versions and models of an
   angle (they all test the same hypothesis), prior mean `allocation.prior_positive_rate` worth
   `allocation.prior_sends` sends. Share = floor/K + (1 - floor) x P(angle is best). Optimising
   raw replies would walk into the reply-rate trap (more replies, fewer positive ones); this cannot.
3. **Experiment arms** (`segment_traffic`), in two independent layers (`Experiment.layer`):
   - message: outside experiments the segment's champion prompt version (loop state); while a
     `prompt_version` experiment runs in the segment, its arms split the segment's loop leads
     exactly as `decisions.planned_shares` says (control = the champion);
   - routing: outside canaries the loop's draft model (loop state routing, else the spec's); while a
     draft-stage `routing` canary runs, its models split the leads the same way.
   The angle, the message arm and the model are three independent draws, so every arm of one layer
   is compared on the same angle mix and the same mix of the other layer's arms.

A loop lead's propensity is angle share x arm share x routing share; a holdout lead's is 1/K.
Draws are seeded by (lead, day), so a re-run assigns the same arms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from factory_dagster.assignment.policy import arm_id
from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.improve.decisions import planned_shares
from factory_dagster.improve.experiments import Experiment
from factory_dagster.improve.stats import srm_p_value
from factory_dagster.improve.versions import LoopState
from factory_dagster.models.routing import stage_model

POLICY_VERSION = "loop-v2"
HOLDOUT_POLICY_VERSION = "holdout-uniform-v1"
ROUTED_STAGE = "draft"  # the only model stage whose routing experiments get traffic in the assign stage
HOLDOUT_SRM_ALPHA = 0.001  # a day's holdout count this unlikely under the planned share means broken hashing
_DRAWS = 4000
_TOLERANCE = 1e-9

ALLOCATION_COLUMNS = [
    "segment",
    "arm_id",
    "angle",
    "prompt_version",
    "model",
    "holdout",
    "experiment_id",
    "experiment_arm",
    "routing_experiment_id",
    "routing_arm",
    "sends",
    "replies",
    "positive_replies",
    "posterior_mean",
    "p_best",
    "angle_share",
    "arm_share",
    "routing_share",
    "share",
    "policy_version",
    "reason",
]


def _unit(*parts: object) -> float:
    """A uniform draw in [0, 1) fixed by `parts` (no random state: re-runs draw the same)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big") / 2**64


def is_holdout(campaign_id: str, lead_id: str, share: float) -> bool:
    """Whether the lead belongs to the campaign's holdout: a hash, so sticky and blind to the loop."""
    return _unit("holdout", campaign_id, lead_id) < share


# ---------------------------------------------------------------- layer 2: angles


def angle_shares(plan: pd.DataFrame, performance: pd.DataFrame, spec: CampaignSpec, day: date) -> pd.DataFrame:
    """Per segment and plan angle: pooled counts, posteriors, P(best), share.

    An angle's value is positive replies per send minus `allocation.unsubscribe_weight` times
    unsubscribes per send, each rate a Beta posterior: an unsubscribe loses the lead for good, and
    the reply-rate trap's angles earn three times as many (measured in the `learning` benchmark:
    with the weight at 1 the loop settled on no trap arm in 20 seed x segment pairs, at 0 on one).
    `performance` has the shape of `learning.marts.segment_arm_performance` (segment, angle,
    sends, replies, positive_replies, unsubscribes per arm); arms of the same angle are summed.
    """
    alloc = spec.allocation
    counts = ["sends", "replies", "positive_replies", "unsubscribes"]
    known = performance if not performance.empty else pd.DataFrame(columns=["segment", "angle", *counts])
    known = known.reindex(columns=list(dict.fromkeys(["segment", "angle", *known.columns, *counts])), fill_value=0)
    pooled = known.astype(dict.fromkeys(counts, float)).groupby(["segment", "angle"])[counts].sum()
    out = []
    for segment, group in plan[["segment", "angle"]].drop_duplicates().groupby("segment", sort=True):
        angles = sorted(group["angle"])
        stats = pooled.reindex(pd.MultiIndex.from_tuples([(segment, a) for a in angles]), fill_value=0.0)
        sends, replies, positives, unsubscribes = (stats[c].to_numpy() for c in counts)
        alpha = positives + alloc.prior_sends * alloc.prior_positive_rate
        beta = np.maximum(sends - positives, 0) + alloc.prior_sends * (1 - alloc.prior_positive_rate)
        rng = np.random.default_rng(int(_unit(POLICY_VERSION, day, segment) * 2**63))
        draws = rng.beta(alpha[:, None], beta[:, None], size=(len(angles), _DRAWS))
        if alloc.unsubscribe_weight:
            lost = rng.beta(
                (unsubscribes + alloc.prior_sends * alloc.prior_unsubscribe_rate)[:, None],
                (np.maximum(sends - unsubscribes, 0) + alloc.prior_sends * (1 - alloc.prior_unsubscribe_rate))[:, None],
                size=(len(angles), _DRAWS),
            )
            draws = draws - alloc.unsubscribe_weight * lost
        p_best = np.bincount(draws.argmax(axis=0), minlength=len(angles)) / _DRAWS
        shares = alloc.exploration_floor / len(angles) + (1 - alloc.exploration_floor) * p_best
        for i, angle in enumerate(angles):
            mean = alpha[i] / (alpha[i] + beta[i])
            out.append(
                {
                    "segment": segment,
                    "angle": angle,
                    "sends": int(sends[i]),
                    "replies": int(replies[i]),
                    "positive_replies": int(positives[i]),
                    "posterior_mean": mean,
                    "p_best": p_best[i],
                    "angle_share": shares[i],
                    "angle_reason": (
                        f"angle {angle}: {int(positives[i])} positive replies and {int(unsubscribes[i])} unsubscribes in "
                        f"{int(sends[i])} sends (all prompt versions and models), positive posterior mean {mean:.4f}, "
                        f"P(best on positive - {alloc.unsubscribe_weight:g} x unsubscribes) {p_best[i]:.2f}; angle share = "
                        f"{alloc.exploration_floor}/{len(angles)} + {1 - alloc.exploration_floor:.2f} x P(best) = {shares[i]:.3f}"
                    ),
                }
            )
    return pd.DataFrame(out)


# ---------------------------------------------------------------- layer 3: experiment arms


@dataclass(frozen=True)
class TrafficArm:
    """One arm of a layer: its name in the experiment (None outside one), what it serves (a prompt
    version in the message layer, a model in the routing layer) and its share of the leads."""

    experiment_arm: str | None
    serves: str
    share: float


@dataclass(frozen=True)
class Layer:
    """How a segment's loop (non-holdout) leads split between the arms of one layer today, and why."""

    experiment_id: str | None
    arms: tuple[TrafficArm, ...]
    note: str


@dataclass(frozen=True)
class SegmentTraffic:
    """The segment's two layers: prompt versions (message) and draft models (routing)."""

    message: Layer
    routing: Layer


def runs_in_assign(experiment: Experiment) -> bool:
    """Kinds the assign stage can give traffic: prompt versions, and routing of the draft stage."""
    if experiment.kind == "prompt_version":
        return True
    return experiment.kind == "routing" and experiment.motivating_figures.get("stage", ROUTED_STAGE) == ROUTED_STAGE


def _layer(layer: str, segment: str, default: TrafficArm, running: Iterable[Experiment], serve: Callable[[str], str]) -> Layer:
    """The oldest running experiment of the layer in the segment, split as planned; else the default arm."""
    mine = sorted(
        (e for e in running if e.state == "running" and e.layer == layer and segment in e.target_segments and runs_in_assign(e)),
        key=lambda e: (e.updated_at or e.proposed_at, e.proposed_at, e.experiment_id),
    )
    if not mine:
        return Layer(None, (default,), default.serves)
    experiment, others = mine[0], mine[1:]
    shares = planned_shares(experiment)
    arms = tuple(TrafficArm(name, serve(name), shares[name]) for name in (experiment.control, *experiment.challengers))
    split = ", ".join(f"{a.experiment_arm} {a.share:.0%}" for a in arms)
    note = f"experiment {experiment.experiment_id} ({experiment.kind}, control {experiment.control}): {split}"
    if others:
        note += f"; also running here, waiting for it (oldest first): {', '.join(e.experiment_id for e in others)}"
    return Layer(experiment.experiment_id, arms, note)


def segment_traffic(
    segment: str,
    champion: str,
    draft_model: str,
    running: Iterable[Experiment],
    serve: Callable[[str], str] = lambda name: name,
) -> SegmentTraffic:
    """The segment's arms in each layer: the champion prompt and the loop's draft model alone, or
    the oldest running experiment of the layer with its planned split.

    `serve` maps a configured model name to the model that really serves it (its offline
    stand-in without a key); the routing experiment's names stay as its `routing_arm`.
    """
    running = list(running)
    return SegmentTraffic(
        message=_layer("message", segment, TrafficArm(None, champion, 1.0), running, lambda name: name),
        routing=_layer("routing", segment, TrafficArm(None, draft_model, 1.0), running, serve),
    )


# ---------------------------------------------------------------- the day's allocation


def allocate(
    plan: pd.DataFrame,
    performance: pd.DataFrame,
    spec: CampaignSpec,
    state: LoopState,
    running: Sequence[Experiment],
    day: date,
    serve: Callable[[str], str] = lambda name: name,
) -> pd.DataFrame:
    """Every (segment, arm) a lead may get today, loop rows (`loop-v2`) and holdout rows, with shares.

    Within each segment the loop rows' shares sum to 1 (angle share x arm share x routing share),
    and so do the holdout rows'; `share` is the propensity of a lead of that population drawing the row.
    """
    angles = angle_shares(plan, performance, spec, day)
    draft_model = stage_model(ROUTED_STAGE, state.routing, spec, serve)
    rows = []
    for segment, group in angles.groupby("segment", sort=True):
        traffic = segment_traffic(segment, state.champions[segment], draft_model, running, serve)
        message, routing = traffic.message, traffic.routing
        for angle in group.itertuples():
            for arm in message.arms:
                for route in routing.arms:
                    share = angle.angle_share * arm.share * route.share
                    rows.append(
                        _row(angle, arm.serves, route.serves, False, message.experiment_id, arm.experiment_arm)
                        | {
                            "routing_experiment_id": routing.experiment_id,
                            "routing_arm": route.experiment_arm,
                            "arm_share": arm.share,
                            "routing_share": route.share,
                            "share": share,
                            "policy_version": POLICY_VERSION,
                            "reason": f"{POLICY_VERSION} in segment {segment}: {angle.angle_reason}; prompt: {message.note}; "
                            f"model: {routing.note}; propensity = {angle.angle_share:.3f} x {arm.share:.2f} x {route.share:.2f} "
                            f"= {share:.4f}",
                        }
                    )
        rows += _holdout_rows(group, spec)
    return pd.DataFrame(rows, columns=ALLOCATION_COLUMNS)


def _row(angle: Any, prompt_version: str, model: str, holdout: bool, experiment_id: str | None, arm: str | None) -> dict:
    return {
        "segment": angle.segment,
        "arm_id": arm_id(angle.angle, prompt_version, model),
        "angle": angle.angle,
        "prompt_version": prompt_version,
        "model": model,
        "holdout": holdout,
        "experiment_id": experiment_id,
        "experiment_arm": arm,
        "routing_experiment_id": None,
        "routing_arm": None,
        "sends": angle.sends,
        "replies": angle.replies,
        "positive_replies": angle.positive_replies,
        "posterior_mean": angle.posterior_mean,
        "p_best": angle.p_best,
        "angle_share": angle.angle_share,
        "routing_share": 1.0,
    }


def _holdout_rows(angles: pd.DataFrame, spec: CampaignSpec) -> list[dict]:
    """The frozen baseline: uniform over plan angles x the spec's prompt versions x its served draft model."""
    model = spec.routing[ROUTED_STAGE]
    versions = spec.drafting.prompt_versions
    k = len(angles) * len(versions)
    return [
        _row(angle, version, model, True, None, None)
        | {
            "arm_share": 1 / len(versions),
            "share": 1 / k,
            "policy_version": HOLDOUT_POLICY_VERSION,
            "reason": f"{HOLDOUT_POLICY_VERSION}: holdout lead ({spec.improve.holdout_share:.0%} of the campaign, by hash) "
            f"keeps the frozen baseline, uniform over the spec's {k} arms of segment {angle.segment}; propensity 1/{k}",
        }
        for angle in angles.itertuples()
        for version in versions
    ]


def assign_leads(leads: pd.DataFrame, allocation: pd.DataFrame, spec: CampaignSpec, day: date) -> pd.DataFrame:
    """One arm per lead: holdout leads uniformly, loop leads by angle share, then by message arm, then by model.

    The angle, the arm and the model are independent seeded draws, so every experiment arm sees the
    same angle mix and the same mix of the other layer's arms; the propensity is the drawn row's
    share (the product of the three).
    """
    choices = {key: _Choices(group) for key, group in allocation.groupby(["segment", "holdout"])}
    rows = []
    for lead in leads.itertuples():
        holdout = is_holdout(spec.campaign_id, lead.lead_id, spec.improve.holdout_share)
        options = choices[(lead.segment, holdout)]
        if holdout:
            chosen = options.row(_unit(HOLDOUT_POLICY_VERSION, day, lead.lead_id))
        else:
            chosen = options.loop_row(
                _unit(POLICY_VERSION, day, lead.lead_id, "angle"),
                _unit(POLICY_VERSION, day, lead.lead_id, "arm"),
                _unit(POLICY_VERSION, day, lead.lead_id, "route"),
            )
        rows.append(
            {
                "lead_id": lead.lead_id,
                "segment": lead.segment,
                "arm_id": chosen["arm_id"],
                "angle": chosen["angle"],
                "prompt_version": chosen["prompt_version"],
                "model": chosen["model"],
                "propensity": float(chosen["share"]),
                "policy_version": chosen["policy_version"],
                "reason": chosen["reason"],
                "experiment_id": chosen["experiment_id"],
                "experiment_arm": chosen["experiment_arm"],
                "holdout": holdout,
                "routing_experiment_id": chosen["routing_experiment_id"],
                "routing_arm": chosen["routing_arm"],
            }
        )
    return pd.DataFrame(rows)


class _Choices:
    """One population's allocation rows (a segment's loop or holdout leads), indexed once for the
    per-lead draws: angle, then prompt version within the angle, then model within both."""

    def __init__(self, group: pd.DataFrame) -> None:
        self.records = group.to_dict("records")
        self.shares = group["share"].to_numpy(dtype=float)
        tree: dict[Any, dict[Any, list[dict]]] = {}
        for record in self.records:
            tree.setdefault(record["angle"], {}).setdefault(record["prompt_version"], []).append(record)
        # Each level's options in first-seen order with their shares (every row of an angle carries the
        # angle's share, every row of a version its arm share).
        self.angles = list(tree)
        self.angle_shares = np.array([next(iter(tree[a].values()))[0]["angle_share"] for a in self.angles], dtype=float)
        self.versions = {
            a: (list(v), np.array([rows[0]["arm_share"] for rows in v.values()], dtype=float)) for a, v in tree.items()
        }
        self.routes = {
            (a, p): (rows, np.array([r["routing_share"] for r in rows], dtype=float))
            for a, v in tree.items()
            for p, rows in v.items()
        }

    def row(self, u: float) -> dict:
        return self.records[_pick(self.shares, u)]

    def loop_row(self, u_angle: float, u_arm: float, u_route: float) -> dict:
        angle = self.angles[_pick(self.angle_shares, u_angle)]
        names, arm_shares = self.versions[angle]
        version = names[_pick(arm_shares, u_arm)]
        rows, route_shares = self.routes[(angle, version)]
        return rows[_pick(route_shares, u_route)]


def _pick(shares: pd.Series | np.ndarray, u: float) -> int:
    """The index whose cumulative share first exceeds u (shares sum to 1 within rounding)."""
    shares = np.asarray(shares, dtype=float)
    cumulative = shares.cumsum() / shares.sum()
    return min(int(np.searchsorted(cumulative, u, side="right")), len(cumulative) - 1)


# ---------------------------------------------------------------- the blocking check


def allocation_problems(allocation: pd.DataFrame, floor: float, experiments: Mapping[str, Experiment]) -> list[str]:
    """What is wrong with a day's allocation (empty when valid).

    Loop and holdout rows each sum to 1 per segment; every loop angle keeps the exploration
    floor; experiment rows belong to an experiment the assign stage runs, in one of its target
    segments, with the challengers within its maximum traffic share; holdout rows are in no experiment.
    """
    problems = []
    for (segment, holdout), group in allocation.groupby(["segment", "holdout"]):
        population = "holdout" if holdout else "loop"
        total = group["share"].sum()
        if abs(total - 1) > _TOLERANCE:
            problems.append(f"segment {segment}: {population} shares sum to {total:.6f}, not 1")
        if holdout:
            if group[["experiment_id", "routing_experiment_id"]].notna().any(axis=None):
                problems.append(f"segment {segment}: holdout rows are in an experiment")
            continue
        by_angle = group.groupby("angle")["share"].sum()
        minimum = floor / len(by_angle)
        problems += [
            f"segment {segment}: angle {angle} share {share:.4f} under floor {minimum:.4f}"
            for angle, share in by_angle.items()
            if share < minimum - _TOLERANCE
        ]
        for layer, (id_column, arm_column) in LAYER_COLUMNS.items():
            for experiment_id, rows in group[group[id_column].notna()].groupby(id_column):
                problems += _experiment_problems(
                    segment, layer, experiment_id, rows[arm_column], rows["share"], experiments.get(experiment_id)
                )
    return problems


# Each layer's columns in the allocation and the assignments: experiment id, arm.
LAYER_COLUMNS: Mapping[str, tuple[str, str]] = {
    "message": ("experiment_id", "experiment_arm"),
    "routing": ("routing_experiment_id", "routing_arm"),
}


def _experiment_problems(
    segment: str, layer: str, experiment_id: str, arms: pd.Series, shares: pd.Series, experiment: Experiment | None
) -> list[str]:
    where = f"segment {segment}: experiment {experiment_id}"
    if experiment is None:
        return [f"{where} does not exist"]
    if not runs_in_assign(experiment) or experiment.layer != layer or segment not in experiment.target_segments:
        return [
            f"{where} ({experiment.kind}, segments {', '.join(experiment.target_segments)}) cannot run here in the {layer} layer"
        ]
    challenger_share = shares[arms.isin(experiment.challengers)].sum()
    if challenger_share > experiment.max_traffic_share + _TOLERANCE:
        return [
            f"{where}: challengers get {challenger_share:.3f} of the traffic, over its maximum {experiment.max_traffic_share:.3f}"
        ]
    return []


def holdout_problems(assignments: pd.DataFrame, campaign_id: str, share: float) -> list[str]:
    """Holdout membership must be the hash's, holdout leads in no experiment, and the count plausible."""
    rows = assignments[assignments["holdout"].notna()]
    if rows.empty:
        return []
    expected = np.array([is_holdout(campaign_id, lead, share) for lead in rows["lead_id"]])
    flagged = rows["holdout"].astype(bool).to_numpy()
    problems = []
    if wrong := int((expected != flagged).sum()):
        problems.append(f"{wrong} leads' holdout flag differs from the hash at holdout share {share:.0%}")
    if rows.loc[flagged, [c for c in ("experiment_id", "routing_experiment_id") if c in rows]].notna().any(axis=None):
        problems.append("holdout leads were put in an experiment")
    if 0 < share < 1:
        p = srm_p_value([int(flagged.sum()), int((~flagged).sum())], [share, 1 - share])
        if p < HOLDOUT_SRM_ALPHA:
            problems.append(
                f"holdout share {flagged.mean():.1%} of {len(rows)} leads is implausible at {share:.0%} (p = {p:.2g})"
            )
    return problems
