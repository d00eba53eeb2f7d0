"""The cross-piece prior (issue 12, item 3): it learns a planted feature effect and the spread of
variants, and the prior used for a period never reads that period or a later one."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers_content import NEGATIVE_LIFT, QUESTION_LIFT, TOPICS, headline, synthetic_tests

from factory_dagster.content.features import feature_frame
from factory_dagster.content.prior import HeadlinePrior, check_variants, empty_prior, fit_prior, priors_by_period


def predicted_lift(prior: HeadlinePrior, topic: str, question: bool, negative: bool) -> float:
    """Predicted log lift of a variant over its twin without the question mark and the negative word."""
    texts = pd.Series([headline(topic, question, negative), headline(topic, False, False)])
    with_it, without = prior.log_lift(feature_frame(texts))
    return float(with_it - without)


def test_prior_learns_planted_feature_effects() -> None:
    prior = fit_prior(synthetic_tests(160, seed=1))
    assert prior.pieces == 160 and prior.variants == 640
    for topic in (TOPICS[0], TOPICS[5]):
        assert predicted_lift(prior, topic, True, False) == pytest.approx(math.log(QUESTION_LIFT), abs=0.05)
        assert predicted_lift(prior, topic, False, True) == pytest.approx(math.log(NEGATIVE_LIFT), abs=0.05)
    assert prior.describe()["is_question"] < -20  # percent per unit


def test_prior_recovers_the_spread_of_variants_net_of_sampling_noise() -> None:
    prior = fit_prior(synthetic_tests(200, seed=2, noise_sd=0.2))
    assert prior.lift_sd == pytest.approx(0.2, abs=0.03)
    # the Beta prior's relative SD at the base rate is the learned spread
    weight = float(prior.weight(prior.base_rate))
    assert 1.0 / math.sqrt(prior.base_rate * weight) == pytest.approx(prior.lift_sd)
    assert 0.008 < prior.base_rate < 0.03


def test_priors_by_period_never_read_the_period_or_later_ones() -> None:
    frame = synthetic_tests(200, seed=3)  # periods 0..9, 20 pieces each
    priors = priors_by_period(frame, min_pieces=20)
    assert sorted(priors) == list(range(10))
    assert priors[0].pieces == 0 and not priors[0].coefficients.any()
    assert [priors[p].pieces for p in range(1, 10)] == [20 * p for p in range(1, 10)]

    altered = frame.copy()
    later = altered["period"] >= 6
    altered.loc[later, "clicks"] = altered.loc[later, "impressions"] // 2  # wildly different later results
    changed = priors_by_period(altered, min_pieces=20)
    for p in range(7):
        assert np.array_equal(priors[p].coefficients, changed[p].coefficients), p
        assert (priors[p].lift_sd, priors[p].base_rate) == (changed[p].lift_sd, changed[p].base_rate)
    assert not np.array_equal(priors[7].coefficients, changed[7].coefficients)


def test_incremental_fit_equals_a_direct_fit_on_earlier_rows() -> None:
    frame = synthetic_tests(120, seed=4, noise_sd=0.1)
    priors = priors_by_period(frame, min_pieces=20)
    direct = fit_prior(frame[frame["period"] < 5])
    assert np.allclose(priors[5].coefficients, direct.coefficients)
    assert priors[5].lift_sd == pytest.approx(direct.lift_sd)
    assert priors[5].base_rate == pytest.approx(direct.base_rate)


def assert_empty(prior: HeadlinePrior) -> None:
    empty = empty_prior()
    assert prior.pieces == 0 and not prior.coefficients.any()
    assert (prior.lift_sd, prior.base_rate) == (empty.lift_sd, empty.base_rate)


def test_too_few_pieces_give_the_empty_prior() -> None:
    frame = synthetic_tests(30, seed=5)
    assert_empty(priors_by_period(frame, min_pieces=50)[1])
    single = frame.groupby("piece_id").head(1)  # one variant per piece: nothing to compare
    assert_empty(fit_prior(single))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("clicks", 30_000, "row 3, column 'clicks': 30000 clicks in 20000 impressions"),
        ("impressions", -1, "column 'impressions'"),
    ],
)
def test_bad_rows_are_named(column: str, value: int, message: str) -> None:
    frame = synthetic_tests(2, seed=6)
    frame.loc[3, column] = value
    with pytest.raises(ValueError, match=message):
        fit_prior(frame)


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match=r"columns missing: \['clicks'"):
        check_variants(synthetic_tests(2, seed=7).drop(columns=["clicks"]))
    with pytest.raises(ValueError, match="period column 'week' missing"):
        priors_by_period(synthetic_tests(2, seed=7), period="week")
