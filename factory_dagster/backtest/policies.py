"""The policies `factory backtest` scores on a log, and the walk that scores them.

- `uniform`: uniform over the arms logged in the row's context.
- one entry per arm: always that arm (in a context where the arm was never logged, uniform there,
  and the result says on how many rows).
- `best_single_arm`: the arm with the highest estimate, chosen in hindsight on the same log, so its
  value is optimistic (the maximum of noisy estimates); it is the bar an adaptive policy has to clear.
- `factory`: the line's own allocation, `improve.allocation.angle_shares` (Thompson sampling with the
  exploration floor, the campaign spec's prior and floor), with the context columns combined as the
  segment and the arms logged in that context as its angles. It walks the log in batches of
  `batch_size` rows, one batch being one day: each batch gets the shares computed from what the policy
  learned before it.

Two modes, by how the log was collected:

- **replay** (`--uniform`): the policy draws its own arm for every row; only rows where its choice
  matches the logged arm count, and it learns from those rows alone before the next batch (Li et al.
  2011). When contexts logged different numbers of arms, a matched row is also kept with probability
  p_min / p (rejection sampling), so every context counts at its real frequency; with the same arms
  everywhere that coin is always heads. The fixed policies' replay is computed in expectation (each
  row counts with its probability of matching), which is exactly self-normalised IPS.
- **off-policy** (`--propensity`): rows were drawn with known, unequal probabilities, so a matched row
  would be a biased sample. The factory policy learns from every logged row of the earlier batches, as
  the line itself does (it pools every send of the campaign, whoever chose the arm), and each batch's
  shares are scored by IPS, SNIPS and doubly robust; DR is the headline.

Every policy also gets IPS, SNIPS and DR (`estimates`); `matched` is the headline's: matched rows for
replay, the effective sample size for the others.

Rewards: any number for the estimators. The factory policy's Beta posteriors take a reward in [0, 1]
as a fractional success (the expected value of Agrawal and Goyal's Bernoulli trick); rewards outside
[0, 1] are rescaled by the log's minimum and maximum for its learning only (values are always reported
in the log's own units). Unsubscribes are not in a generic log, so the line's unsubscribe weight is 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from factory_dagster.backtest.estimators import (
    Estimate,
    arm_codes,
    doubly_robust,
    ips,
    replay,
    reward_model,
    snips,
)
from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.improve.allocation import angle_shares

REPLAY, OFF_POLICY = "replay", "off_policy"
HEADLINE = {REPLAY: "replay", OFF_POLICY: "dr"}
FIRST_DAY = date(2026, 1, 1)  # batch b is day FIRST_DAY + b for the allocation's seeded draws
MAX_SHARES_SHOWN = 50  # contexts whose final factory shares go into the JSON


@dataclass(frozen=True)
class PolicyResult:
    """A policy's headline estimate, every estimator's, and what else a reader needs (e.g. the arm chosen)."""

    name: str
    headline: Estimate
    estimates: dict[str, Estimate]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        h = self.headline
        return {
            "value": _num(h.value),
            "ci_low": _num(h.ci_low),
            "ci_high": _num(h.ci_high),
            "matched": _num(h.matched),
            "estimator": h.estimator,
            **self.details,
            "estimates": {name: e.to_dict() for name, e in self.estimates.items()},
        }


@dataclass(frozen=True)
class BacktestResult:
    mode: str
    rows: int
    contexts: int
    arms: list[str]
    batch_size: int | None
    batches: int
    seed: int
    policies: dict[str, PolicyResult]
    arm_results: dict[str, PolicyResult]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "headline_estimator": HEADLINE[self.mode],
            "matched_means": (
                "replay: rows where the policy's choice matched the logged arm (expected count for the fixed policies)"
                if self.mode == REPLAY
                else "effective sample size (sum w)^2 / sum w^2 of the importance weights w = target / logging probability"
            ),
            "interval": "95%, normal approximation on the per-row contributions (SNIPS and fixed-policy replay: delta method)",
            "rows": self.rows,
            "contexts": self.contexts,
            "batch_size": self.batch_size,
            "batches": self.batches,
            "seed": self.seed,
            "notes": self.notes,
            "policies": {name: result.to_dict() for name, result in self.policies.items()},
            "arms": {arm: result.to_dict() for arm, result in self.arm_results.items()},
        }


def _num(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 8)


# ---------------------------------------------------------------- fixed policies


def support(rows: pd.DataFrame, arms: Sequence[str]) -> np.ndarray:
    """rows x arms: whether the arm was logged in the row's context (what a policy may choose there)."""
    logged = pd.crosstab(rows["context"], rows["arm"]).reindex(columns=list(arms), fill_value=0) > 0
    return logged.reindex(rows["context"].to_numpy()).to_numpy(dtype=bool)


def uniform_target(rows: pd.DataFrame, arms: Sequence[str]) -> np.ndarray:
    allowed = support(rows, arms).astype(float)
    return allowed / allowed.sum(axis=1, keepdims=True)


def single_arm_target(rows: pd.DataFrame, arms: Sequence[str], arm: str) -> tuple[np.ndarray, int]:
    """Always `arm`; uniform in contexts that never logged it. Returns the matrix and how many rows fell back."""
    allowed = support(rows, arms)
    column = list(arms).index(arm)
    has_arm = allowed[:, column]
    target = np.where(has_arm[:, None], 0.0, allowed / allowed.sum(axis=1, keepdims=True))
    target[has_arm, column] = 1.0
    return target, int((~has_arm).sum())


# ---------------------------------------------------------------- the factory policy


def scaled_rewards(reward: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Rewards as the Beta posteriors take them: as they are within [0, 1], else rescaled by the log's range."""
    low, high = float(np.min(reward)), float(np.max(reward))
    if low >= 0 and high <= 1:
        return reward, None
    if high == low:
        return np.full_like(reward, 0.5), f"every reward is {low:g}: the factory policy learns nothing from them"
    note = (
        f"rewards run from {low:g} to {high:g}, outside [0, 1]: the factory policy learns from (reward - {low:g}) / "
        f"{high - low:g} (values are reported in the log's units)"
    )
    return (reward - low) / (high - low), note


def backtest_spec(spec: CampaignSpec) -> CampaignSpec:
    """The campaign's allocation settings with the unsubscribe weight at 0: a generic log has no unsubscribes."""
    return spec.model_copy(update={"allocation": spec.allocation.model_copy(update={"unsubscribe_weight": 0.0})})


def factory_shares(plan: pd.DataFrame, learned: pd.DataFrame, spec: CampaignSpec, day: date) -> pd.DataFrame:
    """The line's allocation (`angle_shares`) over a log's contexts and arms: (context, arm, share).

    `plan` has (context, arm) pairs the policy may choose; `learned` has (context, arm, reward) rows
    it has seen, rewards in [0, 1]. Contexts go in as segments and arms as angles, counts as sends and
    rewards as positive replies.
    """
    if learned.empty:
        performance = pd.DataFrame(columns=["segment", "angle", "sends", "replies", "positive_replies", "unsubscribes"])
    else:
        grouped = learned.groupby(["context", "arm"], as_index=False).agg(
            sends=("reward", "size"), positive_replies=("reward", "sum")
        )
        performance = grouped.rename(columns={"context": "segment", "arm": "angle"}).assign(
            replies=lambda f: f["positive_replies"], unsubscribes=0.0
        )
    shares = angle_shares(plan.rename(columns={"context": "segment", "arm": "angle"}), performance, spec, day)
    return shares.rename(columns={"segment": "context", "angle": "arm", "angle_share": "share"})[["context", "arm", "share"]]


@dataclass(frozen=True)
class FactoryWalk:
    """What the factory policy did on the log: each row's target probabilities (the shares of the row's
    batch), which rows its replay matched, how many rows it learned from, and its shares after the last batch."""

    target: np.ndarray
    matched: np.ndarray
    rows_learned: int
    final_shares: pd.DataFrame


def walk_factory(
    rows: pd.DataFrame,
    arms: Sequence[str],
    spec: CampaignSpec,
    batch: np.ndarray,
    mode: str,
    seed: int,
) -> FactoryWalk:
    """Walk the log batch by batch with the line's allocation, learning as the mode says (module docstring)."""
    spec = backtest_spec(spec)
    reward, _ = scaled_rewards(rows["reward"].to_numpy(dtype=float))
    logged = arm_codes(rows, arms)
    propensity = rows["propensity"].to_numpy(dtype=float)
    keep = propensity.min() / propensity  # the rejection coin: 1 when every context logged the same arms uniformly
    plan = rows[["context", "arm"]].drop_duplicates().reset_index(drop=True)
    contexts = rows["context"].to_numpy()
    rng = np.random.default_rng(seed)
    target = np.zeros((len(rows), len(arms)))
    matched = np.zeros(len(rows), dtype=bool)
    learned = np.zeros(len(rows), dtype=bool)
    order = pd.unique(batch)
    for b, batch_id in enumerate(order):
        index = np.flatnonzero(batch == batch_id)
        shares = factory_shares(plan, _learned(rows, reward, learned), spec, FIRST_DAY + timedelta(days=b))
        table = shares.pivot_table(index="context", columns="arm", values="share", aggfunc="sum", fill_value=0.0)
        probabilities = table.reindex(index=contexts[index], columns=list(arms), fill_value=0.0).to_numpy()
        target[index] = probabilities
        if mode == REPLAY:
            choice = draw(probabilities, rng)
            hit = (choice == logged[index]) & (rng.random(len(index)) < keep[index])
            matched[index] = hit
            learned[index] = hit
        else:
            learned[index] = True
    final = factory_shares(plan, _learned(rows, reward, learned), spec, FIRST_DAY + timedelta(days=len(order)))
    return FactoryWalk(target, matched, int(learned.sum()), final)


def _learned(rows: pd.DataFrame, reward: np.ndarray, learned: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {"context": rows["context"].to_numpy()[learned], "arm": rows["arm"].to_numpy()[learned], "reward": reward[learned]}
    )


def draw(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One arm per row from its probabilities (rows summing to 1 up to rounding)."""
    cumulative = np.cumsum(probabilities, axis=1)
    u = rng.random(len(probabilities)) * cumulative[:, -1]
    return np.minimum((u[:, None] >= cumulative).sum(axis=1), probabilities.shape[1] - 1)


# ---------------------------------------------------------------- the whole backtest


def batches_of(rows: int, batch_size: int) -> np.ndarray:
    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1, got {batch_size}")
    return np.arange(rows) // batch_size


def backtest(
    rows: pd.DataFrame,
    spec: CampaignSpec,
    *,
    mode: str,
    batch_size: int | None = 180,
    batch: np.ndarray | None = None,
    seed: int = 0,
) -> BacktestResult:
    """Score uniform, every single arm, the best single arm in hindsight and the factory policy on the log.

    `rows` is the standard frame (`log.read_log`); batches are `batch_size` consecutive rows, or the
    given `batch` labels (e.g. the day of each row, in order) when set.
    """
    if mode not in HEADLINE:
        raise ValueError(f"mode must be {REPLAY!r} or {OFF_POLICY!r}, got {mode!r}")
    if rows.empty:
        raise ValueError("the log has no rows")
    rows = rows.reset_index(drop=True)
    batch = batches_of(len(rows), batch_size or len(rows)) if batch is None else np.asarray(batch)
    arms = sorted(set(rows["arm"]))
    q = reward_model(rows, arms)
    notes = []
    _, scaling = scaled_rewards(rows["reward"].to_numpy(dtype=float))
    if scaling:
        notes.append(scaling)
    policies: dict[str, PolicyResult] = {"uniform": _fixed("uniform", rows, arms, uniform_target(rows, arms), q, mode)}
    arm_results = {}
    for arm in arms:
        target, fallback = single_arm_target(rows, arms, arm)
        details = {"fallback_rows": fallback} if fallback else {}
        arm_results[arm] = _fixed(arm, rows, arms, target, q, mode, details)
        if fallback:
            notes.append(f"arm {arm} was never logged in some contexts: its policy is uniform on those {fallback} rows")
    best = max(arms, key=lambda a: _rank(arm_results[a].headline.value))
    policies["best_single_arm"] = replace(
        arm_results[best],
        name="best_single_arm",
        details={"arm": best, "chosen": "in hindsight, on this log: optimistic", **arm_results[best].details},
    )
    policies["factory"] = _factory(rows, arms, spec, batch, mode, seed, q)
    return BacktestResult(
        mode, len(rows), rows["context"].nunique(), arms, batch_size, len(pd.unique(batch)), seed, policies, arm_results, notes
    )


def _rank(value: float) -> float:
    return value if np.isfinite(value) else -np.inf


def _estimates(rows: pd.DataFrame, arms: Sequence[str], target: np.ndarray, q: np.ndarray) -> dict[str, Estimate]:
    reward = rows["reward"].to_numpy(dtype=float)
    propensity = rows["propensity"].to_numpy(dtype=float)
    logged = arm_codes(rows, arms)
    n = np.arange(len(rows))
    target_prob = target[n, logged]
    estimates = {
        "ips": ips(reward, propensity, target_prob),
        "snips": snips(reward, propensity, target_prob),
        "dr": doubly_robust(reward, propensity, target_prob, q[n, logged], (target * q).sum(axis=1)),
    }
    return {name: e.clipped(reward.min(), reward.max()) for name, e in estimates.items()}


def _fixed(
    name: str,
    rows: pd.DataFrame,
    arms: Sequence[str],
    target: np.ndarray,
    q: np.ndarray,
    mode: str,
    details: Mapping[str, Any] = {},
) -> PolicyResult:
    estimates = _estimates(rows, arms, target, q)
    if mode == REPLAY:
        # Replay in expectation: each row counts with its chance of matching (and of the rejection coin): SNIPS.
        propensity = rows["propensity"].to_numpy(dtype=float)
        chance = target[np.arange(len(rows)), arm_codes(rows, arms)] * propensity.min() / propensity
        estimates = {"replay": replace(estimates["snips"], estimator="replay", matched=float(chance.sum())), **estimates}
    return PolicyResult(name, estimates[HEADLINE[mode]], estimates, dict(details))


def _factory(
    rows: pd.DataFrame, arms: Sequence[str], spec: CampaignSpec, batch: np.ndarray, mode: str, seed: int, q: np.ndarray
) -> PolicyResult:
    walk = walk_factory(rows, arms, spec, batch, mode, seed)
    estimates = _estimates(rows, arms, walk.target, q)
    if mode == REPLAY:
        reward = rows["reward"].to_numpy(dtype=float)
        estimates = {"replay": replay(reward[walk.matched]).clipped(reward.min(), reward.max()), **estimates}
    details: dict[str, Any] = {"rows_learned": walk.rows_learned}
    if walk.final_shares["context"].nunique() <= MAX_SHARES_SHOWN:
        details["final_shares"] = {
            context: {row.arm: round(float(row.share), 4) for row in group.itertuples()}
            for context, group in walk.final_shares.groupby("context", sort=True)
        }
    return PolicyResult("factory", estimates[HEADLINE[mode]], estimates, details)
