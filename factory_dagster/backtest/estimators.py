"""Off-policy estimators: what a target policy would have earned on rows another policy logged.

Every function takes logged rows (the `log` module's standard frame, or any frame with `context`,
`arm`, `propensity` and `reward`) and the target policy, and returns an `Estimate` with a 95%
interval. The intervals are normal approximations, each on what is averaged:

- **IPS** (inverse propensity scoring): the mean of w_i r_i, w_i = pi(a_i | x_i) / p_i; interval
  mean +- 1.96 sd / sqrt(n) of those per-row contributions. Unbiased; its variance grows with the weights.
- **SNIPS** (self-normalised IPS): sum w_i r_i / sum w_i; interval by the delta method,
  se = sqrt(sum w_i^2 (r_i - v)^2) / sum w_i. Slightly biased (O(1/n)), much steadier when weights are large.
- **DR** (doubly robust): the mean of sum_a pi(a | x_i) q(x_i, a) + w_i (r_i - q(x_i, a_i)), interval on
  those per-row contributions. q is the reward model below; DR stays unbiased when q is wrong and has
  less variance than IPS when q is close.
- **Replay** (for uniform logs; Li et al. 2011): the mean reward of the rows where the policy's
  choice matched the logged arm; interval on those rewards (`replay`).

The reward model q(x, a) is the mean reward of context x under arm a, **cross-fitted and shrunk**:
rows are split into `folds` interleaved folds (row i goes to fold i mod folds, so every fold spans the
whole period) and each row's q comes from the other folds only, so a row's own reward never enters the
correction that is subtracted from it (an in-sample q would pull each residual toward zero and make
DR's interval too narrow); a cell's mean is shrunk toward the arm's mean over all contexts with the
weight of `prior_rows` rows, and the arm's mean toward the overall mean, so a cell seen a few times
does not predict 0 or 1.

`matched` is the effective sample size (sum w)^2 / sum w^2 for IPS, SNIPS and DR, and the number of
matched rows for replay. `unsupported_mass` is the target's average probability on arms never logged
in the row's context: no estimator can see those, so a value above 0 means the estimate leaves them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

Z95 = 1.959963984540054
FOLDS = 2
PRIOR_ROWS = 10.0
ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class Estimate:
    """One estimate of a policy's value (mean reward per decision) with its 95% interval."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    effective_sample_size: float
    matched: float
    rows: int
    unsupported_mass: float = 0.0

    def to_dict(self) -> dict[str, float | int | str | None]:
        return {k: (_rounded(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def clipped(self, low: float, high: float) -> Estimate:
        """The value and interval cut to [low, high], the range a mean reward can take: a rare conversion's
        normal interval can reach below 0, and DR's value too. The truth is always inside, so coverage never drops."""

        def cut(x: float) -> float:
            return min(max(x, low), high) if np.isfinite(x) else x

        return replace(self, value=cut(self.value), ci_low=cut(self.ci_low), ci_high=cut(self.ci_high))


def _rounded(value: float) -> float | None:
    return round(value, 8) if np.isfinite(value) else None


def _interval(name: str, value: float, se: float, ess: float, matched: float, rows: int, unsupported: float) -> Estimate:
    se = float(se) if np.isfinite(se) else float("nan")
    return Estimate(
        name, float(value), float(value - Z95 * se), float(value + Z95 * se), float(ess), float(matched), rows, unsupported
    )


def effective_sample_size(weights: np.ndarray) -> float:
    """(sum w)^2 / sum w^2: how many equally weighted rows the weighted rows are worth."""
    squares = float(np.sum(weights**2))
    return float(np.sum(weights) ** 2 / squares) if squares > 0 else 0.0


def _mean_interval(name: str, contributions: np.ndarray, weights: np.ndarray, unsupported: float = 0.0) -> Estimate:
    n = len(contributions)
    se = float(np.std(contributions, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    ess = effective_sample_size(weights)
    return _interval(name, float(np.mean(contributions)), se, ess, ess, n, unsupported)


def ips(reward: np.ndarray, propensity: np.ndarray, target_prob: np.ndarray, unsupported: float = 0.0) -> Estimate:
    """Inverse propensity scoring: mean of pi/p x reward (unbiased; interval on the per-row terms)."""
    reward, weights = _checked(reward, propensity, target_prob)
    return _mean_interval("ips", weights * reward, weights, unsupported)


def snips(reward: np.ndarray, propensity: np.ndarray, target_prob: np.ndarray, unsupported: float = 0.0) -> Estimate:
    """Self-normalised IPS: sum w r / sum w, interval by the delta method."""
    reward, weights = _checked(reward, propensity, target_prob)
    total = float(np.sum(weights))
    ess = effective_sample_size(weights)
    if total <= 0:  # the target never chooses an arm that was logged: nothing to average
        return _interval("snips", float("nan"), float("nan"), 0.0, 0.0, len(reward), unsupported)
    value = float(np.sum(weights * reward) / total)
    n = len(reward)
    se = float(np.sqrt(np.sum(weights**2 * (reward - value) ** 2) * n / max(n - 1, 1)) / total)
    return _interval("snips", value, se, ess, ess, n, unsupported)


def doubly_robust(
    reward: np.ndarray,
    propensity: np.ndarray,
    target_prob: np.ndarray,
    predicted_logged: np.ndarray,
    predicted_target: np.ndarray,
    unsupported: float = 0.0,
) -> Estimate:
    """DR: the reward model's value of the target plus the importance-weighted residual of the logged arm.

    `predicted_logged` is q(x_i, a_i); `predicted_target` is sum_a pi(a | x_i) q(x_i, a).
    """
    reward, weights = _checked(reward, propensity, target_prob)
    contributions = np.asarray(predicted_target, float) + weights * (reward - np.asarray(predicted_logged, float))
    return _mean_interval("dr", contributions, weights, unsupported)


def replay(matched_rewards: np.ndarray) -> Estimate:
    """Replay: the mean reward of the matched rows, interval mean +- 1.96 sd / sqrt(matched)."""
    rewards = np.asarray(matched_rewards, float)
    m = len(rewards)
    if m == 0:
        return _interval("replay", float("nan"), float("nan"), 0.0, 0.0, 0, 0.0)
    se = float(np.std(rewards, ddof=1) / np.sqrt(m)) if m > 1 else float("nan")
    return _interval("replay", float(rewards.mean()), se, float(m), float(m), m, 0.0)


def _checked(reward: np.ndarray, propensity: np.ndarray, target_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reward, propensity, target_prob = (np.asarray(a, float) for a in (reward, propensity, target_prob))
    if not (len(reward) == len(propensity) == len(target_prob)) or len(reward) == 0:
        raise ValueError(
            f"need rows: {len(reward)} rewards, {len(propensity)} propensities, {len(target_prob)} target probabilities"
        )
    if np.any(~(propensity > 0)) or np.any(propensity > 1 + 1e-9):
        raise ValueError("propensities must be in (0, 1]")
    if np.any(target_prob < -1e-12) or np.any(target_prob > 1 + 1e-9):
        raise ValueError("target probabilities must be in [0, 1]")
    return reward, target_prob / propensity


# ---------------------------------------------------------------- the reward model


def arm_codes(rows: pd.DataFrame, arms: Sequence[str]) -> np.ndarray:
    """The position of each row's logged arm in `arms`."""
    positions = {arm: i for i, arm in enumerate(arms)}
    try:
        return np.fromiter((positions[a] for a in rows["arm"]), dtype=np.int64, count=len(rows))
    except KeyError as exc:
        raise ValueError(f"logged arm {exc.args[0]!r} is not among the target's arms {list(arms)}") from None


def reward_model(rows: pd.DataFrame, arms: Sequence[str], folds: int = FOLDS, prior_rows: float = PRIOR_ROWS) -> np.ndarray:
    """Cross-fitted, shrunk q(x_i, a) for every row i and arm a (rows x arms), see the module docstring."""
    contexts, context_index = np.unique(rows["context"].to_numpy(dtype=object).astype(str), return_inverse=True)
    logged = arm_codes(rows, arms)
    reward = rows["reward"].to_numpy(dtype=float)
    n, k, c = len(rows), len(arms), len(contexts)
    cross_fit = folds > 1 and n >= 2 * folds  # a log of a few rows is fitted once, on itself
    fold = np.arange(n) % folds if cross_fit else np.zeros(n, dtype=int)
    predictions = np.empty((n, k))
    for f in np.unique(fold):
        train = fold != f if cross_fit else np.ones(n, dtype=bool)
        cells = context_index[train] * k + logged[train]
        sums = np.bincount(cells, weights=reward[train], minlength=c * k).reshape(c, k)
        counts = np.bincount(cells, minlength=c * k).reshape(c, k).astype(float)
        overall = float(reward[train].mean())
        arm_mean = (sums.sum(axis=0) + prior_rows * overall) / (counts.sum(axis=0) + prior_rows)
        cell_mean = (sums + prior_rows * arm_mean[None, :]) / (counts + prior_rows)
        predictions[fold == f] = cell_mean[context_index[fold == f]]
    return predictions


# ---------------------------------------------------------------- all estimators at once


def target_matrix(
    rows: pd.DataFrame, shares: pd.DataFrame, context: str = "context", arm: str = "arm", share: str = "share"
) -> pd.DataFrame:
    """Per row, the target policy's probability of every arm, from a table of shares per (context, arm).

    Why: a policy is usually known as shares per segment (e.g. the loop's `angle_shares`), while the
    estimators need, for each logged row, the probability of each arm in that row's context.
    A row whose context has no shares raises: the target must say what it would do everywhere.
    """
    table = shares.pivot_table(index=context, columns=arm, values=share, aggfunc="sum", fill_value=0.0)
    missing = sorted(set(rows["context"]) - set(table.index))
    if missing:
        raise ValueError(f"the target policy has no shares for context(s) {missing[:5]}")
    matrix = table.reindex(rows["context"].to_numpy())
    matrix.index = rows.index
    return matrix


def off_policy_estimates(
    rows: pd.DataFrame, target: pd.DataFrame | pd.Series | np.ndarray, folds: int = FOLDS, prior_rows: float = PRIOR_ROWS
) -> dict[str, Estimate]:
    """IPS, SNIPS and (given the full target) DR of a target policy on logged rows.

    `target` is either the target's probability of each row's logged arm (a Series or array aligned
    with `rows`: IPS and SNIPS only, since DR needs the target's whole distribution), or a frame with
    one row per logged row and one column per arm holding the target's probabilities (see
    `target_matrix`): IPS, SNIPS and DR. This is the function the loop's preflight calls.
    """
    reward = rows["reward"].to_numpy(dtype=float)
    propensity = rows["propensity"].to_numpy(dtype=float)
    if not isinstance(target, pd.DataFrame):
        target_prob = np.asarray(target, dtype=float)
        return {"ips": ips(reward, propensity, target_prob), "snips": snips(reward, propensity, target_prob)}
    arms = sorted(set(rows["arm"]) | set(map(str, target.columns)))
    probabilities = target.reindex(columns=arms, fill_value=0.0).to_numpy(dtype=float)
    logged = arm_codes(rows, arms)
    target_prob = probabilities[np.arange(len(rows)), logged]
    unsupported = _unsupported_mass(rows, arms, probabilities)
    q = reward_model(rows, arms, folds, prior_rows)
    return {
        "ips": ips(reward, propensity, target_prob, unsupported),
        "snips": snips(reward, propensity, target_prob, unsupported),
        "dr": doubly_robust(
            reward, propensity, target_prob, q[np.arange(len(rows)), logged], (probabilities * q).sum(axis=1), unsupported
        ),
    }


def _unsupported_mass(rows: pd.DataFrame, arms: Sequence[str], probabilities: np.ndarray) -> float:
    """The target's mean probability on arms never logged in the row's context."""
    logged = pd.crosstab(rows["context"], rows["arm"]).reindex(columns=list(arms), fill_value=0) > 0
    support = logged.reindex(rows["context"].to_numpy()).to_numpy(dtype=bool)
    return float(np.mean(np.sum(probabilities * ~support, axis=1)))
