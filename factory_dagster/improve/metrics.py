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
    "first_pass_failure_rate": "first_pass_failures",
}

# Each metric's trials column (the same view): outcome metrics count among mature sends; the gate
# metric among drafted leads, known the day they are drafted.
METRIC_TRIALS: Mapping[str, str] = dict.fromkeys(METRIC_COUNTS, "mature_sends") | {"first_pass_failure_rate": "drafted"}


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


# A routing canary must also hold the stage's own KPI: its drafts may fail the gate at their first
# round at most half as often again as the control's (repairs and escalations cost money and time).
# Drafts are plentiful, so the prior is the rule's ordinary one (half an event at the 1% floor is
# under `prior_weight`), not the heavier prior that rare outcome guardrails need.
FIRST_PASS_GUARDRAIL = GuardrailRule("first_pass_failure_rate", 0.5, 0.01, prior_events=0.5)


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
