"""A/A experiments for the `learning` benchmark: how often the line's decision rule promotes nothing.

Why: the decision step looks at every running experiment every day, and a rule read daily can
promote noise. Here the challenger is a relabelled copy of the control (a prompt version the
market answers exactly like draft-v1), so every promotion is a false one.

Each A/A experiment is designed like the line's prompt experiments (`learning_loop.prompt_experiment`:
every segment, the spec's challenger share, the same guardrails, the line's stopping rule), with
the smallest minimum detectable effect in `AA_MDES` whose planned sample the 60 days reach, so
the final look really happens (a design that can never reach it would report 0% trivially).
Traffic and outcomes are drawn per day, vectorised: 180 leads, the holdout left out, each loop
lead a challenger with the planned share; each send answers with the market's own expected
outcome rates for draft-v1 averaged over segments and angles (positive reply, other reply,
unsubscribe, complaint: exclusive, as in the market). Both arms share these rates, which is all
an A/A test needs; delays do not matter because only sends past the outcome window count.
Every day from the first, `decisions.arm_counts` + `decisions.decide_running` decide, until
the experiment concludes or the 60 days end.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

import numpy as np

from benchmarks.learning_loop import prompt_experiment
from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.improve.decisions import arm_counts, decide_running
from factory_dagster.improve.stats import planned_sample_size
from factory_dagster.market.simulated import SimulatedMarket

AA_EXPERIMENTS = 200
AA_MDES = (0.3, 0.5, 0.75, 1.0)
OUTCOMES = ("positive_replies", "negative_replies", "unsubscribes", "complaints")


def outcome_rates(market: SimulatedMarket, spec: CampaignSpec) -> np.ndarray:
    """Per send, P(positive reply), P(other reply), P(unsubscribe), P(complaint) for draft-v1, averaged over cells."""
    control = spec.drafting.prompt_versions[0]
    cells = [market.expected_outcomes(s.name, a.name, control) for s in spec.segments for a in spec.angles]
    mean = {key: float(np.mean([c[key] for c in cells])) for key in cells[0]}
    return np.array([mean["positive_reply"], mean["replied"] - mean["positive_reply"], mean["unsubscribed"], mean["complained"]])


def aa_design_mde(spec: CampaignSpec, base_rate: float, days: int, leads_per_day: int) -> float:
    """The smallest of AA_MDES whose planned sample the challenger reaches in `days` (mature sends)."""
    per_day = leads_per_day * (1 - spec.improve.holdout_share) * spec.improve.challenger_share
    reachable = per_day * (days - spec.improve.outcome_window_days - 5)  # a few days' margin for chance
    return next((m for m in AA_MDES if planned_sample_size(base_rate, m) <= reachable), AA_MDES[-1])


def run_aa(spec: CampaignSpec, rates: np.ndarray, start: date, days: int, leads_per_day: int) -> dict[str, object]:
    """AA_EXPERIMENTS A/A experiments, each decided daily; how each ended and the false-promotion rate."""
    base_rate = float(rates[0])
    mde = aa_design_mde(spec, base_rate, days, leads_per_day)
    window = spec.improve.outcome_window_days
    endings: Counter[str] = Counter()
    looks: Counter[str] = Counter()
    for index in range(AA_EXPERIMENTS):
        control = spec.drafting.prompt_versions[0]
        experiment = prompt_experiment(spec, control, f"{control}-aa-copy-{index:03d}", start, base_rate=base_rate, mde=mde)
        rng = np.random.default_rng(index)
        loop = rng.binomial(leads_per_day, 1 - spec.improve.holdout_share, size=days)
        challenger = rng.binomial(loop, experiment.max_traffic_share)
        sends = np.stack([loop - challenger, challenger], axis=1)  # day x arm
        outcomes = np.stack([rng.multinomial(n, [*rates, 1 - rates.sum()])[:4] for n in sends.ravel()]).reshape(days, 2, 4)
        ending = "still running after the last day"
        for offset in range(1, days):
            mature = max(offset - window + 1, 0)  # sends of days < mature are past the window on this day
            rows = [
                {"arm": arm, "assigned": int(sends[:offset, i].sum()), "mature_sends": int(sends[:mature, i].sum())}
                | {name: int(outcomes[:mature, i, k].sum()) for k, name in enumerate(OUTCOMES)}
                for i, arm in enumerate((experiment.control, *experiment.challengers))
            ]
            decision = decide_running(experiment, arm_counts(experiment, rows), offset, start + timedelta(days=offset))
            if decision.action != "continue":
                ending = decision.action
                looks[str(decision.evidence.get("look") or "roll_back")] += 1
                break
        endings[ending] += 1
    return {
        "aa_experiments": AA_EXPERIMENTS,
        "aa_false_promotion_rate": round(endings["promote"] / AA_EXPERIMENTS, 4),
        "aa_endings": dict(sorted(endings.items())),
        "aa_concluding_looks": dict(sorted(looks.items())),
        "aa_design": {
            "mde": mde,
            "planned_sample_per_arm": experiment.planned_sample_size,
            "base_rate": round(base_rate, 5),
            "challenger_share": experiment.max_traffic_share,
            "guardrails": [g.describe() for g in experiment.guardrails],
            "stopping_rule": experiment.stopping_rule.version,
        },
    }
