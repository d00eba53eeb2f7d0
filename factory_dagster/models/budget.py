"""The daily budget: money is reserved before a call is made, so the cap is never passed.

Each call (or group of calls that only make sense together, such as the candidates
for one lead) reserves its worst-case cost first: every model of its fallback chain,
every re-ask, the full `max_output_tokens`. The reservation is settled with the real
cost when the answer is in. When a reservation does not fit, that work — and all
work after it, so that the order of leads holds — waits for the next day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from factory_dagster.models.registry import ModelEntry

# Characters per token: 4 is typical for English; 3 over-estimates on purpose (names, JSON, other languages).
CHARS_PER_TOKEN_UPPER = 3
# What a re-ask adds to the prompt besides the previous answer: the validation errors.
REASK_OVERHEAD_TOKENS = 200


def estimate_input_tokens(messages: list[dict[str, str]]) -> int:
    """An upper estimate of the prompt's tokens (plus a few per message for the chat format)."""
    return sum(math.ceil(len(m["content"]) / CHARS_PER_TOKEN_UPPER) + 8 for m in messages)


def worst_case_cost(entries: list[ModelEntry], input_tokens: int, max_reasks: int, batch: bool = False) -> float:
    """The most one call can cost: each model of the chain tried, each with every re-ask, each answer at full length."""
    total = 0.0
    for entry in entries:
        prompt, cost = input_tokens, 0.0
        for _ in range(1 + max_reasks):
            cost += entry.cost_usd(prompt, entry.max_output_tokens, batch=batch)
            prompt += entry.max_output_tokens + REASK_OVERHEAD_TOKENS
        total += cost
    return total


@dataclass
class Budget:
    limit_usd: float
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    exhausted: bool = False
    deferred: int = field(default=0)

    def reserve(self, amount: float) -> bool:
        """Hold `amount` if it fits next to what is spent and reserved; False (and nothing held) if not."""
        if self.exhausted or self.spent_usd + self.reserved_usd + amount > self.limit_usd + 1e-12:
            return False
        self.reserved_usd += amount
        return True

    def exhaust(self, groups: int) -> None:
        """Nothing more fits today, even with nothing outstanding: `groups` (and all later work) wait."""
        self.exhausted = True
        self.deferred += groups

    def settle(self, reserved: float, actual: float) -> None:
        """Replace a reservation by what the call really cost (never more than was reserved)."""
        self.reserved_usd = max(0.0, self.reserved_usd - reserved)
        self.spent_usd += actual
