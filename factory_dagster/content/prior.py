"""The cross-piece prior: what earlier pieces say about a new variant's click rate before it runs.

Why: every piece (a headline test, a post's hooks) is a small experiment, too short to learn much
alone. Across pieces the line can learn which features of a headline lift its click rate
*relative to the other variants of the same piece* (`content.features`), and how far variants of
one piece usually differ. Both become a Beta prior per new variant, so the experiment engine
(`content.allocation`) starts from an informed guess instead of from nothing.

The model: a weighted ridge regression, in numpy, of each variant's log click rate on its
features, both centred within its piece, so it learns lifts over the piece's mean and never the
piece's own level (topic, audience, season). Weights are the inverse sampling variance of a log
rate (about the clicks), so a variant seen 50 times counts less than one seen 5,000 times. The
spread of the residuals net of sampling noise (`lift_sd`) sets how much a prior is worth.

It learns ONLY from finished pieces: `priors_by_period` fits the prior used in period p on rows
of earlier periods, never on p or later.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from factory_dagster.content.features import FEATURE_NAMES

# The regression's terms: a name and how it is made from the feature columns. Counts are capped
# (a fourth negative word says little more than a third) and person counts become "any".
TERMS: Mapping[str, tuple[str, str]] = {
    "chars_per_10": ("chars", "per_10"),
    "words": ("words", "identity"),
    "has_number": ("has_number", "identity"),
    "starts_with_number": ("starts_with_number", "identity"),
    "is_question": ("is_question", "identity"),
    "has_exclamation": ("has_exclamation", "identity"),
    "has_quote": ("has_quote", "identity"),
    "any_second_person": ("second_person", "any"),
    "any_first_person": ("first_person", "any"),
    "forward_reference": ("forward_reference", "cap3"),
    "negative_words": ("negative_words", "cap3"),
    "negative_share": ("negative_share", "identity"),
    "positive_words": ("positive_words", "cap3"),
    "reading_grade": ("reading_grade", "grade"),
    "any_all_caps": ("all_caps_words", "any"),
}
_TRANSFORMS = {
    "identity": lambda x: x,
    "per_10": lambda x: x / 10.0,
    "any": lambda x: (x > 0).astype(float),
    "cap3": lambda x: np.minimum(x, 3.0),
    "grade": lambda x: np.clip(x, -3.0, 20.0),
}
REQUIRED_COLUMNS = ("piece_id", "impressions", "clicks")
MIN_LIFT_SD = 0.02  # floor of the learned spread: variants of a piece are never assumed identical
DEFAULT_LIFT_SD = 0.25  # before any piece has finished (the Upworthy tests: about 0.27)
DEFAULT_BASE_RATE = 0.01


def design(features: pd.DataFrame) -> np.ndarray:
    """The regression terms (`TERMS`, in order) of feature rows (columns `FEATURE_NAMES`)."""
    missing = sorted(set(FEATURE_NAMES) - set(features.columns))
    if missing:
        raise ValueError(f"feature columns missing: {missing}")
    return np.column_stack([_TRANSFORMS[how](features[column].to_numpy(dtype=float)) for column, how in TERMS.values()]).reshape(
        len(features), len(TERMS)
    )


def _group_mean(values: np.ndarray, groups: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each row's weighted mean over its group, for a vector or each column of a matrix."""
    total = np.bincount(groups, weights)
    if values.ndim == 1:
        return (np.bincount(groups, weights * values) / total)[groups]
    return np.column_stack([np.bincount(groups, weights * values[:, j]) / total for j in range(values.shape[1])])[groups]


@dataclass(frozen=True, eq=False)
class HeadlinePrior:
    """A fitted cross-piece prior: feature lifts, the spread of lifts, and the typical base rate."""

    coefficients: np.ndarray  # per term of `TERMS`: change of log click rate per unit
    lift_sd: float  # SD of a variant's log rate around its piece's mean that the features do not explain
    base_rate: float  # click rate of a typical recent piece, before the new piece's own data
    pieces: int  # finished pieces it learned from
    variants: int
    terms: tuple[str, ...] = field(default=tuple(TERMS))

    def log_lift(self, features: pd.DataFrame) -> np.ndarray:
        """Predicted log lift of each variant (uncentred: compare variants of one piece only)."""
        return design(features) @ self.coefficients

    def weight(self, base_rate: float | np.ndarray) -> float | np.ndarray:
        """Impressions a variant's prior is worth: the Beta whose relative SD is `lift_sd` at this rate.

        For a small rate m, a Beta(m w, (1 - m) w) has relative variance about 1 / (m w); setting it
        to lift_sd^2 gives w = 1 / (m lift_sd^2).
        """
        return 1.0 / (np.asarray(base_rate, dtype=float) * self.lift_sd**2)

    def describe(self) -> dict[str, float]:
        """Each term's lift as a percentage per unit, for reports and the briefs' guidance."""
        return {t: round(100.0 * math.expm1(c), 2) for t, c in zip(self.terms, self.coefficients)}


def empty_prior() -> HeadlinePrior:
    """The prior before any piece has finished: no feature effects, a default spread and rate."""
    return HeadlinePrior(np.zeros(len(TERMS)), DEFAULT_LIFT_SD, DEFAULT_BASE_RATE, 0, 0)


def check_variants(variants: pd.DataFrame, what: str = "variants") -> None:
    """Clear errors for rows a prior cannot learn from, naming the row and the column."""
    missing = [c for c in (*REQUIRED_COLUMNS, *FEATURE_NAMES) if c not in variants.columns]
    if missing:
        raise ValueError(f"{what}: columns missing: {missing}")
    for column in ("impressions", "clicks"):
        values = pd.to_numeric(variants[column], errors="coerce")
        bad = variants.index[values.isna() | (values < 0)]
        if len(bad):
            raise ValueError(f"{what}: row {bad[0]}, column {column!r}: {variants.at[bad[0], column]!r} is not a count >= 0")
    over = variants.index[variants["clicks"].to_numpy() > variants["impressions"].to_numpy()]
    if len(over):
        row = over[0]
        raise ValueError(
            f"{what}: row {row}, column 'clicks': {variants.at[row, 'clicks']} clicks in {variants.at[row, 'impressions']} impressions"
        )


@dataclass
class _Moments:
    """Sufficient statistics of the regression and of the residual spread; they add up across pieces."""

    xwx: np.ndarray
    xwy: np.ndarray
    xax: np.ndarray  # a = 1 / (1 - 1/k): the spread's correction for centring within a piece of k variants
    xay: np.ndarray
    aty: float = 0.0
    sampling: float = 0.0  # sum of the sampling variances 1 / weight
    weight: float = 0.0
    rows: int = 0

    @classmethod
    def zero(cls) -> _Moments:
        k = len(TERMS)
        return cls(np.zeros((k, k)), np.zeros(k), np.zeros((k, k)), np.zeros(k))

    def add(self, x: np.ndarray, y: np.ndarray, w: np.ndarray, a: np.ndarray) -> None:
        xw, xa = x * w[:, None], x * a[:, None]
        self.xwx += xw.T @ x
        self.xwy += xw.T @ y
        self.xax += xa.T @ x
        self.xay += xa.T @ y
        self.aty += float(a @ (y * y))
        self.sampling += float((1.0 / w).sum())
        self.weight += float(w.sum())
        self.rows += len(y)

    def solve(self, ridge: float) -> tuple[np.ndarray, float]:
        """Ridge coefficients and the lift variance net of sampling noise (method of moments)."""
        penalty = ridge * (self.weight / self.rows) * np.eye(len(self.xwy))
        beta = np.linalg.solve(self.xwx + penalty, self.xwy)
        residual_sq = self.aty - 2.0 * beta @ self.xay + beta @ self.xax @ beta
        return beta, (residual_sq - self.sampling) / self.rows


def _centred_terms(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per variant: terms and log rate centred within its piece, the weight, and the centring correction.

    Weights are the inverse variance of a log rate (about the clicks), with half a click and one
    impression added so a variant without clicks has a finite rate.
    """
    groups = pd.factorize(rows["piece_id"])[0]
    clicks = rows["clicks"].to_numpy(dtype=float)
    shown = rows["impressions"].to_numpy(dtype=float)
    log_rate = np.log((clicks + 0.5) / (shown + 1.0))
    weights = 1.0 / (1.0 / (clicks + 0.5) + 1.0 / (shown + 1.0))
    x = design(rows)
    per_piece = np.bincount(groups)[groups]
    return (
        x - _group_mean(x, groups, weights),
        log_rate - _group_mean(log_rate, groups, weights),
        weights,
        1.0 / (1.0 - 1.0 / per_piece),
    )


def _learnable(variants: pd.DataFrame) -> pd.DataFrame:
    """Variants a lift can be learned from: shown at least once, in a piece of two or more such variants."""
    rows = variants[variants["impressions"] > 0]
    return rows[rows.groupby("piece_id", sort=False)["piece_id"].transform("size") >= 2]


def _prior(moments: _Moments, ridge: float, pieces: int, piece_rates: pd.Series) -> HeadlinePrior:
    if pieces < 2 or moments.rows == 0:
        return empty_prior()
    beta, spread = moments.solve(ridge)
    base = float(np.median(piece_rates)) if len(piece_rates) else DEFAULT_BASE_RATE
    return HeadlinePrior(
        coefficients=beta,
        lift_sd=max(MIN_LIFT_SD, math.sqrt(max(spread, 0.0))),
        base_rate=min(max(base, 1e-6), 0.5),
        pieces=pieces,
        variants=moments.rows,
    )


def _piece_rates(rows: pd.DataFrame) -> pd.Series:
    pooled = rows.groupby("piece_id", sort=False)[["clicks", "impressions"]].sum()
    return pooled["clicks"] / pooled["impressions"]


def fit_prior(variants: pd.DataFrame, ridge: float = 10.0, recent_pieces: int = 200) -> HeadlinePrior:
    """Fit the prior on finished pieces' variants (columns `piece_id`, `impressions`, `clicks` and the features).

    Pieces with fewer than two shown variants carry no lift and are skipped. `ridge` is the
    penalty in units of an average variant's weight (it shrinks lifts seen in few pieces towards
    none). `base_rate` is the median pooled click rate of the last `recent_pieces` pieces in row
    order, so give the rows in time order.
    """
    check_variants(variants)
    rows = _learnable(variants)
    moments = _Moments.zero()
    if len(rows):
        moments.add(*_centred_terms(rows))
    return _prior(moments, ridge, rows["piece_id"].nunique(), _piece_rates(rows).tail(recent_pieces))


def priors_by_period(
    variants: pd.DataFrame,
    period: str = "period",
    min_pieces: int = 50,
    ridge: float = 10.0,
    recent_pieces: int = 200,
) -> dict[Hashable, HeadlinePrior]:
    """For each period (in sorted order), the prior fitted on the pieces of EARLIER periods only.

    Pieces of one period run at the same time, so none may inform another: the prior for period
    p never sees a row of period p or later. The regression's statistics add up piece by piece,
    so one pass over the periods fits them all. Until `min_pieces` pieces have finished: the
    empty prior (no feature effects, default spread and rate). A piece belongs to the period of
    its first row.
    """
    if period not in variants.columns:
        raise ValueError(f"variants: period column {period!r} missing")
    check_variants(variants)
    piece_period = variants.groupby("piece_id", sort=False)[period].transform("first")
    rows = _learnable(variants.assign(**{period: piece_period}))
    moments = _Moments.zero()
    finished_rates: list[pd.Series] = []
    pieces = 0
    out: dict[Hashable, HeadlinePrior] = {}
    by_period = dict(tuple(rows.groupby(period, sort=True)))
    for p in sorted(piece_period.unique()):
        rates = pd.concat(finished_rates).tail(recent_pieces) if finished_rates else pd.Series(dtype=float)
        out[p] = _prior(moments, ridge, pieces, rates) if pieces >= min_pieces else empty_prior()
        if p in by_period:
            done = by_period[p]
            moments.add(*_centred_terms(done))
            finished_rates.append(_piece_rates(done))
            pieces += done["piece_id"].nunique()
    return out
