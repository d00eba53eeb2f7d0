"""The daily decision on one running experiment, as plain functions the line and the benchmark share.

Traffic design (the assign stage follows it): inside each target segment, outside the holdout, the
challengers together get the experiment's `max_traffic_share` of the leads, split evenly, and every
other lead of the segment gets the champion, which is the experiment's control. So the planned
shares the sample-ratio check compares with are {control: 1 - s, each challenger: s / k}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from factory_dagster.improve.experiments import Experiment
from factory_dagster.improve.stats import ArmCounts, Decision, decide, seed_for


def planned_shares(experiment: Experiment) -> dict[str, float]:
    """Each arm's planned share of the target segments' non-holdout leads while the experiment runs."""
    share = experiment.max_traffic_share
    each = share / len(experiment.challengers)
    return {experiment.control: 1.0 - share, **dict.fromkeys(experiment.challengers, each)}


def decide_running(experiment: Experiment, arms: Sequence[ArmCounts], days_running: int, look: object) -> Decision:
    """Today's verdict for a running experiment under its own recorded stopping rule.

    `arms` must hold the control and every challenger (an arm with no traffic yet has zero
    counts); `look` (e.g. the day) seeds the Monte Carlo draws, so a re-run decides the same.
    """
    by_arm: Mapping[str, ArmCounts] = {a.arm: a for a in arms}
    missing = [arm for arm in (experiment.control, *experiment.challengers) if arm not in by_arm]
    if missing:
        raise ValueError(f"experiment {experiment.experiment_id}: no counts for arms {missing}")
    ordered = [by_arm[experiment.control], *(by_arm[c] for c in experiment.challengers)]
    return decide(
        ordered,
        control=experiment.control,
        planned_shares=planned_shares(experiment),
        planned_sample_size=experiment.planned_sample_size,
        base_rate=experiment.base_rate,
        guardrails=experiment.guardrails,
        rule=experiment.stopping_rule,
        days_running=days_running,
        seed=seed_for(experiment.experiment_id, look),
    )
