"""Improve-stage statistics: known answers for the special functions and design formulas, and
simulations showing the stopping rule keeps its error rates although it is read every day."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from factory_dagster.improve.stats import (
    DEFAULT_RULE,
    ArmCounts,
    BetaPosterior,
    Count,
    Guardrail,
    StoppingRule,
    beta_cdf,
    beta_ppf,
    binomial_p_value,
    chi_square_sf,
    compare,
    decide,
    p_non_inferior,
    planned_sample_size,
    posterior,
    seed_for,
    srm_p_value,
    srm_sequential_p_value,
)

# ---------------------------------------------------------------- special functions


def _binomial_tail(x: float, a: int, b: int) -> float:
    """I_x(a, b) for integer a, b equals P(Binomial(a + b - 1, x) >= a): an independent exact answer."""
    n = a + b - 1
    return sum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1))


@pytest.mark.parametrize(("x", "a", "b"), [(0.3, 1, 1), (0.2, 3, 5), (0.03, 13, 250), (0.06, 40, 600), (0.5, 7, 7), (0.9, 30, 4)])
def test_beta_cdf_matches_the_binomial_identity(x: float, a: int, b: int) -> None:
    assert beta_cdf(x, a, b) == pytest.approx(_binomial_tail(x, a, b), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("q", [0.025, 0.5, 0.975])
def test_beta_ppf_matches_closed_forms(q: float) -> None:
    assert beta_ppf(q, 4.0, 1.0) == pytest.approx(q ** (1 / 4), abs=1e-10)  # CDF x^a
    assert beta_ppf(q, 1.0, 6.0) == pytest.approx(1 - (1 - q) ** (1 / 6), abs=1e-10)  # CDF 1 - (1-x)^b
    assert beta_ppf(0.5, 9.0, 9.0) == pytest.approx(0.5, abs=1e-10)
    assert beta_cdf(beta_ppf(q, 12.5, 480.5), 12.5, 480.5) == pytest.approx(q, abs=1e-9)


def test_chi_square_sf_matches_hand_formulas() -> None:
    for x in (0.5, 1.6, 3.84, 10.0, 30.0):
        assert chi_square_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-10)
        assert chi_square_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-10)
        # even df: exp(-x/2) * sum_{k < df/2} (x/2)^k / k!
        assert chi_square_sf(x, 6) == pytest.approx(
            math.exp(-x / 2) * sum((x / 2) ** k / math.factorial(k) for k in range(3)), rel=1e-10
        )
    assert chi_square_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)  # the textbook 5% critical value
    assert chi_square_sf(0.0, 3) == 1.0
    with pytest.raises(ValueError):
        chi_square_sf(1.0, 0)


# ---------------------------------------------------------------- posteriors


def test_posterior_adds_the_base_rate_prior_to_the_data() -> None:
    post = posterior(12, 400, prior_rate=0.05, prior_weight=50)
    assert (post.alpha, post.beta) == pytest.approx((2.5 + 12, 47.5 + 388))
    assert post.mean == pytest.approx(14.5 / 450)
    no_data = posterior(0, 0, prior_rate=0.05, prior_weight=50)
    assert no_data.mean == pytest.approx(0.05)
    for bad in [(5, 4, 0.05, 50), (-1, 4, 0.05, 50), (1, 4, 0.0, 50), (1, 4, 0.05, 0)]:
        with pytest.raises(ValueError):
            posterior(*bad)


def test_credible_interval_is_equal_tailed() -> None:
    post = posterior(30, 900, prior_rate=0.04, prior_weight=50)
    lo, hi = post.interval(0.95)
    assert beta_cdf(lo, post.alpha, post.beta) == pytest.approx(0.025, abs=1e-9)
    assert beta_cdf(hi, post.alpha, post.beta) == pytest.approx(0.975, abs=1e-9)
    assert lo < post.mean < hi
    draws = np.random.default_rng(7).beta(post.alpha, post.beta, 400_000)
    assert np.quantile(draws, [0.025, 0.975]) == pytest.approx([lo, hi], rel=5e-3)
    narrower = posterior(300, 9000, prior_rate=0.04, prior_weight=50).interval(0.95)
    assert narrower[1] - narrower[0] < (hi - lo) / 2


def test_credible_interval_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    post = posterior(17, 640, prior_rate=0.03, prior_weight=20)
    expected = stats.beta.ppf([0.05, 0.95], post.alpha, post.beta)
    assert post.interval(0.90) == pytest.approx(tuple(expected), rel=1e-8)


# ---------------------------------------------------------------- comparisons


def _exact_p_better(control: BetaPosterior, challenger: BetaPosterior) -> float:
    """P(challenger > control) for Betas with integer challenger alpha (Evan Miller's closed form)."""

    def log_beta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    a_a, b_a, a_b, b_b = control.alpha, control.beta, challenger.alpha, challenger.beta
    return sum(
        math.exp(log_beta(a_a + i, b_a + b_b) - math.log(b_b + i) - log_beta(1 + i, b_b) - log_beta(a_a, b_a))
        for i in range(int(a_b))
    )


def test_p_better_matches_the_closed_form_and_is_seeded() -> None:
    control = posterior(30, 500, prior_rate=0.05, prior_weight=100)  # Beta(35, 565)
    challenger = posterior(45, 500, prior_rate=0.05, prior_weight=100)  # Beta(50, 550)
    exact = _exact_p_better(control, challenger)
    result = compare(control, challenger, draws=200_000, seed=3)
    assert 0.9 < exact < 0.99
    assert result.p_better == pytest.approx(exact, abs=0.003)
    assert compare(control, challenger, draws=20_000, seed=11) == compare(control, challenger, draws=20_000, seed=11)
    assert compare(control, challenger, draws=20_000, seed=11) != compare(control, challenger, draws=20_000, seed=12)
    # choosing the better arm risks little; choosing the worse one risks the gap
    reverse = compare(challenger, control, draws=200_000, seed=3)
    assert result.expected_loss < reverse.expected_loss
    assert reverse.expected_loss - result.expected_loss == pytest.approx(challenger.mean - control.mean, rel=0.02)
    assert result.lift == pytest.approx(challenger.mean / control.mean - 1, abs=0.01)
    assert result.lift_interval[0] < result.lift < result.lift_interval[1]


def test_identical_arms_are_a_coin_flip_and_non_inferiority_grows_with_the_margin() -> None:
    arm = posterior(100, 2000, prior_rate=0.05, prior_weight=50)
    assert compare(arm, arm, draws=50_000, seed=1).p_better == pytest.approx(0.5, abs=0.01)
    margins = [p_non_inferior(arm, arm, m, draws=50_000, seed=1) for m in (0.05, 0.1, 0.2, 0.4)]
    assert margins == sorted(margins)
    assert margins[0] > 0.6 and margins[-1] > 0.999
    with pytest.raises(ValueError):
        p_non_inferior(arm, arm, 1.0)


# ---------------------------------------------------------------- design: power and SRM


def test_power_calculation_matches_the_textbook_value() -> None:
    # p1 = 5%, p2 = 6% (+20% relative), alpha 0.05 two-sided, power 0.8:
    # (1.959964 * sqrt(2 * .055 * .945) + 0.841621 * sqrt(.05 * .95 + .06 * .94))^2 / .01^2 = 8157.7
    assert planned_sample_size(0.05, 0.20, alpha=0.05, power=0.8) == 8158
    assert planned_sample_size(0.05, 0.30) < planned_sample_size(0.05, 0.20) < planned_sample_size(0.05, 0.10)
    assert planned_sample_size(0.02, 0.20) > planned_sample_size(0.05, 0.20)  # a rarer outcome needs more sends
    assert planned_sample_size(0.05, 0.20, power=0.9) > 8158
    for bad in [(0.0, 0.2), (0.05, 0.0), (0.6, 1.0), (0.05, 0.2, 1.2)]:
        with pytest.raises(ValueError):
            planned_sample_size(*bad)


def test_srm_p_value_matches_a_hand_computed_chi_square() -> None:
    # 520 / 480 against 50/50: chi2 = 2 * 20^2 / 500 = 1.6, df 1, p = erfc(sqrt(0.8)) = 0.20590
    assert srm_p_value([520, 480], [0.5, 0.5]) == pytest.approx(0.2059032107, rel=1e-8)
    # 300 / 330 / 370 against 30/30/40: chi2 = 0 + 900/300 + 900/400 = 5.25, df 2, p = exp(-2.625)
    assert srm_p_value([300, 330, 370], [0.3, 0.3, 0.4]) == pytest.approx(math.exp(-2.625), rel=1e-10)
    assert srm_p_value([300, 330, 370], [3, 3, 4]) == srm_p_value([300, 330, 370], [0.3, 0.3, 0.4])  # shares normalised
    assert srm_p_value([500, 500], [0.5, 0.5]) == pytest.approx(1.0)
    assert srm_p_value([600, 400], [0.5, 0.5]) < 1e-9
    with pytest.raises(ValueError):
        srm_p_value([1, 2, 3], [0.5, 0.5])


def test_binomial_p_value_is_scipys_exact_two_sided_test() -> None:
    from scipy.stats import binomtest

    for trials, share in [(20, 0.05), (37, 0.1), (200, 0.5), (1000, 0.05), (100_000, 0.05)]:
        for successes in sorted({0, 1, trials // 20, trials // 10, trials // 2, trials}):
            expected = binomtest(successes, trials, share).pvalue
            assert binomial_p_value(successes, trials, share) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    # 5 of 20 at 5%: P = 0.00257 exactly, where the chi-square approximation says 4e-5 (expected count 1)
    assert binomial_p_value(5, 20, 0.05) == pytest.approx(0.0025739403347, rel=1e-9)
    assert srm_p_value([5, 15], [0.05, 0.95]) < 1e-4
    for bad in [(3, 2, 0.5), (-1, 2, 0.5), (1, 2, 0.0), (1, 2, 1.0)]:
        with pytest.raises(ValueError):
            binomial_p_value(*bad)


# ---------------------------------------------------------------- the stopping rule

BASE = 0.05
MDE = 0.30
PLANNED = planned_sample_size(BASE, MDE)
UNSUB = Guardrail("unsubscribe_rate", limit=0.5, base_rate=0.005, relative=True)
COMPLAINTS = Guardrail("complaint_rate", limit=0.003, base_rate=0.0008)
SIM_RULE = StoppingRule(draws=4000)  # fewer draws keep 400 simulated experiments fast; thresholds are the defaults
HALVES = {"control": 0.5, "challenger": 0.5}


def _arm(
    name: str, assigned: int, sends: int, events: int, unsubs: int | None = None, complaints: int | None = None
) -> ArmCounts:
    """An arm whose guardrail metrics sit at their base rates unless told otherwise."""
    unsubs = round(UNSUB.base_rate * sends) if unsubs is None else unsubs
    complaints = round(COMPLAINTS.base_rate * sends) if complaints is None else complaints
    return ArmCounts(
        name,
        assigned,
        Count(events, sends),
        {"unsubscribe_rate": Count(unsubs, sends), "complaint_rate": Count(complaints, sends)},
    )


def _decide(
    arms: list[ArmCounts],
    *,
    days: int = 5,
    rule: StoppingRule = DEFAULT_RULE,
    shares: dict | None = None,
    seed: int = 1,
    guardrails: tuple[Guardrail, ...] = (UNSUB, COMPLAINTS),
    horizon_reached: bool = False,
):
    return decide(
        arms,
        control="control",
        planned_shares=shares or HALVES,
        planned_sample_size=PLANNED,
        base_rate=BASE,
        guardrails=guardrails,
        rule=rule,
        horizon_reached=horizon_reached,
        days_running=days,
        seed=seed,
    )


@dataclass(frozen=True)
class SimResult:
    action: str
    day: int
    naive_promoted: bool  # would "promote on any day P(better) >= 0.95" have promoted it?


def _simulate(
    lift: float, experiments: int, seed: int, *, unsub_ratio: float = 1.0, guardrails: tuple = (UNSUB, COMPLAINTS)
) -> list[SimResult]:
    """Daily A/B experiments: 600 leads a day split by coin flip, outcomes mature 2 days later, one look a day."""
    rng = np.random.default_rng(seed)
    rates = {"control": (BASE, 0.005), "challenger": (BASE * (1 + lift), 0.005 * unsub_ratio)}
    results = []
    for e in range(experiments):
        assigned = dict.fromkeys(rates, 0)
        days: list[dict[str, tuple[int, int, int, int]]] = []
        naive = False
        for day in range(1, 200):
            to_challenger = int(rng.binomial(600, 0.5))
            today = {}
            for arm, n in (("control", 600 - to_challenger), ("challenger", to_challenger)):
                assigned[arm] += n
                rate, unsub = rates[arm]
                today[arm] = (n, int(rng.binomial(n, rate)), int(rng.binomial(n, unsub)), int(rng.binomial(n, 0.0008)))
            days.append(today)
            mature = days[:-2]
            arms = [_arm(arm, assigned[arm], *(sum(d[arm][k] for d in mature) for k in range(4))) for arm in rates]
            decision = _decide(arms, days=day, rule=SIM_RULE, seed=seed_for("sim", seed, e, day), guardrails=guardrails)
            naive = naive or (mature != [] and decision.evidence["challengers"]["challenger"]["p_better"] >= 0.95)
            if decision.action != "continue":
                results.append(SimResult(decision.action, day, naive))
                break
    return results


@pytest.fixture(scope="module")
def aa_runs() -> list[SimResult]:
    return _simulate(0.0, 200, seed=20260101)


def test_aa_experiments_read_daily_are_rarely_promoted(aa_runs: list[SimResult]) -> None:
    actions = Counter(r.action for r in aa_runs)
    false_promotion = actions["promote"] / len(aa_runs)
    naive_rate = sum(r.naive_promoted for r in aa_runs) / len(aa_runs)
    assert len(aa_runs) == 200 and sum(actions.values()) == 200  # every experiment ended
    assert false_promotion <= 0.05, f"A/A false promotions {false_promotion:.1%} ({actions})"
    # peeking matters: promoting on the first day P(better) >= 0.95 would have promoted far more A/A experiments
    assert naive_rate >= 0.10 and naive_rate >= 2 * false_promotion, f"naive {naive_rate:.1%} vs rule {false_promotion:.1%}"
    # and most A/A experiments end as they should, retired at the planned sample
    assert actions["retire"] / len(aa_runs) >= 0.85, f"{actions}"
    assert max(r.day for r in aa_runs) <= math.ceil(PLANNED / 300) + 3


def test_aa_experiments_are_rarely_rolled_back_by_noise(aa_runs: list[SimResult]) -> None:
    assert sum(r.action == "roll_back" for r in aa_runs) / len(aa_runs) <= 0.06


def test_a_real_lift_is_promoted_most_of_the_time() -> None:
    runs = _simulate(0.30, 200, seed=20260202, guardrails=(COMPLAINTS,))
    actions = Counter(r.action for r in runs)
    assert actions["promote"] / len(runs) >= 0.75, f"+30% lift promoted {actions['promote'] / len(runs):.1%} ({actions})"
    assert actions["roll_back"] / len(runs) <= 0.03


def test_a_trap_arm_with_more_replies_and_more_unsubscribes_is_never_promoted() -> None:
    horizon = math.ceil(PLANNED / 300) + 2  # the day the planned sample matures
    blatant = _simulate(0.30, 30, seed=5, unsub_ratio=4.0)
    assert [r.action for r in blatant] == ["roll_back"] * 30
    days = sorted(r.day for r in blatant)
    assert days[len(days) // 2] <= 8 and days[-1] < horizon, days  # mostly within days of the first outcomes maturing
    # three times the unsubscribes: rolled back or, where the breach is not yet certain, at least not promoted
    tripled = Counter(r.action for r in _simulate(0.30, 30, seed=6, unsub_ratio=3.0))
    assert tripled["promote"] == 0 and tripled["roll_back"] >= 18, tripled


def test_guardrail_breach_rolls_back_at_once_even_when_the_primary_metric_wins() -> None:
    arms = [_arm("control", 800, 600, 30, unsubs=3), _arm("challenger", 800, 600, 60, unsubs=22)]
    decision = _decide(arms, days=3)
    assert decision.action == "roll_back" and decision.winner is None
    assert any("unsubscribe_rate" in r for r in decision.reasons)
    assert decision.evidence["challengers"]["challenger"]["p_better"] > 0.99
    assert decision.evidence["challengers"]["challenger"]["guardrails"]["unsubscribe_rate"]["breached"] is True
    # the same primary figures without the unsubscribes are not rolled back
    calm = _decide([_arm("control", 800, 600, 30, unsubs=3), _arm("challenger", 800, 600, 60, unsubs=3)], days=3)
    assert calm.action == "continue"


def test_absolute_guardrail_breach_rolls_back() -> None:
    arms = [_arm("control", 800, 600, 30, complaints=0), _arm("challenger", 800, 600, 30, complaints=8)]
    decision = _decide(arms)
    assert decision.action == "roll_back" and any("complaint_rate <= 0.003" in r for r in decision.reasons)


def test_the_sequential_srm_p_value_is_anytime_valid_and_still_finds_broken_assignment() -> None:
    # A Dirichlet-multinomial Bayes factor: exact on a tiny case (prior Dirichlet(50, 50) against 50/50, counts 2 and 0).
    assert srm_sequential_p_value([2, 0], [0.5, 0.5]) == pytest.approx(1 / ((50 / 100) * (51 / 101) / 0.25))
    assert srm_sequential_p_value([500, 500], [1, 1]) == 1.0
    rng = np.random.default_rng(5)
    days, per_day = 60, 30

    def ever_alarms(rate: float, p_value) -> bool:
        challenger = np.cumsum(rng.binomial(per_day, rate, size=days))
        total = np.cumsum(np.full(days, per_day))
        return min(p_value([int(n - c), int(c)], [0.8, 0.2]) for n, c in zip(total, challenger, strict=True)) < 0.01

    # Looked at after every day of a correct 80/20 assignment: the chi-square test alarms far more often
    # than its level, the sequential one stays under it.
    runs = 400
    sequential = sum(ever_alarms(0.2, srm_sequential_p_value) for _ in range(runs)) / runs
    chi_square = sum(ever_alarms(0.2, srm_p_value) for _ in range(runs)) / runs
    assert sequential <= 0.01 < chi_square
    # A broken assignment (25% instead of 20%) is still caught within the 60 days.
    assert sum(ever_alarms(0.25, srm_sequential_p_value) for _ in range(50)) >= 45


def test_sample_ratio_mismatch_rolls_back() -> None:
    arms = [_arm("control", 1200, 1000, 50), _arm("challenger", 800, 700, 35)]
    decision = _decide(arms)
    assert decision.action == "roll_back"
    assert decision.evidence["srm"]["p_value"] < 1e-15
    assert any(r.startswith("sample-ratio mismatch") for r in decision.reasons)
    # the same counts are fine when the plan was 60/40
    planned_60_40 = _decide(arms, shares={"control": 0.6, "challenger": 0.4})
    assert planned_60_40.action == "continue" and planned_60_40.evidence["srm"]["p_value"] > 0.5
    # too few assignments to test: no verdict rather than a false alarm
    assert _decide([_arm("control", 4, 0, 0), _arm("challenger", 0, 0, 0)]).evidence["srm"]["p_value"] is None


def test_planned_sample_without_a_winner_retires_and_a_clear_winner_is_promoted() -> None:
    flat = _decide([_arm("control", PLANNED, PLANNED, 190), _arm("challenger", PLANNED, PLANNED, 192)], days=14)
    assert flat.action == "retire" and flat.evidence["look"] == "final"
    win = _decide([_arm("control", PLANNED, PLANNED, 190), _arm("challenger", PLANNED, PLANNED, 250)], days=14)
    assert win.action == "promote" and win.winner == "challenger"
    assert win.evidence["challengers"]["challenger"]["relative_expected_loss"] <= StoppingRule().max_expected_loss
    json.dumps(win.evidence, allow_nan=False)  # the evidence goes into raw.experiment_events as is


def test_before_the_planned_sample_only_an_overwhelming_result_promotes() -> None:
    half = PLANNED // 2 + 10
    # P(better) about 0.99: enough at the final look, not at an interim one
    modest = _decide([_arm("control", half, half, 95), _arm("challenger", half, half, 128)])
    assert modest.action == "continue" and modest.evidence["look"] == "interim"
    assert 0.95 < modest.evidence["challengers"]["challenger"]["p_better"] < 0.999
    strong = _decide([_arm("control", half, half, 95), _arm("challenger", half, half, 160)])
    assert strong.action == "promote" and strong.evidence["look"] == "interim"
    no_interim = _decide(
        [_arm("control", half, half, 95), _arm("challenger", half, half, 160)], rule=StoppingRule(interim_probability=None)
    )
    assert no_interim.action == "continue"
    early = _decide([_arm("control", 300, 300, 5), _arm("challenger", 300, 300, 40)])  # under half the sample: no look at all
    assert early.action == "continue" and early.evidence["look"] == "none"


def test_a_window_horizon_makes_the_look_final_whatever_the_sample() -> None:
    # A content piece's adaptive split leaves weak arms far short of the planned sample; its window's last day decides.
    arms = [_arm("control", 300, 300, 5), _arm("challenger", 300, 300, 40)]
    assert _decide(arms).action == "continue"
    final = _decide(arms, horizon_reached=True, guardrails=())
    assert final.action == "promote" and final.evidence["look"] == "final"
    flat = _decide([_arm("control", 300, 300, 10), _arm("challenger", 300, 300, 11)], horizon_reached=True)
    assert flat.action == "retire" and flat.reasons[0].startswith("test window over")


def test_running_past_the_maximum_retires() -> None:
    arms = [_arm("control", 900, 800, 40), _arm("challenger", 900, 800, 41)]
    assert _decide(arms, days=60).action == "continue"
    late = _decide(arms, days=61)
    assert late.action == "retire" and "maximum of 60" in late.reasons[0]


def test_several_challengers_share_the_error_budget_and_the_best_wins() -> None:
    n = PLANNED
    arms = [_arm("control", n, n, 190), _arm("b", n, n, 228), _arm("c", n, n, 250)]
    decision = decide(
        arms,
        control="control",
        planned_shares={"control": 1, "b": 1, "c": 1},
        planned_sample_size=n,
        base_rate=BASE,
        days_running=14,
        seed=9,
    )
    assert decision.evidence["probability_bar"] == pytest.approx(1 - 0.05 / 2)
    assert decision.action == "promote" and decision.winner == "c"


def test_non_inferiority_canary_promotes_an_equal_cheaper_arm() -> None:
    arms = [_arm("control", PLANNED, PLANNED, 190), _arm("challenger", PLANNED, PLANNED, 188)]
    assert _decide(arms, days=14).action == "retire"  # not better...
    canary = _decide(arms, days=14, rule=StoppingRule(non_inferiority_margin=0.2))
    assert canary.action == "promote"  # ...but not worse than control × 0.8
    worse = _decide(
        [_arm("control", PLANNED, PLANNED, 190), _arm("challenger", PLANNED, PLANNED, 130)],
        rule=StoppingRule(non_inferiority_margin=0.2),
    )
    assert worse.action == "retire"


def test_higher_is_better_guardrail_rolls_back_a_canary_that_drops_quality() -> None:
    first_pass = Guardrail("first_pass_rate", limit=0.1, base_rate=0.85, relative=True, higher_is_better=True)
    arms = [
        ArmCounts("control", 500, Count(20, 400), {"first_pass_rate": Count(430, 500)}),
        ArmCounts("challenger", 500, Count(20, 400), {"first_pass_rate": Count(330, 500)}),
    ]
    kwargs = dict(control="control", planned_shares=HALVES, planned_sample_size=PLANNED, base_rate=BASE, days_running=2, seed=4)
    assert decide(arms, guardrails=(first_pass,), **kwargs).action == "roll_back"
    held = [arms[0], ArmCounts("challenger", 500, Count(20, 400), {"first_pass_rate": Count(425, 500)})]
    assert decide(held, guardrails=(first_pass,), **kwargs).action == "continue"


def test_decisions_are_deterministic_for_a_seed_and_inputs_are_checked() -> None:
    arms = [_arm("control", 2000, 2000, 100), _arm("challenger", 2000, 2000, 115)]
    assert _decide(arms, seed=77) == _decide(arms, seed=77)
    assert _decide(arms, seed=77).evidence != _decide(arms, seed=78).evidence
    with pytest.raises(ValueError, match="control"):
        decide(arms, control="nope", planned_shares=HALVES, planned_sample_size=10, base_rate=BASE, days_running=1, seed=1)
    with pytest.raises(ValueError, match="planned shares"):
        decide(
            arms, control="control", planned_shares={"control": 1}, planned_sample_size=10, base_rate=BASE, days_running=1, seed=1
        )
    with pytest.raises(ValueError, match="guardrail metric"):
        decide(
            [ArmCounts("control", 10, Count(1, 10)), ArmCounts("challenger", 10, Count(1, 10))],
            control="control",
            planned_shares=HALVES,
            planned_sample_size=10,
            base_rate=BASE,
            guardrails=(UNSUB,),
            days_running=1,
            seed=1,
        )
    with pytest.raises(ValueError):
        Count(5, 4)
    with pytest.raises(ValueError):
        StoppingRule(interim_probability=0.9)  # an interim bar below the final one would invite peeking
