"""Policy `loop-v2`: how the assign stage runs the loop, as pure functions the line and the benchmark share.

Each lead of a segment goes through three steps, each for a reason:

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
3. **Experiment arms** (`split_layer`, `segment_traffic`, `hook_layer`), in four independent layers
   (`Experiment.layer`):
   - split: outside experiments the segment is allocated as one, or by the parts of the split rule
     the loop promoted (loop state splits: each part's angle shares from its own leads' sends);
     while a `segment_split` experiment runs, control leads get the pooled angle shares and
     challenger leads their part's (`part_performance`, `splits.part_segment`);
   - message: outside experiments the segment's champion prompt version (loop state); while a
     `prompt_version` experiment runs in the segment, its arms split the segment's loop leads
     exactly as `decisions.planned_shares` says (control = the champion);
   - routing: outside canaries the loop's draft model (loop state routing, else the spec's); while a
     draft-stage `routing` canary runs, its models split the leads the same way.
   - hook: per (segment, angle), outside experiments the champion hook (loop state hooks; else the
     day's plan hook); while a `hook` experiment of that angle runs in the segment, its hooks split
     the angle's leads (`hook_version` names the hook drafting uses).
   The split arm, the angle, the message arm, the model and the hook are independent draws, so every
   arm of one layer is compared on the same mix of the other layers' arms.

A loop lead's propensity is split share x angle share x arm share x routing share x hook share; a
holdout lead's is 1/K.
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
from factory_dagster.improve.splits import POOLED, SplitRule, part_segment
from factory_dagster.improve.stats import binomial_p_value
from factory_dagster.improve.versions import PLAN_HOOK, LoopState
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
    "hook_experiment_id",
    "hook_arm",
    "hook_share",
    "hook_version",
    "split_experiment_id",
    "split_arm",
    "split_share",
    "split_rule",
    "part",
    "share",
    "policy_version",
    "reason",
]


def stable_unit(*parts: object) -> float:
    """A uniform draw in [0, 1) fixed by `parts` (no random state: re-runs draw the same)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big") / 2**64


def is_holdout(campaign_id: str, lead_id: str, share: float) -> bool:
    """Whether the lead belongs to the campaign's holdout: a hash, so sticky and blind to the loop."""
    return stable_unit("holdout", campaign_id, lead_id) < share


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
        rng = np.random.default_rng(int(stable_unit(POLICY_VERSION, day, segment) * 2**63))
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
    """Kinds the assign stage can give traffic: prompt versions, hooks, segment splits, and routing of the draft stage."""
    if experiment.kind in ("prompt_version", "hook", "segment_split"):
        return True
    return experiment.kind == "routing" and experiment.motivating_figures.get("stage", ROUTED_STAGE) == ROUTED_STAGE


def _layer(
    layer: str,
    segment: str,
    default: TrafficArm,
    running: Iterable[Experiment],
    serve: Callable[[str], str],
    angle: str | None = None,
) -> Layer:
    """The oldest running experiment of the layer in the segment (for the hook layer: of `angle`), split as
    planned; else the default arm."""
    mine = sorted(
        (
            e
            for e in running
            if e.state == "running"
            and e.layer == layer
            and segment in e.target_segments
            and runs_in_assign(e)
            and (layer != "hook" or e.motivating_figures.get("angle") == angle)
        ),
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


def hook_layer(segment: str, angle: str, champion_hook: str, running: Iterable[Experiment]) -> Layer:
    """The hooks of (segment, angle): its champion (a hook version, or the plan's hook of the day), or the
    oldest running hook experiment of that angle in the segment with its planned split."""
    return _layer("hook", segment, TrafficArm(None, champion_hook, 1.0), running, lambda name: name, angle)


def _hook_version(name: str) -> str | None:
    """The assignments' hook_version of a hook arm: None for the plan's hook of the day."""
    return None if name == PLAN_HOOK else name


# ---------------------------------------------------------------- the day's allocation


def split_rules(state: LoopState, running: Iterable[Experiment]) -> dict[str, SplitRule]:
    """Segment -> the split rule its parts learn under today: a running split experiment's challenger,
    else the split the loop promoted; segments without one are allocated as one."""
    rules = {segment: SplitRule.from_name(name) for segment, name in state.splits.items()}
    for experiment in running:
        if experiment.state == "running" and experiment.kind == "segment_split":
            rules.update({segment: SplitRule.from_name(experiment.challengers[0]) for segment in experiment.target_segments})
    return rules


def split_layer(segment: str, state: LoopState, running: Iterable[Experiment]) -> Layer:
    """How the segment's loop leads choose their angles: pooled or by the promoted split, or the running
    split experiment's arms (control pooled, challenger by its rule's parts) with its planned split."""
    default = TrafficArm(None, state.splits.get(segment, POOLED), 1.0)
    return _layer("split", segment, default, running, lambda name: name)


def allocate(
    plan: pd.DataFrame,
    performance: pd.DataFrame,
    spec: CampaignSpec,
    state: LoopState,
    running: Sequence[Experiment],
    day: date,
    serve: Callable[[str], str] = lambda name: name,
    part_performance: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every (segment, arm) a lead may get today, loop rows (`loop-v2`) and holdout rows, with shares.

    Within each segment (each part of a split segment: `part` "in" or "out") the loop rows' shares sum
    to 1 (split share x angle share x arm share x routing share x hook share), and so do the holdout
    rows'; `share` is the propensity of a lead of that population drawing the row. `part_performance`
    holds the performance of split segments' parts, under `splits.part_segment` names.
    """
    angles = angle_shares(plan, performance, spec, day)
    rules = split_rules(state, running)
    parts = _part_angles(plan, part_performance, rules, spec, day)
    draft_model = stage_model(ROUTED_STAGE, state.routing, spec, serve)
    rows = []
    for segment, group in angles.groupby("segment", sort=True):
        traffic = segment_traffic(segment, state.champions[segment], draft_model, running, serve)
        split, rule = split_layer(segment, state, running), rules.get(segment)
        for part in ("in", "out") if rule is not None else (None,):
            for chooser in split.arms:
                own = chooser.serves != POOLED and part is not None
                choices = parts[part_segment(segment, part)] if own else group
                for angle in choices.itertuples():
                    rows += [
                        row
                        | {
                            "segment": segment,
                            "split_experiment_id": split.experiment_id,
                            "split_arm": chooser.experiment_arm,
                            "split_share": chooser.share,
                            "split_rule": rule.name if rule is not None else None,
                            "part": part,
                            "share": chooser.share * row["share"],
                            "reason": f"{row['reason']}; angles: {split.note}"
                            + (f", lead in part {part}" if part else "")
                            + (
                                f"; x split share {chooser.share:.2f} = {chooser.share * row['share']:.4f}"
                                if chooser.share != 1
                                else ""
                            ),
                        }
                        for row in _angle_rows(angle, segment, state, traffic, running)
                    ]
        rows += _holdout_rows(group, spec)
    return pd.DataFrame(rows, columns=ALLOCATION_COLUMNS)


def _part_angles(
    plan: pd.DataFrame, performance: pd.DataFrame | None, rules: Mapping[str, SplitRule], spec: CampaignSpec, day: date
) -> dict[str, pd.DataFrame]:
    """part segment name -> its angle shares, learned from its own leads' sends only."""
    if not rules:
        return {}
    mine = plan[plan["segment"].isin(rules)]
    part_plan = pd.concat([mine.assign(segment=mine["segment"].map(lambda s, p=p: part_segment(s, p))) for p in ("in", "out")])
    known = performance if performance is not None else pd.DataFrame()
    return dict(tuple(angle_shares(part_plan, known, spec, day).groupby("segment")))


def _angle_rows(angle: Any, segment: str, state: LoopState, traffic: SegmentTraffic, running: Sequence[Experiment]) -> list[dict]:
    """The rows of one angle: every prompt arm x model x hook, with the product of their shares."""
    message, routing = traffic.message, traffic.routing
    hooks = hook_layer(segment, angle.angle, state.hook(segment, angle.angle), running)
    rows = []
    for arm in message.arms:
        for route in routing.arms:
            for hook in hooks.arms:
                share = angle.angle_share * arm.share * route.share * hook.share
                rows.append(
                    _row(angle, arm.serves, route.serves, False, message.experiment_id, arm.experiment_arm)
                    | {
                        "routing_experiment_id": routing.experiment_id,
                        "routing_arm": route.experiment_arm,
                        "arm_share": arm.share,
                        "routing_share": route.share,
                        "hook_experiment_id": hooks.experiment_id,
                        "hook_arm": hook.experiment_arm,
                        "hook_share": hook.share,
                        "hook_version": _hook_version(hook.serves),
                        "share": share,
                        "policy_version": POLICY_VERSION,
                        "reason": f"{POLICY_VERSION} in segment {segment}: {angle.angle_reason}; prompt: {message.note}; "
                        f"model: {routing.note}; hook: {hooks.note}; propensity = {angle.angle_share:.3f} x "
                        f"{arm.share:.2f} x {route.share:.2f} x {hook.share:.2f} = {share:.4f}",
                    }
                )
    return rows


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
        "hook_experiment_id": None,
        "hook_arm": None,
        "hook_share": 1.0,
        "hook_version": None,
        "split_experiment_id": None,
        "split_arm": None,
        "split_share": 1.0,
        "split_rule": None,
        "part": None,
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
    """One arm per lead: holdout leads uniformly; loop leads by split arm, angle, message arm, model and hook.

    Each level is an independent seeded draw, so every experiment arm sees the same mix of the other
    layers' arms; the propensity is the drawn row's share (the product of the levels'). In a split
    segment a loop lead draws from its own part's rows: `leads` then needs the rule's lead attribute.
    """
    keyed = allocation.assign(part=allocation["part"].fillna(""))
    choices = {key: _Choices(group) for key, group in keyed.groupby(["segment", "holdout", "part"])}
    loop_rules = allocation.loc[~allocation["holdout"].astype(bool), ["segment", "split_rule"]].dropna()
    rules = {
        segment: SplitRule.from_name(rule) for segment, rule in loop_rules.drop_duplicates("segment").itertuples(index=False)
    }
    rows = []
    for lead in leads.itertuples():
        holdout = is_holdout(spec.campaign_id, lead.lead_id, spec.improve.holdout_share)
        part = rules[lead.segment].part(lead._asdict()) if not holdout and lead.segment in rules else ""
        options = choices[(lead.segment, holdout, part)]
        if holdout:
            chosen = options.row(stable_unit(HOLDOUT_POLICY_VERSION, day, lead.lead_id))
        else:
            chosen = options.loop_row(*(stable_unit(POLICY_VERSION, day, lead.lead_id, level) for level in _Choices.LEVELS))
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
                "hook_experiment_id": chosen["hook_experiment_id"],
                "hook_arm": chosen["hook_arm"],
                "hook_version": chosen["hook_version"],
                "split_experiment_id": chosen["split_experiment_id"],
                "split_arm": chosen["split_arm"],
                "part": part or None,
            }
        )
    return pd.DataFrame(rows)


class _Choices:
    """One population's allocation rows (a segment's loop or holdout leads), indexed once for the
    per-lead draws: split arm, angle, prompt version within the angle, model, hook, each level
    drawn by its own uniform from its share column (every row of an option carries that option's share)."""

    # (name of the draw, the columns that tell the level's options apart, the level's share column)
    LEVELS = ("split", "angle", "arm", "route", "hook")
    _KEYS = (
        ("split_arm",),
        ("angle",),
        ("prompt_version", "experiment_arm"),
        ("model", "routing_arm"),
        ("hook_version", "hook_arm"),
    )
    _SHARES = ("split_share", "angle_share", "arm_share", "routing_share", "hook_share")

    def __init__(self, group: pd.DataFrame) -> None:
        self.records = group.to_dict("records")
        self.shares = group["share"].to_numpy(dtype=float)
        self.tree: dict[Any, Any] = {}
        for record in self.records:
            node = self.tree
            for depth, key in enumerate(self._KEYS):
                option = tuple(record[column] for column in key)
                if depth == len(self._KEYS) - 1:
                    node[option] = record
                else:
                    node = node.setdefault(option, {})
        self._options: dict[int, tuple[list, np.ndarray]] = {}

    def row(self, u: float) -> dict:
        return self.records[_pick(self.shares, u)]

    def loop_row(self, *draws: float) -> dict:
        """The row the level-by-level draws pick (one uniform per level, in LEVELS order)."""
        node: Any = self.tree
        for depth, u in enumerate(draws):
            options, shares = self._level(node, depth)
            node = node[options[_pick(shares, u)]]
        return node

    def _level(self, node: dict, depth: int) -> tuple[list, np.ndarray]:
        """A node's options in first-seen order with their shares, computed once per node."""
        if id(node) not in self._options:
            options = list(node)
            column = self._SHARES[depth]
            shares = np.array([_first_record(node[o])[column] for o in options], dtype=float)
            self._options[id(node)] = (options, shares)
        return self._options[id(node)]


def _first_record(node: Any) -> dict:
    while not (isinstance(node, dict) and "arm_id" in node):
        node = next(iter(node.values()))
    return node


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
    keyed = allocation.assign(part=allocation["part"].fillna("") if "part" in allocation else "")
    for (segment, holdout, part), group in keyed.groupby(["segment", "holdout", "part"]):
        population = "holdout" if holdout else f"loop (part {part})" if part else "loop"
        total = group["share"].sum()
        if abs(total - 1) > _TOLERANCE:
            problems.append(f"segment {segment}: {population} shares sum to {total:.6f}, not 1")
        if holdout:
            if group[[ids for ids, _ in LAYER_COLUMNS.values()]].notna().any(axis=None):
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
    "hook": ("hook_experiment_id", "hook_arm"),
    "split": ("split_experiment_id", "split_arm"),
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
    if rows.loc[flagged, [c for c, _ in LAYER_COLUMNS.values() if c in rows]].notna().any(axis=None):
        problems.append("holdout leads were put in an experiment")
    if 0 < share < 1:
        p = binomial_p_value(int(flagged.sum()), len(flagged), share)
        if p < HOLDOUT_SRM_ALPHA:
            problems.append(
                f"holdout share {flagged.mean():.1%} of {len(rows)} leads is implausible at {share:.0%} (p = {p:.2g})"
            )
    return problems
