"""The new loop as a benchmark policy: the line's own allocation (`loop-v2`) and decision code on the market.

Each simulated morning `LoopPolicy` does what the line's improve and assign stages do, in their
order: the decision step looks at every running experiment (`decisions.arm_counts` on the
experiment's mature sends, `decisions.decide_running`, `experiments.conclude`, and on a promotion
`decisions.promoted_state` makes the winner the champion), then `allocation.allocate` and
`allocation.assign_leads` assign the day's leads, holdout included.

The experiments: the one the improve stage proposes first in the line, the spec's second prompt
version (draft-v2) as a challenger of the champion (draft-v1) in every segment, with the spec's
challenger share, auto-approved by the spec's policy and started on the first day (what it is
judged on and its design figures are in `prompt_experiment`); and the segment splits the line's
own statistics propose each morning from the mature sends (`splits.propose_splits`), which need a
person: a benchmark operator approves each at once, as the demo's operator does, and it starts when
its segment's split layer is free. Hook experiments and routing canaries need the language models'
text and the gates, which this benchmark leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.improve.allocation import LAYER_COLUMNS, allocate, split_rules
from factory_dagster.improve.allocation import assign_leads as assign_loop_leads
from factory_dagster.improve.decisions import arm_counts, decide_running, promoted_state
from factory_dagster.improve.evidence import MDE, Evidence
from factory_dagster.improve.experiments import Experiment, auto_approve, conclude, propose, transition
from factory_dagster.improve.metrics import PRIMARY_METRIC, relative_guardrails
from factory_dagster.improve.splits import part_performance, propose_splits
from factory_dagster.improve.versions import LoopState, initial_state
from factory_dagster.planning.fallback import spec_only_plan

# The design the line's proposer gives a prompt challenger before any send is mature: every
# guardrail of the line's rules at its floor, powered for the line's minimum detectable effect
# (draft-v2's hidden lift is +15%).
GUARDRAILS = relative_guardrails({})
STARTER = "benchmark decision step"
OPERATOR = "benchmark operator"
KNOWN = ("replies", "positive_replies", "unsubscribes")


def at_morning(day: date) -> datetime:
    return datetime.combine(day, time(6, 0))


def prompt_experiment(
    spec: CampaignSpec, control: str, challenger: str, day: date, *, base_rate: float, mde: float = MDE
) -> Experiment:
    """A running prompt-version experiment in every segment, approved as the line would (auto, within policy)."""
    proposed = propose(
        campaign_id=spec.campaign_id,
        kind="prompt_version",
        hypothesis=f"{challenger} earns more positive replies per send than {control}",
        control=control,
        challengers=(challenger,),
        target_segments=tuple(s.name for s in spec.segments),
        primary_metric=PRIMARY_METRIC,
        base_rate=base_rate,
        mde=mde,
        guardrails=GUARDRAILS,
        max_traffic_share=spec.improve.challenger_share,
        motivating_figures={"source": "the spec's own prompt versions, not tested yet"},
        proposed_by="benchmark",
        at=at_morning(day),
    )
    approval = auto_approve(proposed, spec.improve.auto_approve, at_morning(day))
    if approval is None:
        raise ValueError(f"the spec's auto-approve policy does not start {proposed.kind} at {proposed.max_traffic_share:.0%}")
    running, _ = transition(approval[0], "running", STARTER, "segment free", {}, at_morning(day))
    return running


def experiment_rows(log: pd.DataFrame, experiment: Experiment, day: date, window_days: int) -> list[dict[str, int]]:
    """Per arm what `int_experiment_arm_counts` holds on `day`: leads assigned before the day, and
    the outcomes of sends at least `window_days` old (all of their outcomes have arrived)."""
    id_column, arm_column = LAYER_COLUMNS[experiment.layer]
    if log.empty or id_column not in log:
        return []
    mine = log[log[id_column].eq(experiment.experiment_id) & log["sent_day"].lt(pd.Timestamp(day))]
    mine = mine.assign(experiment_arm=mine[arm_column])
    mature = mine[mine["sent_day"] <= pd.Timestamp(day - timedelta(days=window_days))]
    known = {
        name: mature[f"{name}_day"].le(pd.Timestamp(day))
        for name in ("replies", "positive_replies", "unsubscribes", "complaints")
    }
    frame = mature.assign(**known, negative_replies=known["replies"] & ~known["positive_replies"])
    counted = frame.groupby("experiment_arm")[["positive_replies", "unsubscribes", "complaints", "negative_replies"]].sum()
    rows = []
    for arm, assigned in mine.groupby("experiment_arm").size().items():
        stats = counted.loc[arm] if arm in counted.index else pd.Series(0, index=counted.columns)
        rows.append(
            {"arm": arm, "assigned": int(assigned), "mature_sends": int((mature["experiment_arm"] == arm).sum())}
            | {name: int(value) for name, value in stats.items()}
        )
    return rows


@dataclass
class LoopPolicy:
    """The line's loop on the simulated market: decide running experiments, then allocate and assign."""

    spec: CampaignSpec
    start: date  # the first day: the experiment starts then
    state: LoopState = field(init=False)
    experiments: list[Experiment] = field(init=False)
    decisions: list[dict[str, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = initial_state(self.spec)
        control, *others = self.spec.drafting.prompt_versions
        self.experiments = [
            prompt_experiment(self.spec, control, challenger, self.start, base_rate=self.spec.allocation.prior_positive_rate)
            for challenger in others[:1]
        ]

    def assign(self, leads: pd.DataFrame, performance: pd.DataFrame, log: pd.DataFrame, day: date) -> pd.DataFrame:
        self.decide(log, day)
        self.propose_and_start_splits(log, day)
        running = [e for e in self.experiments if e.state == "running"]
        rules = split_rules(self.state, running)
        parts = part_performance(known_sends(log, day), rules) if rules else None
        allocation = allocate(spec_only_plan(self.spec), performance, self.spec, self.state, running, day, part_performance=parts)
        return assign_loop_leads(leads, allocation, self.spec, day)

    def propose_and_start_splits(self, log: pd.DataFrame, day: date) -> None:
        """The line's split statistics on the mature sends; the operator approves; a split starts when its layer is free."""
        at = at_morning(day)
        evidence = Evidence(
            day, self.state.champions, {}, tuple(self.experiments), mature_sends(log, day, self.spec), pd.DataFrame(), None
        )
        for proposed in propose_splits(self.spec, evidence, self.state.splits, at):
            approved, _ = transition(proposed, "approved", OPERATOR, "the benchmark approves every split", {}, at)
            self.experiments.append(approved)
        busy = {s for e in self.experiments if e.state == "running" and e.layer == "split" for s in e.target_segments}
        for index, experiment in enumerate(self.experiments):
            if experiment.state == "approved" and not busy & set(experiment.target_segments):
                self.experiments[index], _ = transition(experiment, "running", STARTER, "segment free", {}, at)
                busy |= set(experiment.target_segments)

    def decide(self, log: pd.DataFrame, day: date) -> None:
        """The decision step of the morning, on every running experiment (the line's functions)."""
        for index, experiment in enumerate(self.experiments):
            if experiment.state != "running":
                continue
            rows = experiment_rows(log, experiment, day, self.spec.improve.outcome_window_days)
            days_running = (day - experiment.updated_at.date()).days
            decision = decide_running(experiment, arm_counts(experiment, rows), days_running, day)
            concluded = conclude(experiment, decision, at_morning(day))
            if concluded is None:
                continue
            self.experiments[index] = concluded[0]
            if decision.winner is not None:
                self.state = promoted_state(self.state, experiment, decision.winner) or self.state
            self.decisions.append(
                {
                    "day": day.isoformat(),
                    "experiment": experiment.experiment_id,
                    "kind": experiment.kind,
                    "segments": list(experiment.target_segments),
                    "action": decision.action,
                    "control": experiment.control,
                    "winner": decision.winner,
                    "reasons": list(decision.reasons),
                }
            )


def known_sends(log: pd.DataFrame, day: date) -> pd.DataFrame:
    """Per send before `day`: its lead's attributes and the outcomes known by the day (`known_send_outcomes`' shape)."""
    if log.empty:
        return pd.DataFrame(columns=["segment", "arm_id", "angle", "seniority", *KNOWN])
    before = log[log["sent_day"] < pd.Timestamp(day)]
    return before.assign(**{name: before[f"{name}_day"].le(pd.Timestamp(day)) for name in KNOWN})


def mature_sends(log: pd.DataFrame, day: date, spec: CampaignSpec) -> pd.DataFrame:
    """The sends past the outcome window on `day` with their outcome flags (`evidence.mature_sends`' shape)."""
    flags = {"positive": "positive_replies", "replied": "replies", "unsubscribed": "unsubscribes", "complained": "complaints"}
    if log.empty:
        return pd.DataFrame(columns=["segment", "angle", *flags])
    mature = log[log["sent_day"] <= pd.Timestamp(day - timedelta(days=spec.improve.outcome_window_days))]
    return mature.assign(**{flag: mature[f"{counted}_day"].le(pd.Timestamp(day)) for flag, counted in flags.items()})
