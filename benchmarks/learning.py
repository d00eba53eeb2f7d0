"""How close allocation policies get to the best arm per segment: the `learning` benchmark (issue 9).

Setup: the example campaign (`campaigns/brightwave_close.yaml`), 60 days at 180 leads a day,
5 seeds, no Dagster. Each day:

1. Leads come from the sample generator (seeded per benchmark seed, no planted defects)
   through the real intake validation, which gives them their segment and lead id.
2. The policy sees what the line's assign stage would see that morning (the same shape as
   `segment_arm_performance`): per segment and arm, the sends made before the day and the
   replies whose events occurred by the day (the observe stage imports a day's events before
   the assign stage runs). Positive replies, unsubscribes and complaints are counted the
   same way, for policies that use them.
3. The policy returns shares per (segment, arm) over `candidate_arms` of the spec-only plan
   (every segment x angle x prompt version), and the line's own `assign_leads` draws each
   lead's arm from them.
4. Every lead is sent a clean message (gating is out of scope here) and the simulated market
   answers with its own event simulation (`SimulatedMarket.simulate`, the code `receive`
   runs): the same draws, delays (replies over days +1..+7) and bounces the line would get.

Score: for the last 7 days' assignments, the expected positive replies per send under the
market's hidden model (the benchmark-only oracle `expected_positive_rate`) as a share of
what the best arm per segment would earn on the same leads. A trap arm is one that earns
more replies than its segment's best arm but fewer positive replies; the benchmark reports
the share of last-week traffic each policy gives them.

A new policy plugs in as one more `POLICIES` entry: a function (arms, performance, spec,
day) -> arms with `share` and `reason`.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from factory_dagster.assignment.policy import arm_shares, assign_leads, candidate_arms
from factory_dagster.campaign.spec import CampaignSpec, load_spec
from factory_dagster.intake.sample_leads import generate_leads
from factory_dagster.intake.validation import validate_leads
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

Policy = Callable[[pd.DataFrame, pd.DataFrame, CampaignSpec, date], pd.DataFrame]


def uniform_policy(arms: pd.DataFrame, performance: pd.DataFrame, spec: CampaignSpec, day: date) -> pd.DataFrame:
    """Every arm of a segment gets the same share: the no-learning baseline."""
    k = arms.groupby("segment")["arm_id"].transform("size")
    return arms.assign(share=1 / k, reason="uniform: 1/K")


def thompson_v1_policy(arms: pd.DataFrame, performance: pd.DataFrame, spec: CampaignSpec, day: date) -> pd.DataFrame:
    """The line's `thompson-floor-v1` on raw replies, the very function the assign stage calls."""
    return arm_shares(arms, performance, spec, day)


POLICIES: dict[str, Policy] = {"uniform": uniform_policy, "thompson_v1": thompson_v1_policy}


@dataclass(frozen=True)
class Truth:
    """The hidden model's expectations per (segment, arm_id), read once through the oracle."""

    positive: dict[tuple[str, str], float]
    reply: dict[tuple[str, str], float]
    best_positive: dict[str, float]
    best_reply: dict[str, float]
    traps: frozenset[tuple[str, str]]


def hidden_truth(market: SimulatedMarket, arms: pd.DataFrame) -> Truth:
    """Expected positive and reply rates per arm, the best per segment, and the trap arms."""
    positive, reply = {}, {}
    for arm in arms.itertuples():
        outcomes = market.expected_outcomes(arm.segment, arm.angle, arm.prompt_version)
        positive[arm.segment, arm.arm_id] = outcomes["positive_reply"]
        reply[arm.segment, arm.arm_id] = outcomes["replied"]
    segments = set(arms["segment"])
    best_positive = {s: max(v for (seg, _), v in positive.items() if seg == s) for s in segments}
    best_reply = {s: max(v for (seg, _), v in reply.items() if seg == s) for s in segments}
    champion = {s: max((k for k in positive if k[0] == s), key=positive.__getitem__) for s in segments}
    traps = frozenset(key for key in positive if reply[key] > reply[champion[key[0]]] and positive[key] < best_positive[key[0]])
    return Truth(positive, reply, best_positive, best_reply, traps)


def daily_leads(spec: CampaignSpec, seed: int) -> list[pd.DataFrame]:
    """Each day's accepted leads (lead_id, email, first_name, segment), through real intake."""
    known: set[str] = set()
    days = []
    for offset in range(DAYS):
        raw = generate_leads(START + timedelta(days=offset), LEADS_PER_DAY, seed=seed, defect_rate=0.0)
        raw = raw.assign(source_file=f"leads_{offset}.csv", source_row=range(1, len(raw) + 1))
        accepted, _ = validate_leads(raw, spec, known)
        known |= set(accepted["email"])
        days.append(accepted[["lead_id", "email", "first_name", "segment"]].reset_index(drop=True))
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
    sends = assigned.merge(leads[["lead_id", "email", "first_name"]], on="lead_id")
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
    out = sends[["send_id", "sent_day", "segment", "arm_id", "angle", "prompt_version"]].copy()
    out["sent_day"] = pd.to_datetime(out["sent_day"])
    for name, types in COUNTED.items():
        first = events[events["event_type"].isin(types)].groupby("send_id")["day"].min()
        out[f"{name}_day"] = out["send_id"].map(first)
    return out


def simulate(policy: Policy, spec: CampaignSpec, market: SimulatedMarket, leads: list[pd.DataFrame], seed: int) -> pd.DataFrame:
    """Run `policy` for DAYS days; return every assignment with its day."""
    arms = candidate_arms(spec_only_plan(spec), spec)
    log = pd.DataFrame()
    assignments = []
    for offset, day_leads in enumerate(leads):
        day = START + timedelta(days=offset)
        shares = policy(arms, known_performance(log, pd.Timestamp(day)), spec, day)
        assigned = assign_leads(day_leads[["lead_id", "segment"]], shares, day)
        sends = send_frame(assigned, day_leads, spec, day, seed)
        log = pd.concat([log, outcome_days(sends, market.simulate(sends))], ignore_index=True)
        assignments.append(assigned.assign(day=day))
    return pd.concat(assignments, ignore_index=True)


def last_week_scores(assignments: pd.DataFrame, truth: Truth) -> dict[str, float]:
    """The last days' expected positive (and reply) rate as a share of the oracle, and trap traffic."""
    last = assignments[assignments["day"] > START + timedelta(days=DAYS - LAST_DAYS - 1)]
    keys = list(zip(last["segment"], last["arm_id"], strict=True))
    positive = sum(truth.positive[k] for k in keys)
    reply = sum(truth.reply[k] for k in keys)
    return {
        "share": positive / sum(truth.best_positive[s] for s in last["segment"]),
        "reply_share": reply / sum(truth.best_reply[s] for s in last["segment"]),
        "trap_arm_share": sum(k in truth.traps for k in keys) / len(keys),
    }


def run() -> dict:
    started = time.perf_counter()
    # As the stages see it: each stage routed to the model that serves it (offline, no key).
    base = load_spec(DEFAULT_SPEC_PATH)
    spec = with_served_models(base, resolve_routes(base, load_registry(), {}))
    per_seed: dict[str, list[dict[str, float]]] = {name: [] for name in POLICIES}
    with tempfile.TemporaryDirectory(prefix="factory-learning-") as tmp:
        for seed in SEEDS:
            market = SimulatedMarket(Path(tmp) / f"market-{seed}", seed=seed)
            truth = hidden_truth(market, candidate_arms(spec_only_plan(spec), spec))
            leads = daily_leads(spec, seed)
            for name, policy in POLICIES.items():
                per_seed[name].append(last_week_scores(simulate(policy, spec, market, leads, seed), truth))
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
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    return figures


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
