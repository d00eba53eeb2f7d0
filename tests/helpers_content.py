"""Synthetic headline tests with planted feature effects, for the content line's prior and engine tests."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from factory_dagster.content.features import feature_frame

TOPICS = (
    "The Mayor Explains His Budget",
    "A Teacher Reads Letters From Her Students",
    "Scientists Measure The Melting Glacier",
    "This Town Built Its Own Internet",
    "Nurses Describe A Night Shift",
    "What Happens When A Factory Closes",
    "Kids Review Their School Lunches",
    "An Economist Draws The Housing Market",
)
QUESTION_LIFT = 0.7  # a question mark costs 30% of the clicks
NEGATIVE_LIFT = 1.25  # a negative word adds 25%


def headline(topic: str, question: bool, negative: bool) -> str:
    return f"{'Terrible News: ' if negative else ''}{topic}{'?' if question else ''}"


def synthetic_tests(
    pieces: int, seed: int, pieces_per_period: int = 20, noise_sd: float = 0.0, impressions: int = 20_000
) -> pd.DataFrame:
    """Pieces of four variants (question or not x negative word or not) with planted lifts and a known spread."""
    rng = np.random.default_rng(seed)
    rows = []
    for piece in range(pieces):
        base = rng.uniform(0.01, 0.03)
        topic = TOPICS[piece % len(TOPICS)]
        for question in (False, True):
            for negative in (False, True):
                rate = base * QUESTION_LIFT**question * NEGATIVE_LIFT**negative * math.exp(rng.normal(0, noise_sd))
                rows.append(
                    {
                        "piece_id": f"p{piece:04d}",
                        "period": piece // pieces_per_period,
                        "headline": headline(topic, question, negative),
                        "impressions": impressions,
                        "clicks": int(rng.binomial(impressions, rate)),
                    }
                )
    frame = pd.DataFrame(rows)
    return pd.concat([frame, feature_frame(frame["headline"])], axis=1)
