"""Statistics for the improve stage's daily decision: pure functions on counts.

Why these and not a t-test per day: the line looks at every running experiment every day, and
a test read daily promotes noise (an A/A experiment crosses P(better) >= 0.95 on some day far
more often than 5% of the time). The rule here (`decide`, version `RULE_VERSION`) keeps its error
rates although it is looked at daily:

- **Promotion is a fixed-horizon decision.** The final look is the first day on which every arm
  has the planned sample of outcome-window-mature sends (from `planned_sample_size`). On that look
  the experiment is promoted or retired, and a concluded experiment is never decided again. Before
  it, a challenger can be promoted only on a Haybittle-Peto style interim boundary (P(better) >=
  0.999 by default, from half the planned sample on), which costs almost no error rate. With
  several challengers both thresholds are Bonferroni-adjusted.
- **Roll-backs may happen on any day.** A guardrail breach or a sample-ratio mismatch stops the
  experiment at once: stopping early for harm is the safe direction, so a guardrail needs no
  correction beyond a strict threshold (P(breach) >= 0.99; at 0.95, rare-event guardrails such as
  unsubscribes rolled back about one A/A experiment in ten under daily looks). The sample-ratio
  check is *anytime-valid* (`srm_sequential_p_value`, a Dirichlet-multinomial Bayes factor against
  the planned shares): its p-value may be read after every day's assignments and still falsely
  alarms with probability at most `srm_alpha` over the whole run. A chi-square test read daily at
  0.001 rolled back a good challenger in one seed of five of the `learning` benchmark.
- **Promotion needs clear guardrails, not merely unbroken ones.** A challenger whose guardrail is
  still in doubt (P(breach) > 0.25) is not promoted: the reply-rate trap (more replies, many more
  unsubscribes) is retired or rolled back even before its breach is certain.

Rates are Beta-Binomial posteriors with a prior centred on the segment's own base rate, worth
`prior_weight` sends, so a handful of early sends cannot swing a comparison. No scipy: the special
functions (incomplete beta and gamma, normal quantiles) are written out or come from the standard
library, and the comparisons use seeded numpy draws, so a re-run decides the same way.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

RULE_VERSION = "bayes-fixed-horizon-v2"  # v2: the sample-ratio check is anytime-valid (v1: chi-square read daily)
Action = Literal["continue", "promote", "retire", "roll_back"]

_NORMAL = NormalDist()
_EPS = 1e-15
_TINY = 1e-300
_MAX_ITERATIONS = 100_000
_SRM_MIN_EXPECTED = 5.0  # below this expected count per arm the chi-square approximation is not trusted


# ---------------------------------------------------------------- special functions


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def beta_cdf(x: float, a: float, b: float) -> float:
    """Regularised incomplete beta I_x(a, b): P(rate <= x) under Beta(a, b)."""
    if a <= 0 or b <= 0:
        raise ValueError(f"Beta parameters must be positive, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def beta_ppf(q: float, a: float, b: float, tolerance: float = 1e-12) -> float:
    """Quantile of Beta(a, b) by bisection: slow-ish but cannot diverge, and only reports call it."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile level must be in [0, 1], got {q}")
    lo, hi = 0.0, 1.0
    while hi - lo > tolerance:
        mid = (lo + hi) / 2.0
        if beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def _gamma_q(s: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(s, x) (series below s + 1, continued fraction above)."""
    if x <= 0.0:
        return 1.0
    log_front = -x + s * math.log(x) - math.lgamma(s)
    if x < s + 1.0:
        term = total = 1.0 / s
        a = s
        for _ in range(_MAX_ITERATIONS):
            a += 1.0
            term *= x / a
            total += term
            if abs(term) < abs(total) * _EPS:
                return max(0.0, 1.0 - total * math.exp(log_front))
        raise ArithmeticError(f"incomplete gamma series did not converge for s={s}, x={x}")
    b = x + 1.0 - s
    c, d = 1.0 / _TINY, 1.0 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - s)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        if abs(d * c - 1.0) < _EPS:
            return math.exp(log_front) * h
    raise ArithmeticError(f"incomplete gamma fraction did not converge for s={s}, x={x}")


def chi_square_sf(statistic: float, df: int) -> float:
    """P(X >= statistic) for X ~ chi-square with `df` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _gamma_q(df / 2.0, statistic / 2.0)


def seed_for(*parts: object) -> int:
    """A stable 63-bit seed from any parts (experiment id, day, arm), so a re-run draws the same."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big") >> 1


# ---------------------------------------------------------------- posteriors and comparisons


@dataclass(frozen=True)
class BetaPosterior:
    """Posterior Beta(alpha, beta) of a rate."""

    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Equal-tailed credible interval: (1 - level) / 2 of the posterior below and above it."""
        tail = (1.0 - level) / 2.0
        return beta_ppf(tail, self.alpha, self.beta), beta_ppf(1.0 - tail, self.alpha, self.beta)

    def prob_above(self, rate: float) -> float:
        return 1.0 - beta_cdf(rate, self.alpha, self.beta)

    def draws(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.beta(self.alpha, self.beta, size=n)


def posterior(events: int, trials: int, prior_rate: float, prior_weight: float) -> BetaPosterior:
    """Beta-Binomial posterior: prior mean `prior_rate` worth `prior_weight` trials, plus the data."""
    if not 0 <= events <= trials:
        raise ValueError(f"need 0 <= events <= trials, got {events} events in {trials} trials")
    if not 0.0 < prior_rate < 1.0:
        raise ValueError(f"prior rate must be in (0, 1), got {prior_rate}")
    if prior_weight <= 0:
        raise ValueError(f"prior weight must be positive, got {prior_weight}")
    return BetaPosterior(prior_rate * prior_weight + events, (1.0 - prior_rate) * prior_weight + trials - events)


@dataclass(frozen=True)
class Comparison:
    """Challenger against control (or against control × (1 − margin) for non-inferiority)."""

    p_better: float  # P(challenger > control × (1 − margin))
    expected_loss: float  # E[max(control × (1 − margin) − challenger, 0)], in rate units
    relative_expected_loss: float  # expected_loss / control's posterior mean
    lift: float  # ratio of the posterior means − 1 (the mean of the ratio is biased up when counts are small)
    lift_interval: tuple[float, float]


def _compare_draws(control: np.ndarray, challenger: np.ndarray, margin: float, level: float) -> Comparison:
    bar = control * (1.0 - margin)
    loss = float(np.maximum(bar - challenger, 0.0).mean())
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(challenger / control - 1.0, [tail, 1.0 - tail])
    return Comparison(
        p_better=float((challenger > bar).mean()),
        expected_loss=loss,
        relative_expected_loss=loss / float(control.mean()),
        lift=float(challenger.mean() / control.mean() - 1.0),
        lift_interval=(float(lo), float(hi)),
    )


def compare(
    control: BetaPosterior,
    challenger: BetaPosterior,
    *,
    draws: int = 20_000,
    seed: int = 0,
    margin: float = 0.0,
    level: float = 0.95,
) -> Comparison:
    """P(better), expected loss of choosing the challenger, and relative lift, from seeded draws."""
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    rng = np.random.default_rng(seed)
    return _compare_draws(control.draws(rng, draws), challenger.draws(rng, draws), margin, level)


def p_non_inferior(
    control: BetaPosterior, challenger: BetaPosterior, margin: float, *, draws: int = 20_000, seed: int = 0
) -> float:
    """P(challenger >= control × (1 − margin)): for canaries and model downshifts, where 'not worse' wins."""
    return compare(control, challenger, draws=draws, seed=seed, margin=margin).p_better


# ---------------------------------------------------------------- design: power and sample-ratio mismatch


def planned_sample_size(base_rate: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Sends per arm for a two-sided two-proportion z-test to detect a relative lift `mde` at `base_rate`.

    n = (z_{1-α/2} √(2 p̄ q̄) + z_{1-β} √(p1 q1 + p2 q2))² / (p2 − p1)², with p2 = p1 (1 + mde) and
    p̄ the mean of p1 and p2 (the pooled-variance textbook formula, no continuity correction).
    """
    if not 0.0 < base_rate < 1.0:
        raise ValueError(f"base rate must be in (0, 1), got {base_rate}")
    p2 = base_rate * (1.0 + mde)
    if mde <= 0 or p2 >= 1.0:
        raise ValueError(f"minimum detectable effect must be > 0 and keep the rate under 1, got {mde} at {base_rate}")
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha} and {power}")
    p1 = base_rate
    pooled = (p1 + p2) / 2.0
    z_alpha, z_power = _NORMAL.inv_cdf(1.0 - alpha / 2.0), _NORMAL.inv_cdf(power)
    root = z_alpha * math.sqrt(2.0 * pooled * (1.0 - pooled)) + z_power * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root**2 / (p2 - p1) ** 2)


def srm_p_value(observed: Sequence[int], planned_shares: Sequence[float]) -> float:
    """Chi-square goodness-of-fit p-value of the arms' assignment counts against their planned shares.

    The shares are normalised, so they may be given as shares of the whole segment.
    """
    if len(observed) != len(planned_shares) or len(observed) < 2:
        raise ValueError("need the same number (>= 2) of observed counts and planned shares")
    if any(s <= 0 for s in planned_shares) or any(o < 0 for o in observed):
        raise ValueError("planned shares must be positive and counts non-negative")
    total = sum(observed)
    if total == 0:
        return 1.0
    share_sum = sum(planned_shares)
    expected = [total * s / share_sum for s in planned_shares]
    statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    return chi_square_sf(statistic, len(observed) - 1)


def binomial_p_value(successes: int, trials: int, share: float) -> float:
    """Exact two-sided binomial p-value of `successes` in `trials` at `share`: the probability of every count no
    likelier than the observed one. A day's holdout is a few leads out of tens, where the chi-square approximation
    (`srm_p_value`) calls ordinary counts implausible."""
    if not 0 < share < 1:
        raise ValueError("the share must be strictly between 0 and 1")
    if not 0 <= successes <= trials:
        raise ValueError("need 0 <= successes <= trials")
    counts = np.arange(trials)
    # log pmf(k + 1) - log pmf(k) = log((n - k) / (k + 1)) + log(p / (1 - p)), from pmf(0) = (1 - p)^n
    steps = np.log((trials - counts) / (counts + 1)) + math.log(share / (1 - share))
    log_pmf = trials * math.log1p(-share) + np.concatenate([[0.0], np.cumsum(steps)])
    pmf = np.exp(log_pmf - log_pmf.max())
    likely = pmf[successes] * (1 + 1e-7)  # ties to rounding count as no likelier, as scipy's binomtest does
    return float(min(1.0, pmf[pmf <= likely].sum() / pmf.sum()))


SRM_PRIOR_CONCENTRATION = 100.0  # the Dirichlet prior of the sequential SRM test, centred on the planned shares


def srm_sequential_p_value(
    observed: Sequence[int], planned_shares: Sequence[float], concentration: float = SRM_PRIOR_CONCENTRATION
) -> float:
    """Anytime-valid p-value of a sample-ratio mismatch: 1 / the Bayes factor of a Dirichlet-multinomial
    alternative (prior Dirichlet(concentration x planned shares)) against the planned shares.

    Under correct assignment the Bayes factor of the cumulative counts is a martingale, so by Ville's
    inequality P(this p-value ever falls to alpha) <= alpha however often it is read (Lindon and
    Malek's sequential SRM test). Shares are normalised like `srm_p_value`'s.
    """
    if len(observed) != len(planned_shares) or len(observed) < 2:
        raise ValueError("need the same number (>= 2) of observed counts and planned shares")
    if any(s <= 0 for s in planned_shares) or any(o < 0 for o in observed) or concentration <= 0:
        raise ValueError("planned shares and the concentration must be positive and counts non-negative")
    share_sum = sum(planned_shares)
    theta = [s / share_sum for s in planned_shares]
    alpha = [concentration * t for t in theta]
    total = sum(observed)
    log_bf = math.lgamma(concentration) - math.lgamma(concentration + total)
    log_bf += sum(math.lgamma(a + n) - math.lgamma(a) - n * math.log(t) for a, n, t in zip(alpha, observed, theta, strict=True))
    return min(1.0, math.exp(-log_bf)) if log_bf > -700 else 1.0


# ---------------------------------------------------------------- the stopping rule


@dataclass(frozen=True)
class Guardrail:
    """A metric a challenger must not make worse, with its limit.

    Absolute: the challenger's rate must stay at or under `limit` (at or over it when higher is
    better). Relative: at or under control × (1 + limit) (at or over control × (1 − limit)).
    `base_rate` is the segment's own rate of the metric, the centre of the prior.
    """

    metric: str
    limit: float
    base_rate: float
    relative: bool = False
    higher_is_better: bool = False
    # A relative guardrail's prior is worth at least this many events; None: the stopping rule's
    # `guardrail_prior_events`. A frequent metric (the gate's first-pass failures) needs less.
    prior_events: float | None = None

    def __post_init__(self) -> None:
        if self.prior_events is not None and self.prior_events < 0:
            raise ValueError(f"guardrail {self.metric}: prior events must be non-negative, got {self.prior_events}")
        if not self.metric:
            raise ValueError("a guardrail needs a metric name")
        if not 0.0 < self.base_rate < 1.0:
            raise ValueError(f"guardrail {self.metric}: base rate must be in (0, 1), got {self.base_rate}")
        if (
            self.limit <= 0
            or (not self.relative and self.limit >= 1)
            or (self.relative and self.higher_is_better and self.limit >= 1)
        ):
            raise ValueError(f"guardrail {self.metric}: limit {self.limit} is out of range")

    def describe(self) -> str:
        if self.relative:
            bound = f"control × {1 - self.limit:g}" if self.higher_is_better else f"control × {1 + self.limit:g}"
        else:
            bound = f"{self.limit:g}"
        return f"{self.metric} {'>=' if self.higher_is_better else '<='} {bound}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StoppingRule:
    """The thresholds of `decide`. Defaults are the line's rule; an experiment records its own copy."""

    prob_better: float = 0.95  # final look: P(challenger better) needed to promote
    max_expected_loss: float = 0.01  # expected loss of promoting, as a share of control's rate
    interim_probability: float | None = 0.999  # interim looks: the much stricter bar (None: no early promotion)
    interim_from: float = 0.5  # interim looks start at this share of the planned sample
    guardrail_probability: float = 0.99  # P(guardrail breached) that rolls back
    promote_max_breach: float = 0.25  # a challenger is promoted only while every P(breach) is at most this
    srm_alpha: float = 0.001  # anytime-valid sample-ratio-mismatch p-value that rolls back
    max_days: int = 60  # retire when running longer than this without reaching the sample
    non_inferiority_margin: float | None = None  # canaries: promote when not worse than control × (1 − margin)
    prior_weight: float = 50.0  # sends the base-rate prior is worth
    guardrail_prior_events: float = 2.0  # a guardrail's prior is worth at least this many events (see `_guardrail_breach`)
    draws: int = 20_000
    version: str = RULE_VERSION

    def __post_init__(self) -> None:
        for name in ("prob_better", "guardrail_probability", "interim_from", "promote_max_breach"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"stopping rule: {name} must be in (0, 1], got {getattr(self, name)}")
        if self.interim_probability is not None and not self.prob_better <= self.interim_probability < 1.0:
            raise ValueError("stopping rule: the interim bar must be at least the final one and under 1")
        if self.non_inferiority_margin is not None and not 0.0 < self.non_inferiority_margin < 1.0:
            raise ValueError(f"stopping rule: non-inferiority margin must be in (0, 1), got {self.non_inferiority_margin}")
        if not 0.0 < self.srm_alpha < 1.0 or self.max_expected_loss <= 0 or self.max_days < 1 or self.draws < 100:
            raise ValueError("stopping rule: srm_alpha in (0, 1), max_expected_loss > 0, max_days >= 1, draws >= 100")
        if self.prior_weight <= 0 or self.guardrail_prior_events < 0:
            raise ValueError("stopping rule: prior weight must be positive and guardrail prior events non-negative")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_RULE = StoppingRule()


@dataclass(frozen=True)
class Count:
    """Events out of trials (e.g. positive replies out of mature sends)."""

    events: int
    trials: int

    def __post_init__(self) -> None:
        if not 0 <= self.events <= self.trials:
            raise ValueError(f"need 0 <= events <= trials, got {self.events} of {self.trials}")


@dataclass(frozen=True)
class ArmCounts:
    """What one arm of an experiment has so far.

    `assigned` counts every lead given the arm (for the SRM check, which needs no outcomes);
    `primary` and `guardrails` count only sends whose outcome window has closed, so a young send
    cannot look like a non-reply.
    """

    arm: str
    assigned: int
    primary: Count
    guardrails: Mapping[str, Count] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    action: Action
    reasons: tuple[str, ...]
    winner: str | None  # the promoted challenger
    evidence: dict[str, Any]  # JSON-able: what the decision was made from


def _srm(arms: Sequence[ArmCounts], planned_shares: Mapping[str, float], rule: StoppingRule) -> tuple[dict[str, Any], list[str]]:
    observed = [a.assigned for a in arms]
    shares = [planned_shares[a.arm] for a in arms]
    total, share_sum = sum(observed), sum(shares)
    evidence: dict[str, Any] = {
        "observed": {a.arm: a.assigned for a in arms},
        "planned_shares": dict(planned_shares),
        "test": "sequential Dirichlet-multinomial (anytime-valid)",
        "p_value": None,
        "chi_square_p_value": None,
    }
    if min(total * s / share_sum for s in shares) < _SRM_MIN_EXPECTED:
        return evidence, []
    p = srm_sequential_p_value(observed, shares)
    evidence["p_value"] = p
    evidence["chi_square_p_value"] = srm_p_value(observed, shares)  # for reference: not valid under daily looks
    if p < rule.srm_alpha:
        counts = ", ".join(
            f"{a.arm} {a.assigned} ({a.assigned / total:.1%} vs planned {s / share_sum:.1%})"
            for a, s in zip(arms, shares, strict=True)
        )
        return evidence, [
            f"sample-ratio mismatch: p = {p:.2g} < {rule.srm_alpha:g} ({counts}); assignment is broken, results untrustworthy"
        ]
    return evidence, []


def _guardrail_breach(
    guardrail: Guardrail, control: ArmCounts, challenger: ArmCounts, rule: StoppingRule, rng: np.random.Generator
) -> float:
    """P(the challenger breaches the guardrail).

    Guardrail metrics are rare (unsubscribes, complaints: a few per thousand), and a prior worth
    `prior_weight` sends holds a fraction of one event. For a ratio against control that makes two
    arms with no events yet so uncertain that no challenger could ever look clear, so a relative
    guardrail's prior is worth at least `guardrail_prior_events` events at the segment's base rate
    (the guardrail's own `prior_events` when it sets one).
    An absolute limit keeps the weak prior, so a handful of complaints over the limit counts at once.
    """
    prior_events = rule.guardrail_prior_events if guardrail.prior_events is None else guardrail.prior_events
    weight = max(rule.prior_weight, prior_events / guardrail.base_rate) if guardrail.relative else rule.prior_weight
    counts = {}
    for arm in (control, challenger):
        if guardrail.metric not in arm.guardrails:
            raise ValueError(f"arm {arm.arm} has no counts for guardrail metric {guardrail.metric}")
        count = arm.guardrails[guardrail.metric]
        counts[arm.arm] = posterior(count.events, count.trials, guardrail.base_rate, weight)
    post_k, post_c = counts[control.arm], counts[challenger.arm]
    if not guardrail.relative:
        p_above = post_c.prob_above(guardrail.limit)
        return 1.0 - p_above if guardrail.higher_is_better else p_above
    k, c = post_k.draws(rng, rule.draws), post_c.draws(rng, rule.draws)
    if guardrail.higher_is_better:
        return float((c < k * (1.0 - guardrail.limit)).mean())
    return float((c > k * (1.0 + guardrail.limit)).mean())


def decide(
    arms: Sequence[ArmCounts],
    *,
    control: str,
    planned_shares: Mapping[str, float],
    planned_sample_size: int,
    base_rate: float,
    guardrails: Sequence[Guardrail] = (),
    rule: StoppingRule = DEFAULT_RULE,
    days_running: int,
    seed: int,
    horizon_reached: bool = False,
) -> Decision:
    """Today's decision for one running experiment: continue, promote, retire or roll_back, with reasons.

    In order: a sample-ratio mismatch or a guardrail breach rolls back (any day); then a challenger
    is promoted when P(better) and expected loss clear the final bar on the planned sample, or the
    interim bar before it; the planned sample without a winner retires, and so does running past
    `rule.max_days`; otherwise the experiment continues. See the module docstring for why daily
    looks keep this valid. The evidence's intervals are quantiles of the same seeded draws the
    decision used, so it is self-consistent; `BetaPosterior.interval` gives the exact one.

    `horizon_reached` makes today's look the final one whatever the sample: for experiments whose
    horizon is a fixed window of days (a content piece's variant test, whose adaptive allocation
    leaves weak arms short of any planned sample), not a planned sample.
    """
    names = [a.arm for a in arms]
    if len(set(names)) != len(names) or control not in names or len(names) < 2:
        raise ValueError(f"need distinct arms including control {control!r} and at least one challenger, got {names}")
    if set(planned_shares) != set(names):
        raise ValueError(f"planned shares name {sorted(planned_shares)}, arms are {sorted(names)}")
    if planned_sample_size < 1:
        raise ValueError("planned sample size must be >= 1")
    by_name = {a.arm: a for a in arms}
    control_arm = by_name[control]
    challengers = [a for a in arms if a.arm != control]
    rng = np.random.default_rng(seed)
    posteriors = {a.arm: posterior(a.primary.events, a.primary.trials, base_rate, rule.prior_weight) for a in arms}
    draws = {a.arm: posteriors[a.arm].draws(rng, rule.draws) for a in arms}
    tail = 0.025
    evidence: dict[str, Any] = {
        "rule": rule.to_dict(),
        "days_running": days_running,
        "planned_sample_size": planned_sample_size,
        "base_rate": base_rate,
        "arms": {
            a.arm: {
                "assigned": a.assigned,
                "mature_sends": a.primary.trials,
                "events": a.primary.events,
                "posterior_mean": posteriors[a.arm].mean,
                "interval_95": [float(q) for q in np.quantile(draws[a.arm], [tail, 1 - tail])],
            }
            for a in arms
        },
    }
    srm_evidence, roll_back = _srm(arms, planned_shares, rule)
    evidence["srm"] = srm_evidence

    margin = rule.non_inferiority_margin or 0.0
    comparisons: dict[str, Any] = {}
    for arm in challengers:
        result = _compare_draws(draws[control], draws[arm.arm], margin, 0.95)
        guard_evidence = {}
        for guardrail in guardrails:
            p_breach = _guardrail_breach(guardrail, control_arm, arm, rule, rng)
            breached = p_breach >= rule.guardrail_probability
            guard_evidence[guardrail.metric] = {**guardrail.to_dict(), "p_breach": p_breach, "breached": breached}
            if breached:
                roll_back.append(
                    f"guardrail breached: {arm.arm} {guardrail.describe()} broken with P = {p_breach:.3f} >= {rule.guardrail_probability:g}"
                )
        comparisons[arm.arm] = {**asdict(result), "lift_interval": list(result.lift_interval), "guardrails": guard_evidence}
    evidence["challengers"] = comparisons
    if roll_back:
        return Decision("roll_back", tuple(roll_back), None, evidence)

    mature = min(a.primary.trials for a in arms)
    reached = mature >= planned_sample_size or horizon_reached
    bonferroni = len(challengers)
    if reached:
        bar, look = 1.0 - (1.0 - rule.prob_better) / bonferroni, "final"
    elif rule.interim_probability is not None and mature >= rule.interim_from * planned_sample_size:
        bar, look = 1.0 - (1.0 - rule.interim_probability) / bonferroni, "interim"
    else:
        bar, look = None, "none"
    evidence.update({"look": look, "probability_bar": bar, "mature_sends_min": mature})
    what = f"P(not worse than control × {1 - margin:g})" if margin else "P(better than control)"
    if bar is not None:
        winners = [
            a.arm
            for a in challengers
            if comparisons[a.arm]["p_better"] >= bar
            and comparisons[a.arm]["relative_expected_loss"] <= rule.max_expected_loss
            and all(g["p_breach"] <= rule.promote_max_breach for g in comparisons[a.arm]["guardrails"].values())
        ]
        if winners:
            best = max(winners, key=lambda name: (comparisons[name]["p_better"], comparisons[name]["lift"]))
            c = comparisons[best]
            return Decision(
                "promote",
                (
                    f"{look} look at {mature} mature sends per arm (planned {planned_sample_size}): {best} {what} = "
                    f"{c['p_better']:.4f} >= {bar:.4f}, expected loss {c['relative_expected_loss']:.2%} of control's rate "
                    f"<= {rule.max_expected_loss:.2%}, lift {c['lift']:+.1%} "
                    f"[{c['lift_interval'][0]:+.1%}, {c['lift_interval'][1]:+.1%}]",
                ),
                best,
                evidence,
            )
    best_p = max(comparisons[a.arm]["p_better"] for a in challengers)
    if reached:
        why = (
            "test window over"
            if horizon_reached
            else f"planned sample reached ({mature} >= {planned_sample_size} mature sends per arm)"
        )
        return Decision(
            "retire",
            (
                f"{why} and no challenger cleared the bar "
                f"(best {what} = {best_p:.4f}, bar {bar:.4f}; expected loss at most {rule.max_expected_loss:.2%} of control's rate "
                f"and every guardrail's P(breach) at most {rule.promote_max_breach:g} are needed too)",
            ),
            None,
            evidence,
        )
    if days_running > rule.max_days:
        return Decision(
            "retire",
            (
                f"ran {days_running} days, over the maximum of {rule.max_days}, with {mature} of {planned_sample_size} planned mature sends per arm",
            ),
            None,
            evidence,
        )
    return Decision(
        "continue",
        (
            f"{mature} of {planned_sample_size} planned mature sends per arm ({look} look); best {what} = {best_p:.4f}; no guardrail breached",
        ),
        None,
        evidence,
    )
