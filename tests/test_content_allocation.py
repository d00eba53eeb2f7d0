"""The content line's experiment engine and the Upworthy replay's scoring (issue 12, items 3 and 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers_content import synthetic_tests

from benchmarks import content_upworthy as bench
from factory_dagster.content.allocation import (
    FINAL_EXPLORATION,
    CrossPiecePrior,
    Engine,
    FlatPrior,
    batch_fractions,
    batch_sizes,
    binomial_audience,
    calibrate,
    centred_lifts,
    expected_clicks,
    horizon_exploration,
    p_best,
    posterior_params,
    run_pieces,
    variant_shares,
)
from factory_dagster.content.features import feature_frame
from factory_dagster.content.prior import fit_prior
from factory_dagster.improve.stats import posterior

NAN = np.nan


def test_batches_sum_to_each_total() -> None:
    totals = np.array([0, 7, 10, 12_345, 99_999])
    for batches, growth in ((10, 1.0), (13, 1.0), (10, 1.3)):
        sizes = batch_sizes(totals, batches, growth)
        assert sizes.shape == (batches, len(totals))
        assert (sizes >= 0).all()
        assert np.array_equal(sizes.sum(axis=0), totals)
    assert np.array_equal(batch_sizes(np.array([100]), 10)[:, 0], [10] * 10)
    assert batch_fractions(3, 2.0) == pytest.approx([1 / 7, 2 / 7, 4 / 7])
    with pytest.raises(ValueError, match="at least one batch"):
        batch_fractions(0)


def test_run_allocates_every_impression_in_at_least_ten_batches() -> None:
    rates = np.array([[0.02, 0.01, NAN, NAN], [0.03, 0.03, 0.03, 0.05], [0.01, 0.011, 0.012, NAN]])
    totals = np.array([10_001, 54_321, 777])
    variants = np.array([2, 4, 3])
    rng = np.random.default_rng(0)
    result = run_pieces(totals, variants, FlatPrior(), binomial_audience(rates, rng), Engine(batches=12), rng)
    assert np.array_equal(result.impressions.sum(axis=1), totals)
    assert result.shares.shape == (12, 3, 4)
    assert np.allclose(result.shares.sum(axis=2), 1.0)
    assert (result.impressions[0, 2:] == 0).all() and result.impressions[2, 3] == 0  # no impression beyond a piece's variants
    assert (result.clicks <= result.impressions).all()
    # Thompson sampling moves the traffic to the clear winners
    assert result.shares[-1, 0, 0] > 0.9 and result.shares[-1, 1, 3] > 0.9


def test_a_bad_audience_answer_is_refused() -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="batch 0: respond must return"):
        run_pieces(np.array([100]), np.array([2]), FlatPrior(), lambda n, _b: n + 1, Engine(), rng)


def test_posteriors_match_the_loops_beta_binomial_update() -> None:
    shown = np.array([[400.0, 600.0, 0.0]])
    clicked = np.array([[8.0, 3.0, 0.0]])
    alpha, beta = posterior_params(FlatPrior(), shown, clicked)
    flat = posterior(8, 400, prior_rate=0.5, prior_weight=2.0)
    assert (alpha[0, 0], beta[0, 0]) == pytest.approx((flat.alpha, flat.beta))
    prior = CrossPiecePrior(np.array([[1.2, 0.8, 1.0]]), np.array([0.02]), np.array([500.0]), base_weight=1000.0)
    alpha, beta = posterior_params(prior, shown, clicked)
    base = (11 + 0.02 * 1000) / (1000 + 1000)  # the piece's pooled rate, shrunk to the earlier pieces' rate
    for i, (mean, n, c) in enumerate(((1.2 * base, 400, 8), (0.8 * base, 600, 3), (base, 0, 0))):
        expected = posterior(c, n, prior_rate=mean, prior_weight=500.0)
        assert (alpha[0, i], beta[0, i]) == pytest.approx((expected.alpha, expected.beta))


def test_p_best_sums_to_one_and_follows_the_evidence() -> None:
    rng = np.random.default_rng(2)
    alpha = np.array([[50.0, 50.0, NAN], [200.0, 100.0, 100.0]])
    beta = np.array([[5000.0, 5000.0, NAN], [9800.0, 9900.0, 9900.0]])
    shares = p_best(alpha, beta, np.array([2, 3]), rng, draws=4000)
    assert np.allclose(shares.sum(axis=1), 1.0)
    assert shares[0, 2] == 0
    assert shares[0, 0] == pytest.approx(0.5, abs=0.05)
    assert shares[1, 0] > 0.99
    # less exploration: the same means, sharper draws
    close = (np.array([[55.0, 50.0]]), np.array([[5000.0, 5000.0]]))
    explore = p_best(*close, np.array([2]), np.random.default_rng(3), 4000, exploration=1.0)[0, 0]
    exploit = p_best(*close, np.array([2]), np.random.default_rng(3), 4000, exploration=0.1)[0, 0]
    assert 0.6 < explore < exploit


def test_variant_shares_is_seeded_and_checks_its_input() -> None:
    args = ([1000, 1000, 10], [30, 20, 0], [0.02, 0.02, 0.03], 500.0)
    first = variant_shares(*args, seed=7)
    assert np.array_equal(first, variant_shares(*args, seed=7))
    assert first.sum() == pytest.approx(1.0) and first[0] > first[1]
    with pytest.raises(ValueError, match="one value per variant"):
        variant_shares([10, 10], [1], [0.1, 0.1], 10.0)
    with pytest.raises(ValueError, match="0 <= clicks <= impressions"):
        variant_shares([10, 10], [1, 11], [0.1, 0.1], 10.0)


def test_the_learned_prior_steers_the_first_batch_to_the_better_variant() -> None:
    history = synthetic_tests(160, seed=11)
    prior = fit_prior(history)
    new = synthetic_tests(40, seed=12).sort_values(["piece_id", "headline"], kind="stable")
    lift = centred_lifts(prior.log_lift(new).reshape(40, 4))
    headlines = new["headline"].to_numpy().reshape(40, 4)
    best = np.array([[("?" not in h) and h.startswith("Terrible") for h in row] for row in headlines])
    base = np.full(40, prior.base_rate)
    seeded = CrossPiecePrior(lift, base, prior.weight(base))
    alpha, beta = posterior_params(seeded, np.zeros((40, 4)), np.zeros((40, 4)))
    first = p_best(alpha, beta, np.full(40, 4), np.random.default_rng(4), draws=2000)
    assert first[best].mean() > 0.4  # an even split gives each variant 0.25
    flat_alpha, flat_beta = posterior_params(FlatPrior(), np.zeros((40, 4)), np.zeros((40, 4)))
    assert p_best(flat_alpha, flat_beta, np.full(40, 4), np.random.default_rng(4), 2000)[best].mean() == pytest.approx(
        0.25, abs=0.02
    )


def test_calibration_scores_every_candidate_on_finished_pieces() -> None:
    rates = np.tile([0.012, 0.010, 0.015, 0.011], (60, 1))
    totals = np.full(60, 20_000)
    priors = {"flat": FlatPrior()}
    best, scores = calibrate(rates, totals, np.full(60, 4), priors, (1.0, 0.125), Engine(batches=10, draws=64), seed=5)
    assert set(scores) == {("flat", 1.0), ("flat", 0.125)}
    assert best == max(scores, key=scores.get)
    assert all(0.7 < share <= 1.0 for share in scores.values())


# ---------------------------------------------------------------- the benchmark's scoring


def tiny_frame() -> pd.DataFrame:
    """Three tests with known answers: B (week 2) has a clear winner, A (week 1) three equal packages, C one package."""
    return pd.DataFrame(
        {
            "piece_id": ["b", "b", "a", "a", "a", "c"],
            "period": [2, 2, 1, 1, 1, 1],
            "headline": ["Why It Works?", "It Works", "Same", "Same", "Same", "Alone"],
            "impressions": [1_000_000, 1_000_000, 500_000, 500_000, 500_000, 100],
            "clicks": [20_000, 10_000, 15_000, 15_000, 15_000, 5],
        }
    )


def test_prepare_orders_tests_and_drops_single_packages() -> None:
    tests = bench.prepare(tiny_frame())
    assert list(tests.ids) == ["a", "b"] and tests.dropped_single == 1
    assert list(tests.totals) == [1_500_000, 2_000_000]
    assert list(tests.variants) == [3, 2]
    assert np.allclose(tests.rates, [[0.03, 0.03, 0.03], [0.02, 0.01, NAN]], equal_nan=True)
    assert len(bench.prepare(tiny_frame(), exclude_periods=(2, 2))) == 1
    bad = tiny_frame()
    bad.loc[4, "clicks"] = 600_000
    with pytest.raises(ValueError, match="tiny.parquet, row 4, columns 'clicks' and 'impressions': 600000 clicks in 500000"):
        bench.prepare(bad, source="tiny.parquet")


def test_scores_of_the_baselines_are_the_known_answers() -> None:
    tests = bench.prepare(tiny_frame())
    oracle = bench.oracle_clicks(tests)
    assert list(oracle) == pytest.approx([45_000, 40_000])
    assert bench.uniform_clicks(tests).sum() / oracle.sum() == pytest.approx((45_000 + 30_000) / 85_000)
    # explore-then-commit: half even, then the leader, which a million impressions per arm finds for sure
    etc = bench.etc_clicks(tests, np.random.default_rng(0))
    assert etc == pytest.approx([45_000, 0.5 * 30_000 + 0.5 * 40_000])


def test_score_runs_the_whole_replay_on_a_small_set() -> None:
    frame = synthetic_tests(30, seed=21, pieces_per_period=10, impressions=5_000)[
        ["piece_id", "period", "headline", "impressions", "clicks"]
    ]
    tests = bench.prepare(frame)
    figures = bench.score(tests, seeds=(0,), more_batches=None)
    assert figures["tests"] == 30 and figures["packages"] == 120
    rates = tests.rates
    even = (rates.mean(axis=1) * tests.totals).sum() / (rates.max(axis=1) * tests.totals).sum()
    assert figures["uniform_share"] == pytest.approx(even, abs=1e-4)
    for key in ("oracle_share", "thompson_share", "no_prior_share", "etc_share", "thompson_prior_share"):
        assert figures["uniform_share"] - 0.02 < figures[key] <= 1.0, key
    assert figures["oracle_share"] > figures["uniform_share"]
    assert figures["calibration"][0]["exploration"] == 1.0  # nothing finished yet: plain Thompson sampling


def test_expected_clicks_ignore_padding() -> None:
    assert list(expected_clicks(np.array([[100.0, 50.0, 0.0]]), np.array([[0.1, 0.2, NAN]]))) == pytest.approx([20.0])


def test_shipped_data_is_the_archive_with_its_readme() -> None:
    assert bench.DATA.exists() and (bench.DATA.parent / "README.md").exists()
    readme = (bench.DATA.parent / "README.md").read_text()
    assert "CC BY 4.0" in readme and "Matias" in readme
    frame = bench.load_frame()
    assert len(frame) == 22_666 and frame["piece_id"].nunique() == 4_873
    assert feature_frame(frame["headline"].head(3)).shape == (3, 15)


def test_exploration_fades_with_the_impressions_still_to_come() -> None:
    equal = batch_fractions(10)
    assert horizon_exploration(0.25, 0, equal) == pytest.approx(0.25)  # the first batch explores fully
    assert horizon_exploration(0.25, 5, equal) == pytest.approx(0.25 * 4 / 9)  # 4 of 10 parts to come, 9 after the first
    assert horizon_exploration(0.25, 9, equal) == pytest.approx(0.25 * FINAL_EXPLORATION)  # the last is nearly greedy
    assert horizon_exploration(0.25, 0, batch_fractions(1)) == 0.25  # a single batch has no horizon to fade over
    # In the replay: the fading engine puts more of a clear test's last batch on its leader than plain Thompson.
    rates = np.array([[0.010, 0.013]])
    shares = {}
    for aware in (True, False):
        rng = np.random.default_rng(3)
        engine = Engine(batches=10, exploration=1.0, horizon_aware=aware)
        shares[aware] = run_pieces(
            np.array([40_000]), np.array([2]), FlatPrior(), binomial_audience(rates, rng), engine, rng
        ).shares
    assert shares[True][-1, 0, 1] > shares[False][-1, 0, 1]
