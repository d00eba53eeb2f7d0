"""The content line's experiment engine: a piece's impressions split across its variants in batches.

Each batch goes by batched Thompson sampling: every variant's click rate is a Beta posterior
(the same Beta-Binomial update as `improve.stats.posterior`: prior mean worth `weight`
impressions, plus the clicks seen), and each impression of the batch goes to a variant with its
probability of being the best (`p_best`, the draw-and-argmax of `improve.allocation.angle_shares`,
vectorised over many pieces). Between batches the clicks come back and the posteriors update.

Two things differ from the outreach loop's angle allocation, for reasons:

- **The prior comes from earlier pieces** (`CrossPiecePrior`, fed by `content.prior`): variant
  i of a piece starts at base x lift_i, where lift_i comes from its headline's features and
  base is the piece's own pooled click rate so far, shrunk towards the rate of earlier pieces.
  `FlatPrior` (Beta(1, 1)) is plain Thompson sampling, kept to measure what the prior is worth.
- **Exploration is a setting, learned from earlier pieces** (`Engine.exploration`, see
  `calibrate`). Thompson sampling explores as if the experiment never ended; a piece
  lives for a fixed, short audience, and clicks spent learning about a variant nobody will see
  again are lost. The draws come from Beta(alpha / e, beta / e): the same posterior means with
  about e times the variance. e = 1 is Thompson sampling; smaller explores less. In the Upworthy
  replay (`benchmarks/content_upworthy.py`) the calibration settles on e between 1/32 and 1/4,
  worth about 2 points of the oracle's clicks over plain Thompson sampling at 10 batches.
- **Exploration fades as the piece's audience runs out** (`horizon_exploration`): batch b explores
  e x (the share of impressions still to come after it / that share after the first batch), down to
  a floor, so the last batch goes almost entirely to the leader. Learning pays only through the
  impressions still to come; a batch with none after it has nothing to learn for. In the Upworthy
  replay this is worth about 0.2 points of the oracle's clicks.

Arrays are (pieces, variants) with the variants of a piece left-aligned and NaN (or 0 impressions)
where a piece has fewer variants than the widest; `variants` says how many each piece has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

# Clicks of a batch, given the batch's impressions (pieces x variants) and the batch's index.
Respond = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class Engine:
    """How a piece's impressions are allocated: batch count, posterior draws per batch, exploration."""

    batches: int = 10
    draws: int = 256
    exploration: float = 1.0
    growth: float = 1.0  # batch b gets growth^b parts of the impressions (see `batch_fractions`)
    horizon_aware: bool = True  # exploration fades with the impressions still to come (`horizon_exploration`)

    def __post_init__(self) -> None:
        if self.batches < 1 or self.draws < 1:
            raise ValueError(f"need at least one batch and one draw, got {self.batches} batches and {self.draws} draws")
        if not 0.0 < self.exploration <= 4.0:
            raise ValueError(f"exploration must be in (0, 4], got {self.exploration}")


class Prior(Protocol):
    """A Beta prior per variant, which may depend on the piece's data so far."""

    def beta_params(self, impressions: np.ndarray, clicks: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class FlatPrior:
    """The same Beta(alpha, beta) for every variant: Beta(1, 1) is plain Thompson sampling."""

    alpha: float = 1.0
    beta: float = 1.0

    def beta_params(self, impressions: np.ndarray, clicks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.full(impressions.shape, self.alpha), np.full(impressions.shape, self.beta)


@dataclass(frozen=True)
class CrossPiecePrior:
    """Variant i of piece p starts at mean base_p x lift_pi, worth weight_p impressions.

    base_p is the piece's pooled click rate so far with `base_rate`_p (earlier pieces' typical
    rate) worth `base_weight` impressions: the piece's own level dominates once it has data,
    while the lifts (from the headline's features, averaging 1 within a piece) say how its
    variants differ.
    """

    lift: np.ndarray  # (pieces, variants), NaN where a piece has no such variant
    base_rate: np.ndarray  # (pieces,)
    weight: np.ndarray  # (pieces,) impressions each variant's prior is worth
    base_weight: float = 1000.0

    def means(self, impressions: np.ndarray, clicks: np.ndarray) -> np.ndarray:
        shown, clicked = np.nansum(impressions, axis=1), np.nansum(clicks, axis=1)
        base = (clicked + self.base_rate * self.base_weight) / (shown + self.base_weight)
        return np.clip(base[:, None] * self.lift, 1e-6, 0.5)

    def beta_params(self, impressions: np.ndarray, clicks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = self.means(impressions, clicks)
        weight = np.broadcast_to(np.asarray(self.weight, dtype=float)[:, None], mean.shape)
        return mean * weight, (1.0 - mean) * weight


def centred_lifts(log_lift: np.ndarray) -> np.ndarray:
    """Multipliers exp(log lift - the piece's mean log lift): a piece's variants' lifts average about 1.

    The prior model predicts differences between variants of one piece, not the piece's level.
    """
    return np.exp(log_lift - np.nanmean(log_lift, axis=1, keepdims=True))


def posterior_params(prior: Prior, impressions: np.ndarray, clicks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Beta posterior of every variant: the prior's (alpha, beta) plus clicks and non-clicks."""
    alpha0, beta0 = prior.beta_params(impressions, clicks)
    return alpha0 + clicks, beta0 + impressions - clicks


def p_best(
    alpha: np.ndarray,
    beta: np.ndarray,
    variants: np.ndarray,
    rng: np.random.Generator,
    draws: int = 256,
    exploration: float = 1.0,
) -> np.ndarray:
    """Each variant's probability of being its piece's best, from `draws` posterior draws per variant.

    Rows sum to 1 over a piece's `variants` (left-aligned) and are 0 beyond them. Pieces are
    drawn in groups of equal width so padding costs nothing.
    """
    shares = np.zeros(alpha.shape)
    for width in np.unique(variants):
        rows = np.flatnonzero(variants == width)
        a = alpha[rows, :width, None] / exploration
        b = beta[rows, :width, None] / exploration
        best = rng.beta(a, b, size=(len(rows), width, draws)).argmax(axis=1)
        counts = np.bincount((np.arange(len(rows))[:, None] * width + best).ravel(), minlength=len(rows) * width)
        shares[rows, :width] = counts.reshape(len(rows), width) / draws
    return shares


def batch_fractions(batches: int, growth: float = 1.0) -> np.ndarray:
    """Each batch's share of a piece's impressions: batch b gets growth^b parts (1.0: equal batches).

    Why growing batches: the first batch is allocated blind (only the prior speaks), and every
    later one knows more than the one before, so small early batches waste fewer impressions on
    variants that turn out weak (the geometric grids of the batched-bandit literature).
    """
    if batches < 1 or growth <= 0:
        raise ValueError(f"need at least one batch and a positive growth, got {batches} and {growth}")
    parts = growth ** np.arange(batches, dtype=float)
    return parts / parts.sum()


FINAL_EXPLORATION = 0.02  # the floor of the fading exploration: the last batch is nearly greedy, never a hard argmax


def horizon_exploration(exploration: float, batch: int, fractions: np.ndarray) -> float:
    """Batch `batch`'s exploration: `exploration` x the share of impressions after it over that after batch 0.

    `fractions` are the batches' shares of the impressions (`batch_fractions`); one batch alone explores fully.
    """
    after = 1.0 - np.cumsum(fractions)
    if len(fractions) < 2 or after[0] <= 0:
        return exploration
    return exploration * max(float(after[batch] / after[0]), FINAL_EXPLORATION)


def batch_sizes(totals: np.ndarray, batches: int, growth: float = 1.0) -> np.ndarray:
    """(batches, pieces) impressions per batch: integer parts by `batch_fractions` that sum to each total."""
    totals = np.asarray(totals, dtype=np.int64)
    cumulative = np.concatenate([[0.0], np.cumsum(batch_fractions(batches, growth))])
    cumulative[-1] = 1.0
    edges = np.floor(totals[None, :] * cumulative[:, None] + 1e-9).astype(np.int64)
    return np.diff(edges, axis=0)


@dataclass(frozen=True)
class Allocation:
    """What the engine did: impressions and clicks per variant, and each batch's shares."""

    impressions: np.ndarray  # (pieces, variants)
    clicks: np.ndarray
    shares: np.ndarray  # (batches, pieces, variants)


def run_pieces(
    totals: np.ndarray,
    variants: np.ndarray,
    prior: Prior,
    respond: Respond,
    engine: Engine,
    rng: np.random.Generator,
) -> Allocation:
    """Allocate every piece's `totals` impressions over its variants in `engine.batches` batches.

    Before each batch the posteriors give each variant its P(best); the batch's impressions are
    a multinomial draw with those probabilities (what per-impression Thompson sampling does while
    the posteriors are frozen); `respond` returns the batch's clicks.
    """
    variants = np.asarray(variants, dtype=np.int64)
    width = int(variants.max())
    if np.any(variants < 1):
        raise ValueError("every piece needs at least one variant")
    valid = np.arange(width)[None, :] < variants[:, None]
    impressions = np.zeros((len(totals), width))
    clicks = np.zeros((len(totals), width))
    history = []
    fractions = batch_fractions(engine.batches, engine.growth)
    for index, size in enumerate(batch_sizes(totals, engine.batches, engine.growth)):
        alpha, beta = posterior_params(prior, impressions, clicks)
        exploration = horizon_exploration(engine.exploration, index, fractions) if engine.horizon_aware else engine.exploration
        shares = p_best(alpha, beta, variants, rng, engine.draws, exploration)
        shares = np.where(valid, shares, 0.0)
        shares /= shares.sum(axis=1, keepdims=True)
        batch = rng.multinomial(size, shares).astype(float)
        returned = np.asarray(respond(batch, index), dtype=float)
        if returned.shape != batch.shape or np.any(returned < 0) or np.any(returned > batch):
            raise ValueError(f"batch {index}: respond must return 0 <= clicks <= impressions of shape {batch.shape}")
        impressions += batch
        clicks += returned
        history.append(shares)
    return Allocation(impressions, clicks, np.stack(history))


def binomial_audience(rates: np.ndarray, rng: np.random.Generator) -> Respond:
    """A simulated audience: each impression clicks with its variant's true rate (replays, tests)."""
    safe = np.nan_to_num(rates, nan=0.0)
    return lambda impressions, _batch: rng.binomial(impressions.astype(np.int64), safe).astype(float)


def expected_clicks(impressions: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Per piece: the clicks an allocation earns in expectation under the true rates."""
    return np.nansum(impressions * np.nan_to_num(rates, nan=0.0), axis=1)


def calibrate(
    rates: np.ndarray,
    totals: np.ndarray,
    variants: np.ndarray,
    priors: Mapping[str, Prior],
    explorations: Sequence[float],
    engine: Engine,
    seed: int,
) -> tuple[tuple[str, float], dict[tuple[str, float], float]]:
    """The (prior, exploration) pair that earned the most expected clicks when FINISHED pieces are replayed.

    The line knows the measured rates of its finished pieces, so it can replay them under each
    candidate and keep the best: how much to explore and how much the prior is worth are
    learned across pieces like the lifts. Every candidate sees the same seed (common random
    numbers), so the comparison is fair. Returns the best pair and every pair's expected clicks
    as a share of the best variant's (a tie goes to the first listed).
    """
    best_possible = float((np.asarray(totals) * np.nanmax(rates, axis=1)).sum())
    scores: dict[tuple[str, float], float] = {}
    for label, prior in priors.items():
        for exploration in explorations:
            rng = np.random.default_rng(seed)
            trial = replace(engine, exploration=float(exploration))
            allocation = run_pieces(totals, variants, prior, binomial_audience(rates, rng), trial, rng)
            scores[(label, float(exploration))] = float(expected_clicks(allocation.impressions, rates).sum()) / best_possible
    return max(scores, key=lambda key: scores[key]), scores


def variant_shares(
    impressions: Sequence[float],
    clicks: Sequence[float],
    prior_means: Sequence[float],
    prior_weight: float,
    *,
    exploration: float = 1.0,
    draws: int = 4000,
    seed: int = 0,
) -> np.ndarray:
    """One piece's next-batch shares from its counts so far: the line's daily call.

    The prior is Beta(mean x weight, (1 - mean) x weight) per variant (from `CrossPiecePrior` or
    `HeadlinePrior`); seeded, so a re-run gives the same shares.
    """
    shown = np.asarray(impressions, dtype=float)[None, :]
    clicked = np.asarray(clicks, dtype=float)[None, :]
    means = np.asarray(prior_means, dtype=float)[None, :]
    if not (shown.shape == clicked.shape == means.shape) or shown.size == 0:
        raise ValueError("impressions, clicks and prior means need one value per variant")
    if np.any(clicked < 0) or np.any(clicked > shown):
        raise ValueError("need 0 <= clicks <= impressions for every variant")
    if np.any(means <= 0) or np.any(means >= 1) or prior_weight <= 0:
        raise ValueError("prior means must be in (0, 1) and the weight positive")
    alpha, beta = means * prior_weight + clicked, (1 - means) * prior_weight + shown - clicked
    rng = np.random.default_rng(seed)
    return p_best(alpha, beta, np.array([shown.shape[1]]), rng, draws, exploration)[0]
