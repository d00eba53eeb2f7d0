"""Headline and hook features (issue 12, item 3): known strings with hand-counted answers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from factory_dagster.content.features import (
    FEATURE_NAMES,
    clean_text,
    feature_frame,
    features,
    reading_grade,
    sentences,
    syllables,
    words,
)


def test_listicle_question_counts_by_hand() -> None:
    got = features("7 Reasons Your Cat Hates You?")
    assert list(got) == list(FEATURE_NAMES)
    assert got["chars"] == 29
    assert got["words"] == 6
    assert got["has_number"] == 1 and got["starts_with_number"] == 1
    assert got["is_question"] == 1 and got["has_exclamation"] == 0
    assert got["second_person"] == 2  # Your, You
    assert got["first_person"] == 0
    assert got["negative_words"] == 1  # Hates
    assert got["negative_share"] == pytest.approx(1 / 6)
    assert got["positive_words"] == 0
    assert got["all_caps_words"] == 0


def test_html_entities_and_curly_quotes_are_cleaned() -> None:
    text = "<p>They\u2019re &amp; \u2018Walmart\u2019s Worst Nightmare\u2019</p>"
    assert clean_text(text) == "They're & 'Walmart's Worst Nightmare'"
    assert words(text) == ["They're", "Walmart's", "Worst", "Nightmare"]
    got = features(text)
    assert got["negative_words"] == 2  # Worst, Nightmare
    assert got["has_quote"] == 1


def test_pronouns_caps_number_words_and_forward_reference() -> None:
    got = features("We Tried This And My Mind Was Blown. I LOVE It NOW!")
    assert got["first_person"] == 3  # We, My, I
    assert got["second_person"] == 0
    assert got["all_caps_words"] == 2  # LOVE, NOW; a lone "I" is not shouting
    assert got["has_exclamation"] == 1
    assert got["forward_reference"] == 1  # This
    assert got["positive_words"] == 1  # LOVE
    five = features("Five Ways Teachers Beat Burnout")
    assert five["starts_with_number"] == 1 and five["has_number"] == 1
    assert features("Nobody Expected The Ending")["has_number"] == 0


@pytest.mark.parametrize(
    ("word", "count"),
    [("the", 1), ("cat", 1), ("beautiful", 3), ("jumped", 1), ("created", 2), ("table", 2), ("communication", 5), ("2014", 1)],
)
def test_syllable_heuristic(word: str, count: int) -> None:
    assert syllables(word) == count


def test_flesch_kincaid_grade_by_hand() -> None:
    # 6 words, 1 sentence, 6 syllables: 0.39 x 6 + 11.8 x 1 - 15.59
    assert reading_grade("The cat sat on the mat.") == pytest.approx(0.39 * 6 + 11.8 - 15.59)
    # the same words in two sentences: 3 words per sentence
    assert sentences("The cat sat. The dog ran.") == 2
    assert reading_grade("The cat sat. The dog ran.") == pytest.approx(0.39 * 3 + 11.8 - 15.59)
    hard = "Institutional investors systematically underestimate organisational communication difficulties"
    assert reading_grade(hard) > reading_grade("The cat sat on the mat.") + 10
    assert reading_grade("") == 0.0


def test_empty_text_has_zero_features() -> None:
    got = features("")
    assert all(value == 0 for value in got.values())


def test_feature_frame_keeps_index_and_scores_duplicates_alike() -> None:
    texts = pd.Series(["Why This Works?", None, "Why This Works?", "A Terrible, Awful Day"], index=[10, 11, 12, 13])
    frame = feature_frame(texts)
    assert list(frame.columns) == list(FEATURE_NAMES)
    assert list(frame.index) == [10, 11, 12, 13]
    assert frame.loc[10].equals(frame.loc[12])
    assert frame.loc[11, "words"] == 0  # a missing text is an empty one
    assert frame.loc[13, "negative_words"] == 2
    assert frame.loc[13, "negative_share"] == pytest.approx(2 / 4)
    assert not math.isnan(frame.to_numpy().sum())
