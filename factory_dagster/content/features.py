"""Features of a headline, hook or subject line: plain functions on text, no model and no download.

Why these: the published analyses of the Upworthy headline tests found that negative words and
simpler wording raise clicks, and editors' folklore adds numbers, questions and talking to the
reader ("you"). The content line learns across pieces which of them work (`content.prior`), and
its gates reuse `reading_grade` for the reading-grade ceiling, so each feature is a small public
function that a gate or a report can call alone.

Word lists are short, hand-written and in lower case; a word matches after lower-casing, with
curly apostrophes straightened and a trailing possessive "'s" removed.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence

import pandas as pd

NEGATIVE_WORDS = frozenset(
    """
    abuse abused afraid alone angry annoying anxiety attack attacked awful bad banned betrayal bleak blame broke broken
    brutal cancer cheat cheated corrupt crash crime crimes criminal crisis cruel cry crying damage danger dangerous dead
    deadly death deaths debt depressed depression desperate destroy destroyed destroying die died dies dirty disaster
    disease disgusting dying enemy evil fail failed failing fails failure fake fear fears fight fired forgotten fraud
    gross guilty gun guns hate hated hates hatred homeless horrible horrific hostile hungry hurt hurting hurts ignorant
    ill illegal injustice insane jail kill killed killer killing kills liar lie lies lonely lose loses losing loss lost
    mad mess miserable mistake murder murdered nasty nightmare outrage outrageous pain painful panic pathetic poison
    pollution poor poverty prison problem problems racism racist rage rape ruin ruined sad scam scandal scared scary
    shame shameful shock shocked shocking shot sick sickening slave slavery stupid suffer suffering suicide terrible
    terrified terror threat threats toxic tragedy tragic trapped ugly unfair upset victim victims violence violent war
    wars waste weak worried worry worse worst wrong
    """.split()
)
POSITIVE_WORDS = frozenset(
    """
    adorable amazing awesome beautiful best better bless brave brilliant calm celebrate celebrates charming cheer
    confident courage cute delight delightful dream easy enjoy excellent exciting fabulous fantastic fascinating free
    freedom friend friends fun funny generous genius gentle gift glad glorious good gorgeous grace grateful great happy
    happiness healthy heart heartwarming hero heroes honest hope hopeful hug incredible inspire inspired inspiring joy
    kind kindness laugh laughing love loved lovely loves loving lucky magic magical marvelous nice peace perfect
    pleasure powerful pretty proud relief respect safe smart smile smiles smiling success sweet thank thanks thrilled
    together triumph true trust unbelievable victory warm welcome win winning wins wise wonderful wow
    """.split()
)
SECOND_PERSON = frozenset("you your yours yourself yourselves you're you'll you've you'd ya y'all".split())
FIRST_PERSON = frozenset("i me my mine myself we us our ours ourselves i'm i've i'd i'll we're we've we'll we'd".split())
# Words that point forward to what the click reveals ("This Is Why ...", "Here's What ...").
FORWARD_REFERENCE = frozenset("this these here here's why how what".split())
NUMBER_WORDS = frozenset(
    """
    one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen
    nineteen twenty thirty forty fifty hundred thousand million billion dozen
    """.split()
)

FEATURE_NAMES: tuple[str, ...] = (
    "chars",
    "words",
    "has_number",
    "starts_with_number",
    "is_question",
    "has_exclamation",
    "has_quote",
    "second_person",
    "first_person",
    "forward_reference",
    "negative_words",
    "negative_share",
    "positive_words",
    "reading_grade",
    "all_caps_words",
)

_TAG = re.compile(r"<[^>]+>")
_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)*")
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
_VOWEL_GROUP = re.compile(r"[aeiouy]+")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})


def clean_text(text: str) -> str:
    """Plain text: HTML tags and entities removed, curly quotes straightened, whitespace collapsed."""
    return " ".join(html.unescape(_TAG.sub(" ", text or "")).translate(_QUOTES).split())


def words(text: str) -> list[str]:
    """The words of a text as written (case kept): letters and digits, with inner apostrophes."""
    return _WORD.findall(clean_text(text))


def _key(word: str) -> str:
    word = word.lower()
    return word[:-2] if word.endswith("'s") and word not in SECOND_PERSON | FIRST_PERSON else word


def count_in(text_words: Iterable[str], vocabulary: frozenset[str]) -> int:
    """How many of the words are in the vocabulary (lower-cased, possessive "'s" dropped)."""
    return sum(_key(w) in vocabulary for w in text_words)


def syllables(word: str) -> int:
    """A syllable estimate: vowel groups, minus a silent final "e" or "-ed"; at least 1.

    A heuristic (no dictionary): right for most common words, off by one for some; a number
    counts as one syllable. Good enough for a reading grade, which is itself a rough index.
    """
    letters = "".join(ch for ch in word.lower() if ch.isalpha())
    if not letters:
        return 1
    count = len(_VOWEL_GROUP.findall(letters))
    if count > 1 and letters.endswith("e") and not letters.endswith(("le", "ee", "ye")):
        count -= 1
    elif count > 1 and letters.endswith("ed") and not letters.endswith(("ted", "ded")):
        count -= 1
    return max(1, count)


def sentences(text: str) -> int:
    """Sentences in a text: runs of . ! ? followed by a space or the end; a headline without one is one sentence."""
    return max(1, len(_SENTENCE_END.findall(clean_text(text))))


def reading_grade(text: str) -> float:
    """Flesch-Kincaid grade level: 0.39 x words per sentence + 11.8 x syllables per word - 15.59.

    The school grade a reader needs; 0.0 for a text without words. Used as a feature and by the
    content line's reading-grade ceiling gate.
    """
    found = words(text)
    if not found:
        return 0.0
    per_word = sum(syllables(w) for w in found) / len(found)
    return 0.39 * len(found) / sentences(text) + 11.8 * per_word - 15.59


def shown_text(text: str, channel: str) -> str:
    """What the reader sees before deciding, so what a headline's features are measured on: a LinkedIn
    post's hook (the first line, all the feed shows), else the whole text."""
    return text.strip().splitlines()[0] if channel == "linkedin_post" and text.strip() else text


def _is_number(word: str) -> bool:
    return any(ch.isdigit() for ch in word) or word.lower() in NUMBER_WORDS


def features(text: str) -> dict[str, float]:
    """Every feature of one text, in `FEATURE_NAMES` order.

    Counts are counts; `has_*`, `is_*` and `starts_with_*` are 0/1; `negative_share` is negative
    words per word (0 without words).
    """
    plain = clean_text(text)
    found = words(plain)
    negative = count_in(found, NEGATIVE_WORDS)
    return {
        "chars": float(len(plain)),
        "words": float(len(found)),
        "has_number": float(any(_is_number(w) for w in found)),
        "starts_with_number": float(bool(found) and _is_number(found[0])),
        "is_question": float("?" in plain),
        "has_exclamation": float("!" in plain),
        "has_quote": float('"' in plain or bool(re.search(r"(^|\s)'\w", plain))),
        "second_person": float(count_in(found, SECOND_PERSON)),
        "first_person": float(count_in(found, FIRST_PERSON)),
        "forward_reference": float(count_in(found, FORWARD_REFERENCE)),
        "negative_words": float(negative),
        "negative_share": negative / len(found) if found else 0.0,
        "positive_words": float(count_in(found, POSITIVE_WORDS)),
        "reading_grade": reading_grade(plain),
        "all_caps_words": float(sum(len(w) >= 2 and w.isalpha() and w.isupper() for w in found)),
    }


def feature_frame(texts: Sequence[str] | pd.Series) -> pd.DataFrame:
    """One row of features per text, columns `FEATURE_NAMES`, index of the input.

    Each distinct text is scored once: the variants of a test often share their headline.
    """
    series = pd.Series(texts) if not isinstance(texts, pd.Series) else texts
    series = series.fillna("").astype(str)
    unique = series.drop_duplicates()
    scored = pd.DataFrame([features(t) for t in unique], index=unique.to_numpy(), columns=list(FEATURE_NAMES))
    out = scored.reindex(series.to_numpy())
    out.index = series.index
    return out.astype(float)
