"""The daily decision on one running experiment, as plain functions the line and the benchmark share.

Traffic design (the assign stage follows it): inside each target segment, outside the holdout, the
challengers together get the experiment's `max_traffic_share` of the leads, split evenly, and every
other lead of the segment gets the champion, which is the experiment's control. So the planned
shares the sample-ratio check compares with are {control: 1 - s, each challenger: s / k}.

The line's daily decision step (`run_decision_step`) wraps `decide_running`: it starts approved
experiments (one per segment), reads each running one's counts from
intermediate.int_experiment_arm_counts, stores the look in raw.experiment_looks and concludes the
experiment, with a new loop version when a challenger is promoted, all in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from factory_dagster.improve import store, versions
from factory_dagster.improve.experiments import Experiment, IllegalTransition, conclude
from factory_dagster.improve.metrics import METRIC_COUNTS, METRIC_TRIALS
from factory_dagster.improve.stats import ArmCounts, Count, Decision, StoppingRule, decide, seed_for
from factory_dagster.improve.versions import LoopState
from factory_dagster.warehouse.store import transaction

if TYPE_CHECKING:
    from factory_dagster.campaign.spec import CampaignSpec


def planned_shares(experiment: Experiment) -> dict[str, float]:
    """Each arm's planned share of the target segments' non-holdout leads while the experiment runs."""
    share = experiment.max_traffic_share
    each = share / len(experiment.challengers)
    return {experiment.control: 1.0 - share, **dict.fromkeys(experiment.challengers, each)}


def decide_running(
    experiment: Experiment,
    arms: Sequence[ArmCounts],
    days_running: int,
    look: object,
    *,
    shares: Mapping[str, float] | None = None,
    horizon_reached: bool = False,
) -> Decision:
    """Today's verdict for a running experiment under its own recorded stopping rule.

    `arms` must hold the control and every challenger (an arm with no traffic yet has zero
    counts); `look` (e.g. the day) seeds the Monte Carlo draws, so a re-run decides the same.
    `shares` replaces the design's fixed split for the sample-ratio check where the split moved
    (a content piece's adaptive one); `horizon_reached` makes today the final look (`stats.decide`).
    """
    by_arm: Mapping[str, ArmCounts] = {a.arm: a for a in arms}
    missing = [arm for arm in (experiment.control, *experiment.challengers) if arm not in by_arm]
    if missing:
        raise ValueError(f"experiment {experiment.experiment_id}: no counts for arms {missing}")
    ordered = [by_arm[experiment.control], *(by_arm[c] for c in experiment.challengers)]
    return decide(
        ordered,
        control=experiment.control,
        planned_shares=planned_shares(experiment) if shares is None else shares,
        planned_sample_size=experiment.planned_sample_size,
        base_rate=experiment.base_rate,
        guardrails=experiment.guardrails,
        rule=experiment.stopping_rule,
        days_running=days_running,
        seed=seed_for(experiment.experiment_id, look),
        horizon_reached=horizon_reached,
    )


# ---------------------------------------------------------------- the line's daily decision step

STARTER = "decision step"
# Revises a decision before it is stored (con, spec, experiment, decision, day): the off-policy preflight.
Preflighter = Callable[[duckdb.DuckDBPyConnection, "CampaignSpec", Experiment, Decision, date], Decision]


def arm_counts(experiment: Experiment, rows: Sequence[Mapping[str, Any]]) -> list[ArmCounts]:
    """Every arm's counts for `decide_running`, from its int_experiment_arm_counts rows.

    An arm without a row has no traffic yet (zero counts); each metric's trials are its
    METRIC_TRIALS column (mature sends for outcomes, first-round draft candidates for the gate). A metric the
    warehouse does not count is a ValueError: deciding on a missing metric would read as "no events".
    """
    metrics = (experiment.primary_metric, *(g.metric for g in experiment.guardrails))
    if unknown := [m for m in metrics if m not in METRIC_COUNTS]:
        raise ValueError(
            f"experiment {experiment.experiment_id}: no counts for metrics {unknown} (known: {', '.join(METRIC_COUNTS)})"
        )
    by_arm = {row["arm"]: row for row in rows}
    counts = []
    for arm in (experiment.control, *experiment.challengers):
        row = by_arm.get(arm, {})
        events = {
            metric: Count(int(row.get(METRIC_COUNTS[metric], 0)), int(row.get(METRIC_TRIALS[metric], 0))) for metric in metrics
        }
        guardrails = {g.metric: events[g.metric] for g in experiment.guardrails}
        counts.append(ArmCounts(arm, int(row.get("assigned", 0)), events[experiment.primary_metric], guardrails))
    return counts


def guardrail_status(guardrails: Mapping[str, Mapping[str, Any]], rule: StoppingRule) -> str:
    """A challenger's worst guardrail: breached (rolls back), in_doubt (blocks promotion) or clear."""
    if any(g["breached"] for g in guardrails.values()):
        return "breached"
    if any(g["p_breach"] > rule.promote_max_breach for g in guardrails.values()):
        return "in_doubt"
    return "clear"


# The columns of a look row that compare a challenger with control (null on the control's row).
_COMPARISON_COLUMNS = ("p_better", "expected_loss", "expected_loss_relative", "lift", "lift_low", "lift_high", "guardrail_status")


def look_rows(experiment: Experiment, decision: Decision, *, day: date, run_id: str, at: datetime) -> pd.DataFrame:
    """The `raw.experiment_looks` rows of one look: per arm its posterior and, for challengers,
    the comparison with control, all read from the decision's own evidence (the same draws)."""
    evidence = decision.evidence
    rows = []
    for arm in (experiment.control, *experiment.challengers):
        stats = evidence["arms"][arm]
        versus = evidence["challengers"].get(arm)  # None for the control
        comparison = dict.fromkeys(_COMPARISON_COLUMNS)
        if versus is not None:
            comparison = {
                "p_better": versus["p_better"],
                "expected_loss": versus["expected_loss"],
                "expected_loss_relative": versus["relative_expected_loss"],
                "lift": versus["lift"],
                "lift_low": versus["lift_interval"][0],
                "lift_high": versus["lift_interval"][1],
                "guardrail_status": guardrail_status(versus["guardrails"], experiment.stopping_rule),
            }
        rows.append(
            {
                "experiment_id": experiment.experiment_id,
                "campaign_id": experiment.campaign_id,
                "partition_day": day,
                "run_id": run_id,
                "arm": arm,
                "role": "control" if versus is None else "challenger",
                "assigned": stats["assigned"],
                "mature_sends": stats["mature_sends"],
                "primary_events": stats["events"],
                "posterior_mean": stats["posterior_mean"],
                "interval_low": stats["interval_95"][0],
                "interval_high": stats["interval_95"][1],
                **comparison,
                "guardrails_json": json.dumps(versus["guardrails"] if versus else {}, sort_keys=True),
                "srm_p_value": evidence["srm"]["p_value"],
                "look": evidence.get("look"),
                "days_running": evidence["days_running"],
                "decision": decision.action,
                "reasons": "; ".join(decision.reasons),
                "winner": decision.winner,
                "rule_version": experiment.stopping_rule.version,
                "looked_at": at,
            }
        )
    return pd.DataFrame(rows)


def promoted_state(state: LoopState, experiment: Experiment, winner: str) -> LoopState | None:
    """The loop state after `winner` is promoted: the champion of each target segment (prompt
    versions), the route of the experiment's model stage (routing; `motivating_figures["stage"]`,
    the draft stage by default), the champion hook of the experiment's angle in each target
    segment (hooks; `motivating_figures["angle"]`) or the split rule of each target segment (segment
    splits). None for kinds the loop state does not hold."""
    if experiment.kind == "prompt_version":
        for segment in experiment.target_segments:
            state = state.with_champion(segment, winner)
        return state
    if experiment.kind == "routing":
        return state.with_route(str(experiment.motivating_figures.get("stage", "draft")), winner)
    if experiment.kind == "hook":
        angle = str(experiment.motivating_figures["angle"])
        for segment in experiment.target_segments:
            state = state.with_hook(segment, angle, winner)
        return state
    if experiment.kind == "segment_split" and winner != experiment.control:
        for segment in experiment.target_segments:
            state = state.with_split(segment, winner)
        return state
    return None


@dataclass(frozen=True)
class StepOutcome:
    """What the decision step did with one experiment today, for the asset's metadata and the tests."""

    experiment_id: str
    kind: str
    segments: tuple[str, ...]
    state: str  # after the step
    action: str  # started, waiting, continue, promote, retire, roll_back, already looked, not decided
    detail: str
    version: int | None = None  # the loop version a promotion recorded


def _outcome(experiment: Experiment, action: str, detail: str, version: int | None = None) -> StepOutcome:
    return StepOutcome(
        experiment.experiment_id, experiment.kind, experiment.target_segments, experiment.state, action, detail, version
    )


def start_approved(con: duckdb.DuckDBPyConnection, campaign_id: str, day: date, run_id: str, at: datetime) -> list[StepOutcome]:
    """Start approved experiments, oldest first, at most one running per segment and layer.

    Why one: two experiments of one layer in one segment would split its traffic and each would
    change the other's control; the later one waits, approved, until the segment is free. A routing
    canary and a message experiment are drawn independently (`Experiment.layer`), so they run together.
    """
    running = store.list_experiments(con, campaign_id, ["running"])
    busy = {(e.layer, s): e.experiment_id for e in running for s in e.target_segments}
    outcomes = []
    for experiment in store.list_experiments(con, campaign_id, ["approved"]):
        taken = {s: busy[(experiment.layer, s)] for s in experiment.target_segments if (experiment.layer, s) in busy}
        if taken:
            detail = "waits: " + ", ".join(f"{s} runs {other}" for s, other in taken.items())
            outcomes.append(_outcome(experiment, "waiting", detail))
            continue
        evidence = {"segments": list(experiment.target_segments), "max_traffic_share": experiment.max_traffic_share}
        reason = f"started: no other {experiment.layer} experiment runs in {', '.join(experiment.target_segments)}"
        moved, _ = store.move_experiment(
            con, experiment.experiment_id, "running", STARTER, reason, evidence, at, run_id=run_id, partition_day=day
        )
        busy.update({(experiment.layer, s): experiment.experiment_id for s in experiment.target_segments})
        outcomes.append(_outcome(moved, "started", reason))
    return outcomes


def _counts_problem(rows: list[dict[str, Any]] | None, spec: CampaignSpec, day: date) -> str | None:
    """Why the arm counts cannot be decided on today, or None when they can."""
    if rows is None:
        return "no arm counts yet: dbt has not built intermediate.int_experiment_arm_counts"
    window = spec.improve.outcome_window_days
    if any(r["outcome_window_days"] != window for r in rows):
        return f"the warehouse counts sends as mature after {rows[0]['outcome_window_days']} days, the spec's window is {window}"
    latest = max((r["latest_event_day"] for r in rows if r["latest_event_day"] is not None), default=None)
    if latest is not None and latest > day:
        return f"the counts are as of {latest}, after {day}: a re-run of an earlier day"
    return None


def decide_experiment(
    con: duckdb.DuckDBPyConnection,
    spec: CampaignSpec,
    experiment: Experiment,
    day: date,
    run_id: str,
    at: datetime,
    preflight: Preflighter | None = None,
) -> StepOutcome:
    """Look at one running experiment: store the look, and conclude it (with a new loop version
    on a promotion) in the same transaction.

    Once a day at most, never before its latest look, never on counts newer than the day: a re-run
    of the day (or of an older day) leaves it alone, so no experiment is decided twice, no look is
    replaced, and no day is decided on what only later days knew. `preflight` may revise the decision
    before it is stored (the off-policy check of an allocation change, `preflight.preflight_promotion`).
    """
    latest = store.latest_look_day(con, experiment.experiment_id)
    if latest is not None and latest >= day:
        return _outcome(experiment, "already looked", f"looked on {latest}")
    rows = store.arm_count_rows(con, experiment.experiment_id)
    if (problem := _counts_problem(rows, spec, day)) is not None:
        return _outcome(experiment, "not decided", problem)
    try:
        arms = arm_counts(experiment, rows)
    except ValueError as exc:
        return _outcome(experiment, "not decided", str(exc))
    started = next((r["started_day"] for r in rows if r["started_day"] is not None), day)
    decision = decide_running(experiment, arms, (day - started).days, day)
    if preflight is not None:
        decision = preflight(con, spec, experiment, decision, day)
    concluded = conclude(experiment, decision, at)
    version = None
    try:
        with transaction(con):
            store.save_look(con, look_rows(experiment, decision, day=day, run_id=run_id, at=at))
            if concluded is not None:
                store.write_transition(con, *concluded, run_id=run_id, partition_day=day)
            if decision.winner is not None:
                version = _record_promotion(con, spec, experiment, decision, at)
    except IllegalTransition as exc:  # someone moved it meanwhile: their decision stands
        return _outcome(experiment, "not decided", str(exc))
    moved = concluded[0] if concluded is not None else experiment
    return _outcome(moved, decision.action, "; ".join(decision.reasons), version)


def _record_promotion(
    con: duckdb.DuckDBPyConnection, spec: CampaignSpec, experiment: Experiment, decision: Decision, at: datetime
) -> int | None:
    current = versions.current_version(con, spec)
    state = promoted_state(current.state, experiment, decision.winner)
    if state is None:
        return None
    reason = (
        f"{experiment.kind} experiment promoted {decision.winner} over {experiment.control} "
        f"in {', '.join(experiment.target_segments)}: {'; '.join(decision.reasons)}"
    )
    actor = f"{STARTER} ({experiment.stopping_rule.version})"
    return versions.record_version(
        con, spec, state, actor=actor, reason=reason, experiment_id=experiment.experiment_id, at=at
    ).version


def run_decision_step(
    con: duckdb.DuckDBPyConnection,
    spec: CampaignSpec,
    day: date,
    run_id: str,
    at: datetime,
    preflight: Preflighter | None = None,
) -> list[StepOutcome]:
    """The day's decision step for the spec's campaign: start what may start, then look at every running experiment."""
    outcomes = start_approved(con, spec.campaign_id, day, run_id, at)
    for experiment in store.list_experiments(con, spec.campaign_id, ["running"]):
        outcomes.append(decide_experiment(con, spec, experiment, day, run_id, at, preflight))
    return outcomes
