"""The loop's metrics: what experiments are judged on, and the guardrails every challenger carries.

One module so the proposers (prompt challengers, routing canaries), the decision step and the
`learning` benchmark name and count metrics the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from factory_dagster.improve.stats import Guardrail

PRIMARY_METRIC = "positive_reply_rate"

# Metric name, as experiments record it -> its count column among an arm's mature sends
# (intermediate.int_experiment_arm_counts; the same names in the marts the proposers read).
METRIC_COUNTS: Mapping[str, str] = {
    "positive_reply_rate": "positive_replies",
    "booking_rate": "bookings",
    "unsubscribe_rate": "unsubscribes",
    "complaint_rate": "complaints",
    "negative_reply_rate": "negative_replies",
    "first_round_failure_rate": "first_round_failures",
}

# Each metric's trials column (the same view): outcome metrics count among mature sends; the gate
# metric among first-round draft candidates, known the day they are written.
METRIC_TRIALS: Mapping[str, str] = dict.fromkeys(METRIC_COUNTS, "mature_sends") | {
    "first_round_failure_rate": "first_round_drafts"
}


@dataclass(frozen=True)
class GuardrailRule:
    """A guardrail metric with its relative limit and the floor of its base rate (rare events)."""

    metric: str
    limit: float  # challenger may reach control × (1 + limit)
    base_rate_floor: float
    prior_events: float | None = None  # see stats.Guardrail.prior_events


# Unsubscribes, complaints and negative replies must not rise by more than half (complaints: double).
GUARDRAIL_RULES: tuple[GuardrailRule, ...] = (
    GuardrailRule("unsubscribe_rate", 0.5, 0.003),
    GuardrailRule("complaint_rate", 1.0, 0.0005),
    GuardrailRule("negative_reply_rate", 0.5, 0.01),
)


# A routing canary must also hold the stage's own KPI: the gate may reject its first-round drafts at
# most a quarter more often than the control's (each rejection is a repair, an escalation or a lost
# choice among the candidates; the same 20-25% tolerance as the canary's non-inferiority margin).
# Drafts are plentiful, so the prior is the rule's ordinary one (half an event at the 1% floor is
# under `prior_weight`), not the heavier prior rare outcomes need.
FIRST_ROUND_GUARDRAIL = GuardrailRule("first_round_failure_rate", 0.25, 0.01, prior_events=0.5)


def mart_number(value: Any) -> float | None:
    """A mart figure as a float; None for SQL NULL (NaN or None in the frame)."""
    return None if value is None or pd.isna(value) else float(value)


def relative_guardrails(rates: Mapping[str, Any], rules: Sequence[GuardrailRule] = GUARDRAIL_RULES) -> tuple[Guardrail, ...]:
    """Relative guardrails centred on the observed `rates` (metric -> rate or None), each at least its floor."""
    return tuple(
        Guardrail(
            rule.metric,
            rule.limit,
            max(mart_number(rates.get(rule.metric)) or 0.0, rule.base_rate_floor),
            relative=True,
            prior_events=rule.prior_events,
        )
        for rule in rules
    )
