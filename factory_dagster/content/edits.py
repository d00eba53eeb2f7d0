"""What operators' edits of content variants teach the next briefs.

Why: an edit is the clearest signal a person gives the content line. When operators keep cutting the same
phrase out of LinkedIn posts, or keep shortening headlines, the next briefs should say so before the cheap model
writes the same thing again. `edit_lessons` reads the edits stored by `content.review.edit` (each against the
text it replaced: the model's text, or the previous edit) and counts, per channel:

- how many edits, their mean normalised word edit distance (as stored with the edit) and the median change in
  length (characters, % of the text before);
- the phrases removed in at least `MIN_EDITS` edits, and those added in at least `MIN_EDITS`. Phrases come from
  the review's word-level diff (`review.analysis.phrase_changes`, whose changed runs are at most 12 words); every
  run of words inside a changed run counts, a phrase only when it really left the text (or really came in) and is
  not only stop words, and only the longest phrase of a count is kept ("honestly this is" and "honestly" removed by
  the same two edits: the first).

`EditLessons.notes()` says the strongest of it in a few plain sentences; `with_edit_notes` puts them into the
guidance the briefs take (`content.stages.guidance_lines`, key `notes`). A note names the channel as the spec does
(`linkedin_post`), so a brief for another channel can tell it does not apply.

Edits count by the day of the piece edited (`raw.content_reviews.day`), the line's own clock: `reviewed_at` is
wall-clock time, and the demo's days are simulated. So a re-run of a day also sees edits made since of pieces of
earlier days (a person's late edit is still a lesson).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import duckdb

from factory_dagster.review.analysis import EDGE_PUNCTUATION, phrase_changes, word_edit_distance

MIN_EDITS = 2  # a phrase (or a length trend) must show in this many edits to be a lesson, not one person's taste
MIN_LENGTH_CHANGE_PCT = 5.0  # a smaller median change in length is not a trend
MAX_NOTES = 5
STOP_WORDS = frozenset(
    "a an the and or but of to in on at for with by from as is are was be it its this that these those".split()
    + "you your we our us i my me he she they them their his her not no so if then than".split()
)


@dataclass(frozen=True)
class PhraseCount:
    """A phrase and the number of edits that removed (or added) it."""

    phrase: str
    edits: int


@dataclass(frozen=True)
class ChannelEdits:
    """What the edits of one channel's variants changed."""

    channel: str
    edits: int
    mean_edit_distance: float
    median_length_change_pct: float
    shortened: int  # edits that made the text shorter
    lengthened: int
    removed: tuple[PhraseCount, ...]
    added: tuple[PhraseCount, ...]


@dataclass(frozen=True)
class EditLessons:
    """Operators' edits of a content spec's variants of the days before `before`, per channel."""

    content_id: str
    before: date
    channels: tuple[ChannelEdits, ...]

    @property
    def edits(self) -> int:
        return sum(c.edits for c in self.channels)

    def channel(self, name: str) -> ChannelEdits | None:
        return next((c for c in self.channels if c.channel == name), None)

    def notes(self, limit: int = MAX_NOTES) -> list[str]:
        """At most `limit` short sentences, strongest first (the most edits behind them), none without edits."""
        found: list[tuple[int, float, int, str]] = []  # (edits behind it, share of the channel's edits, kind order, note)
        for c in self.channels:
            for p in c.removed:
                found.append(
                    (p.edits, p.edits / c.edits, 0, f"operators removed '{p.phrase}' in {p.edits} of {c.edits} {c.channel} edits")
                )
            change = c.median_length_change_pct
            behind = c.shortened if change < 0 else c.lengthened
            if c.edits >= MIN_EDITS and abs(change) >= MIN_LENGTH_CHANGE_PCT and behind >= MIN_EDITS:
                how = "shortened" if change < 0 else "lengthened"
                note = f"operators {how} {c.channel} texts by {abs(change):.0f}% on median ({behind} of {c.edits} edits)"
                found.append((behind, behind / c.edits, 1, note))
            for p in c.added:
                found.append(
                    (p.edits, p.edits / c.edits, 2, f"operators added '{p.phrase}' in {p.edits} of {c.edits} {c.channel} edits")
                )
        found.sort(key=lambda item: (-item[0], -item[1], item[2], item[3]))
        return [note for *_, note in found[:limit]]


def tokens(text: str) -> list[str]:
    """Words as the lessons compare them: case-folded, without the punctuation at their edges."""
    return [t for t in (w.strip(EDGE_PUNCTUATION).casefold() for w in text.split()) if t]


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    return any(list(haystack[i : i + n]) == list(needle) for i in range(len(haystack) - n + 1))


def _phrases(runs: Sequence[str], gone_from: Sequence[str]) -> set[tuple[str, ...]]:
    """Every run of words inside `runs` that is not in `gone_from` (it really left), and not only stop words."""
    found = set()
    for run in runs:
        words = tokens(run)
        for size in range(1, len(words) + 1):
            for start in range(len(words) - size + 1):
                gram = tuple(words[start : start + size])
                if not set(gram) <= STOP_WORDS and not _contains(gone_from, gram):
                    found.add(gram)
    return found


def _frequent(counts: Counter[tuple[str, ...]]) -> tuple[PhraseCount, ...]:
    """Phrases of at least MIN_EDITS edits, each only when no longer one of as many edits contains it."""
    kept = {gram: n for gram, n in counts.items() if n >= MIN_EDITS}
    longest = [
        gram
        for gram, n in kept.items()
        if not any(len(other) > len(gram) and m >= n and _contains(other, gram) for other, m in kept.items())
    ]
    longest.sort(key=lambda gram: (-kept[gram], -len(gram), gram))
    return tuple(PhraseCount(" ".join(gram), kept[gram]) for gram in longest)


_EDITS = """
    SELECT p.channel, r.variant_id, r.seq, p.text AS model_text, r.edited_text, r.edit_distance
    FROM raw.content_reviews r JOIN raw.content_pieces p USING (variant_id)
    WHERE r.action = 'edit' AND p.content_id = ? AND r.day < ?
    ORDER BY p.channel, r.variant_id, r.seq"""


def edit_lessons(con: duckdb.DuckDBPyConnection, content_id: str, before: date) -> EditLessons:
    """The lessons of every edit of `content_id`'s variants of days before `before` (see the module docstring)."""
    per_channel: dict[str, list[tuple[str, str, float]]] = {}
    previous: dict[str, str] = {}
    for channel, variant_id, _, model_text, edited, distance in con.execute(_EDITS, [content_id, before]).fetchall():
        old = previous.get(variant_id, model_text)
        previous[variant_id] = edited
        measured = word_edit_distance(old, edited) if distance is None else float(distance)
        per_channel.setdefault(channel, []).append((old, edited, measured))
    channels = []
    for channel, edits in per_channel.items():
        removed: Counter[tuple[str, ...]] = Counter()
        added: Counter[tuple[str, ...]] = Counter()
        changes = []
        for old, new, _ in edits:
            gone, came = phrase_changes(old, new)
            removed.update(_phrases(gone, tokens(new)))
            added.update(_phrases(came, tokens(old)))
            changes.append(100.0 * (len(new) - len(old)) / max(len(old), 1))
        channels.append(
            ChannelEdits(
                channel=channel,
                edits=len(edits),
                mean_edit_distance=statistics.fmean(d for _, _, d in edits),
                median_length_change_pct=statistics.median(changes),
                shortened=sum(c < 0 for c in changes),
                lengthened=sum(c > 0 for c in changes),
                removed=_frequent(removed),
                added=_frequent(added),
            )
        )
    return EditLessons(content_id, before, tuple(channels))


def with_edit_notes(guidance: Mapping[str, Any] | None, lessons: EditLessons) -> dict[str, Any] | None:
    """The briefs' guidance with the edits' notes added to its `notes` (a new dict; None stays None without notes)."""
    notes = lessons.notes()
    if not notes:
        return None if guidance is None else dict(guidance)
    merged = dict(guidance or {})
    if isinstance(merged.get("notes"), str):
        raise ValueError("guidance notes must be a list of sentences, not one string")
    earlier = [str(n) for n in merged.get("notes") or []]
    merged["notes"] = earlier + [n for n in notes if n not in earlier]
    return merged
