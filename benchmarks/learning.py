"""How close allocation policies get to the best arm per segment: the `learning` benchmark (issue 9).

Setup: the example campaign (`campaigns/brightwave_close.yaml`), 60 days at 180 leads a day,
5 seeds, no Dagster. Each day:

1. Leads come from the sample generator (seeded per benchmark seed, no planted defects)
   through the real intake validation, which gives them their segment and lead id.
2. The policy sees what the line's assign stage would see that morning (the same shape as
   `segment_arm_performance`): per segment and arm, the sends made before the day and the
   replies, positive replies, unsubscribes and complaints whose events occurred by the day
   (the observe stage imports a day's events before the assign stage runs).
3. The policy assigns the day's leads:
   - `uniform` and `thompson_v1` (the old line's `thompson-floor-v1` on raw replies) give
     shares over the spec-only plan's arms (segment x angle x prompt version), and
     `assignment.policy.assign_leads` draws each lead's arm;
   - `loop_v2` is the new loop, the line's own code (`learning_loop.LoopPolicy`): the decision
     step on the running prompt experiment (draft-v2 against the champion draft-v1), then
     `improve.allocation` (Thompson on positive replies per angle, the experiment's split,
     the 5% holdout on the frozen uniform baseline).
4. Every lead is sent a clean message (gating is out of scope here) and the simulated market
   answers with its own event simulation (`SimulatedMarket.simulate`, the code `receive`
   runs): the same draws, delays (replies over days +1..+7) and bounces the line would get.

Score (`<policy>_share`; `oracle_share_last_week` is the new loop's): for the last 7 days'
assignments, holdout leads included, the expected positive replies per send under the
market's hidden model (the benchmark-only oracle `expected_outcomes`) as a share of what the
best arm per segment would earn on the same leads.

Trap arms: an arm that earns more replies than its segment's best arm but fewer positive
replies. `trap_arm_share_<policy>` is the share of last-week traffic a policy gives them.
`trap_promotions` counts, per policy, the (seed, segment) pairs whose most-assigned arm of the
last week is a trap arm (the arm the policy settled on), plus, for the new loop, experiments
that promoted a challenger earning fewer positive replies than its control under the hidden
model.

A/A experiments (`aa_*`, see `learning_aa`): how often the decision rule, looked at daily,
promotes a challenger identical to its control. `gap_*` and `loop_v2_ceiling_*` say where the
loop's remaining distance to the oracle is (see `loop_ceilings` and `gap_figures`).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Protocol

import pandas as pd

from benchmarks.learning_aa import outcome_rates, run_aa
from benchmarks.learning_loop import LoopPolicy
from factory_dagster.assignment.policy import arm_id, arm_shares, assign_leads, candidate_arms
from factory_dagster.campaign.spec import CampaignSpec, load_spec
from factory_dagster.improve.stats import planned_sample_size
from factory_dagster.intake.sample_leads import ROLES_BY_SENIORITY, generate_leads
from factory_dagster.intake.validation import validate_leads
from factory_dagster.learning.marts import LEAD_ATTRIBUTES
from factory_dagster.market.simulated import SimulatedMarket
from factory_dagster.models.registry import load_registry
from factory_dagster.models.routing import resolve_routes, with_served_models
from factory_dagster.planning.fallback import spec_only_plan
from factory_dagster.settings import DEFAULT_SPEC_PATH

START = date(2026, 3, 2)
DAYS = 60
LEADS_PER_DAY = 180
SEEDS = (1, 2, 3, 4, 5)
LAST_DAYS = 7
REPLY_EVENTS = ("replied", "positive_reply")
# Outcome counts in the performance a policy sees, and the event types that make them.
COUNTED: dict[str, tuple[str, ...]] = {
    "replies": REPLY_EVENTS,
    "positive_replies": ("positive_reply",),
    "unsubscribes": ("unsubscribed",),
    "complaints": ("complained",),
}
LOOP_COLUMNS = ("holdout", "experiment_id", "experiment_arm", "split_experiment_id", "split_arm", "part")  # kept when set
LEAD_COLUMNS = ("lead_id", "segment", *LEAD_ATTRIBUTES)  # what a policy sees of a lead (a split reads the attributes)
TRAP_PROMOTIONS = (
    "per policy: (seed, segment) pairs whose most-assigned arm in the last week is a trap arm (more replies, "
    "fewer positive replies than the segment's best), plus for loop_v2 experiments that promoted a challenger "
    "with fewer positive replies than its control under the hidden model"
)

SENIORITIES = tuple(ROLES_BY_SENIORITY)
ShareRule = Callable[[pd.DataFrame, pd.DataFrame, CampaignSpec, date], pd.DataFrame]


class Policy(Protocol):
    """What the simulation asks a policy each morning: assign the day's leads from what is known."""

    def assign(self, leads: pd.DataFrame, performance: pd.DataFrame, log: pd.DataFrame, day: date) -> pd.DataFrame: ...


def uniform_policy(arms: pd.DataFrame, performance: pd.DataFrame, spec: CampaignSpec, day: date) -> pd.DataFrame:
    """Every arm of a segment gets the same share: the no-learning baseline."""
    k = arms.groupby("segment")["arm_id"].transform("size")
    return arms.assign(share=1 / k, reason="uniform: 1/K")


def thompson_v1_policy(arms: pd.DataFrame, performance: pd.DataFrame, spec: CampaignSpec, day: date) -> pd.DataFrame:
    """The old line's `thompson-floor-v1` on raw replies (still `assignment.policy.arm_shares`)."""
    return arm_shares(arms, performance, spec, day)


@dataclass
class SharePolicy:
    """A stateless share rule over the spec's arms, drawn per lead by `assignment.policy.assign_leads`."""

    rule: ShareRule
    spec: CampaignSpec

    def assign(self, leads: pd.DataFrame, performance: pd.DataFrame, log: pd.DataFrame, day: date) -> pd.DataFrame:
        arms = candidate_arms(spec_only_plan(self.spec), self.spec)
        return assign_leads(leads, self.rule(arms, performance, self.spec, day), day)


POLICIES: dict[str, Callable[[CampaignSpec], Policy]] = {
    "uniform": lambda spec: SharePolicy(uniform_policy, spec),
    "thompson_v1": lambda spec: SharePolicy(thompson_v1_policy, spec),
    "loop_v2": lambda spec: LoopPolicy(spec, START),
}


@dataclass(frozen=True)
class Truth:
    """The hidden model's expectations per (segment, seniority, arm_id), read once through the oracle.

    Why seniority: the market answers some segments' leads by it (`SUBGROUP_RESPONSE`), so a lead's
    expected outcome depends on it; the oracle stays the issue's, the best single arm per segment,
    chosen for the segment's own leads. Trap arms are read on the segment's cells (no subgroup).
    """

    positive: dict[tuple[str, str, str], float]
    reply: dict[tuple[str, str, str], float]
    traps: frozenset[tuple[str, str]]
    cells: dict[tuple[str, str], float]  # (segment, arm_id) -> positive rate of the segment's cell (no subgroup)

    def value(self, leads: pd.DataFrame, arm_ids: pd.Series | list[str], of: str = "positive") -> float:
        table = self.positive if of == "positive" else self.reply
        return sum(table[key] for key in zip(leads["segment"], leads["seniority"], arm_ids, strict=True))

    def oracle(self, leads: pd.DataFrame, of: str = "positive") -> float:
        """What the best single arm of each segment, chosen for these leads, would earn on them."""
        table = self.positive if of == "positive" else self.reply
        total = 0.0
        for segment, group in leads.groupby("segment"):
            counts = group["seniority"].value_counts()
            arms = {arm for (seg, _, arm) in table if seg == segment}
            total += max(sum(n * table[segment, level, arm] for level, n in counts.items()) for arm in arms)
        return total


def hidden_truth(market: SimulatedMarket, arms: pd.DataFrame) -> Truth:
    """Expected positive and reply rates per segment, seniority and arm, and the trap arms."""
    positive, reply, cells = {}, {}, {}
    for arm in arms.itertuples():
        for level in SENIORITIES:
            outcomes = market.expected_outcomes(arm.segment, arm.angle, arm.prompt_version, lead={"seniority": level})
            positive[arm.segment, level, arm.arm_id] = outcomes["positive_reply"]
            reply[arm.segment, level, arm.arm_id] = outcomes["replied"]
        cells[arm.segment, arm.arm_id] = market.expected_outcomes(arm.segment, arm.angle, arm.prompt_version)
    segments = set(arms["segment"])
    best = {s: max((k for k in cells if k[0] == s), key=lambda k: cells[k]["positive_reply"]) for s in segments}
    traps = frozenset(
        key
        for key, cell in cells.items()
        if cell["replied"] > cells[best[key[0]]]["replied"] and cell["positive_reply"] < cells[best[key[0]]]["positive_reply"]
    )
    return Truth(positive, reply, traps, {key: cell["positive_reply"] for key, cell in cells.items()})


def daily_leads(spec: CampaignSpec, seed: int) -> list[pd.DataFrame]:
    """Each day's accepted leads (email, first name, LEAD_COLUMNS), through real intake."""
    known: set[str] = set()
    days = []
    for offset in range(DAYS):
        raw = generate_leads(START + timedelta(days=offset), LEADS_PER_DAY, seed=seed, defect_rate=0.0)
        raw = raw.assign(source_file=f"leads_{offset}.csv", source_row=range(1, len(raw) + 1))
        accepted, _ = validate_leads(raw, spec, known)
        known |= set(accepted["email"])
        days.append(accepted[["email", "first_name", *LEAD_COLUMNS]].reset_index(drop=True))
    return days


def known_performance(log: pd.DataFrame, day: date) -> pd.DataFrame:
    """What the assign stage knows on `day`: sends before it, outcomes that occurred by it."""
    if log.empty:
        return pd.DataFrame(columns=["segment", "arm_id", "angle", "sends", *COUNTED])
    before = log[log["sent_day"] < day]
    counts = before.assign(**{name: before[f"{name}_day"].le(day) for name in COUNTED})
    grouped = counts.groupby(["segment", "arm_id"], as_index=False)
    return grouped.agg(angle=("angle", "first"), sends=("send_id", "size"), **{n: (n, "sum") for n in COUNTED})


def send_frame(assigned: pd.DataFrame, leads: pd.DataFrame, spec: CampaignSpec, day: date, seed: int) -> pd.DataFrame:
    """The day's sends as the market receives them: one clean message per assigned lead."""
    sends = assigned.merge(leads[["lead_id", "email", "first_name", *LEAD_ATTRIBUTES]], on="lead_id")
    body = "\n\n".join(["Hi {name},", spec.required.call_to_action, spec.required.unsubscribe_footer])
    return sends.assign(
        send_id=[f"bench{seed}_{lead_id}" for lead_id in sends["lead_id"]],
        sent_day=day,
        to_email=sends["email"],
        subject="Month-end close",
        body=[body.format(name=name) for name in sends["first_name"]],
    )


def outcome_days(sends: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Per send, the day each counted outcome first occurred (NaT when it never does)."""
    events = events.assign(day=events["occurred_at"].dt.normalize())
    columns = ["send_id", "sent_day", "segment", "arm_id", "angle", "prompt_version", *LEAD_ATTRIBUTES, *LOOP_COLUMNS]
    out = sends[[c for c in columns if c in sends.columns]].copy()
    out["sent_day"] = pd.to_datetime(out["sent_day"])
    for name, types in COUNTED.items():
        first = events[events["event_type"].isin(types)].groupby("send_id")["day"].min()
        out[f"{name}_day"] = out["send_id"].map(first)
    return out


def simulate(policy: Policy, spec: CampaignSpec, market: SimulatedMarket, leads: list[pd.DataFrame], seed: int) -> pd.DataFrame:
    """Run `policy` for DAYS days; return every assignment with its day."""
    log = pd.DataFrame()
    assignments = []
    for offset, day_leads in enumerate(leads):
        day = START + timedelta(days=offset)
        assigned = policy.assign(day_leads[list(LEAD_COLUMNS)], known_performance(log, pd.Timestamp(day)), log, day)
        sends = send_frame(assigned, day_leads, spec, day, seed)
        log = pd.concat([log, outcome_days(sends, market.simulate(sends))], ignore_index=True)
        assignments.append(assigned.merge(day_leads[["lead_id", "seniority"]], on="lead_id").assign(day=day))
    return pd.concat(assignments, ignore_index=True)


def last_week(assignments: pd.DataFrame) -> pd.DataFrame:
    return assignments[assignments["day"] > START + timedelta(days=DAYS - LAST_DAYS - 1)]


def last_week_scores(assignments: pd.DataFrame, truth: Truth) -> dict[str, float]:
    """The last days' expected positive (and reply) rate as a share of the oracle, trap traffic, and
    the trap arms the policy settled on (each segment's most-assigned arm of the week)."""
    last = last_week(assignments)
    traps = pd.Series(list(zip(last["segment"], last["arm_id"], strict=True))).isin(truth.traps)
    settled = last.groupby(["segment", "arm_id"]).size().groupby(level="segment").idxmax()
    return {
        "share": truth.value(last, last["arm_id"]) / truth.oracle(last),
        "reply_share": truth.value(last, last["arm_id"], "reply") / truth.oracle(last, "reply"),
        "trap_arm_share": float(traps.mean()),
        "settled_on_trap": sum(key in truth.traps for key in settled),
    }


def loop_ceilings(assignments: pd.DataFrame, truth: Truth, spec: CampaignSpec) -> dict[str, float]:
    """Where the loop's last-week score could be at most, as shares of the oracle, to show where the gap is.

    `perfect_angles`: every loop lead on its segment's best angle (for the segment's leads, as the
    oracle picks it), prompt versions and models as the loop drew them (experiment split and holdout
    kept): the best one allocation per segment can do before a promotion. `perfect_angles_promoted`:
    every loop lead on the oracle's arm, as if the prompt challenger had been promoted (holdout still
    uniform).
    """
    last = last_week(assignments)
    loop = last[~last["holdout"].astype(bool)]
    held = last[last["holdout"].astype(bool)]
    angles = [a.name for a in spec.angles]
    angles_only = truth.value(held, held["arm_id"])
    for _, group in loop.groupby("segment"):
        angles_only += max(
            truth.value(
                group, [arm_id(angle, pv, model) for pv, model in zip(group["prompt_version"], group["model"], strict=True)]
            )
            for angle in angles
        )
    promoted = truth.value(held, held["arm_id"]) + truth.oracle(loop)
    oracle = truth.oracle(last)
    return {"perfect_angles": angles_only / oracle, "perfect_angles_promoted": promoted / oracle}


def run() -> dict:
    started = time.perf_counter()
    # As the stages see it: each stage routed to the model that serves it (offline, no key).
    base = load_spec(DEFAULT_SPEC_PATH)
    spec = with_served_models(base, resolve_routes(base, load_registry(), {}))
    per_seed: dict[str, list[dict[str, float]]] = {name: [] for name in POLICIES}
    ceilings, loop_decisions = [], []
    with tempfile.TemporaryDirectory(prefix="factory-learning-") as tmp:
        for seed in SEEDS:
            market = SimulatedMarket(Path(tmp) / f"market-{seed}", seed=seed)
            truth = hidden_truth(market, candidate_arms(spec_only_plan(spec), spec))
            leads = daily_leads(spec, seed)
            for name, make in POLICIES.items():
                policy = make(spec)
                assignments = simulate(policy, spec, market, leads, seed)
                per_seed[name].append(last_week_scores(assignments, truth))
                if isinstance(policy, LoopPolicy):
                    ceilings.append(loop_ceilings(assignments, truth, spec))
                    loop_decisions.append(policy_outcome(policy, truth, spec))
    figures: dict = {
        "days": DAYS,
        "leads_per_day": LEADS_PER_DAY,
        "seeds": list(SEEDS),
        "last_days": LAST_DAYS,
        "outcomes": "the market's own event simulation (SimulatedMarket.simulate), known on the day they occur",
        "trap_arms": sorted(f"{segment}: {arm}" for segment, arm in truth.traps),
    }
    for name, scores in per_seed.items():
        figures.update(policy_figures(name, scores))
    figures["oracle_share_last_week"] = figures["loop_v2_share"]
    # The key holds the new loop's count; the old policy's and the definition sit beside it.
    figures["trap_promotions"] = sum(s["settled_on_trap"] for s in per_seed["loop_v2"]) + sum(
        d["trap_promotions"] for d in loop_decisions
    )
    figures["trap_promotions_thompson_v1"] = sum(s["settled_on_trap"] for s in per_seed["thompson_v1"])
    figures["trap_promotions_out_of"] = len(SEEDS) * len(spec.segments)
    figures["trap_promotions_definition"] = TRAP_PROMOTIONS
    figures["loop_v2_experiments"] = loop_decisions
    for key in ("perfect_angles", "perfect_angles_promoted"):
        figures[f"loop_v2_ceiling_{key}"] = round(sum(c[key] for c in ceilings) / len(ceilings), 4)
    figures.update(gap_figures(spec, truth))
    figures.update(run_aa(spec, outcome_rates(market, spec), START, DAYS, LEADS_PER_DAY))
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    return figures


def gap_figures(spec: CampaignSpec, truth: Truth) -> dict[str, float | int]:
    """What promoting the better prompt version takes: its true lift, the sends per arm a test
    needs to confirm it, and what one experiment at the spec's challenger share gets in DAYS days."""
    control, challenger = spec.drafting.prompt_versions[:2]
    model = spec.routing["draft"]
    segments = [s.name for s in spec.segments]
    best = {seg: max(truth.cells[seg, arm_id(a.name, control, model)] for a in spec.angles) for seg in segments}
    base = sum(best.values()) / len(best)
    segment, angle = next(iter(best)), spec.angles[0].name  # the market's prompt lift is the same in every cell
    lift = truth.cells[segment, arm_id(angle, challenger, model)] / truth.cells[segment, arm_id(angle, control, model)] - 1
    per_day = LEADS_PER_DAY * (1 - spec.improve.holdout_share) * spec.improve.challenger_share
    needed = planned_sample_size(base, lift)
    return {
        "gap_challenger_true_lift": round(lift, 4),
        "gap_base_positive_rate": round(base, 5),
        "gap_sends_per_arm_to_confirm": needed,
        "gap_challenger_mature_sends_in_run": int(per_day * (DAYS - spec.improve.outcome_window_days)),
        "gap_days_to_confirm_at_this_volume": int(needed / per_day) + spec.improve.outcome_window_days,
    }


def policy_outcome(policy: LoopPolicy, truth: Truth, spec: CampaignSpec) -> dict[str, object]:
    """What the loop's experiments came to, and how many promoted a winner worse than its control under the truth."""
    model = spec.routing["draft"]
    worse = sum(
        any(
            truth.cells[segment.name, arm_id(angle.name, d["winner"], model)]
            < truth.cells[segment.name, arm_id(angle.name, d["control"], model)]
            for segment in spec.segments
            for angle in spec.angles
        )
        for d in policy.decisions
        if d["winner"] is not None and d["kind"] == "prompt_version"
    )
    return {
        "states": {e.experiment_id: e.state for e in policy.experiments},
        "decisions": policy.decisions,
        "trap_promotions": worse,
        "champions": dict(policy.state.champions),
        "splits": dict(policy.state.splits),
    }


def policy_figures(name: str, scores: list[dict[str, float]]) -> dict[str, float | list[float]]:
    """Means over seeds and the per-seed lists, under the result keys the issue names."""
    figures: dict[str, float | list[float]] = {}
    for metric, key in (
        ("share", f"{name}_share"),
        ("reply_share", f"{name}_reply_share"),
        ("trap_arm_share", f"trap_arm_share_{name}"),
    ):
        values = [round(s[metric], 4) for s in scores]
        figures[key] = round(sum(values) / len(values), 4)
        figures[f"{key}_per_seed"] = values
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
