"""What operators' edits teach the next briefs (content/edits.py), on a real warehouse with edits made by content.review.edit,
and the offline writer honouring a "removed 'X'" note."""

from __future__ import annotations

import random
import statistics
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from factory_dagster.content.edits import EditLessons, PhraseCount, edit_lessons, tokens, with_edit_notes
from factory_dagster.content.review import edit, reject, store_pieces
from factory_dagster.content.spec import load_content_spec
from factory_dagster.content.stages import guidance_lines, write_briefs, write_variants
from factory_dagster.models.gateway import ModelGateway
from factory_dagster.models.offline_content import content_brief_answer, content_variants_answer, removed_phrases
from factory_dagster.models.registry import load_registry
from factory_dagster.models.routing import resolve_routes
from factory_dagster.run_context import RunContext
from factory_dagster.settings import PROJECT_ROOT
from factory_dagster.warehouse.store import connect

SPEC = load_content_spec(PROJECT_ROOT / "campaigns" / "content_brightwave.yaml")
CONTENT = SPEC.content_id
D1, D2, D3 = date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)
NIGHTLY = "Reconciliations run automatically every night."
FASTER = "Teams using Brightwave close the month up to 4 days faster."
ASK = "What works for your team?"
# variant -> (day, channel, the model's text, the operator's edit)
EDITS = {
    "l1": (
        D1,
        "linkedin_post",
        f"A game-changing close starts with small habits.\n\n{NIGHTLY}\n\nWorth a look before your next close.",
        f"A calm close starts with small habits.\n\n{NIGHTLY}\n\n{ASK}",
    ),
    "l2": (
        D1,
        "linkedin_post",
        f"Your month-end can be game-changing and calm.\n\n{FASTER}\n\nWorth a look before your next close.",
        f"Your month-end can be calm.\n\n{FASTER}\n\n{ASK}",
    ),
    "l3": (
        D1,
        "linkedin_post",
        f"Make your close game-changing this month.\n\n{NIGHTLY}\n\nWorth a look before your next close.",
        f"Make your close calm this month.\n\n{NIGHTLY}\n\n{ASK}",
    ),
    "l4": (
        D1,
        "linkedin_post",
        f"How calm teams close the month.\n\n{NIGHTLY}\n\nRead more at the link.",
        f"How calm teams close the month.\n\n{NIGHTLY}\n\n{ASK}",
    ),
    "h1": (D1, "headline", "Close the month up to 4 days faster with less stress", "Close the month up to 4 days faster"),
    "h2": (D1, "headline", "The books get checked every night with less stress", "The books get checked every night"),
    "h3": (D1, "headline", "A calmer close, with less stress", "A calmer close"),
    "h4": (D2, "headline", "Errors found the same day, with less stress", "Errors found the same day"),
}


def rows(day: date) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "piece_id": f"p-{channel}-{day}",
                "variant_id": variant,
                "topic": "close_speed",
                "segment": "controllers",
                "channel": channel,
                "text": text,
                "gate_verdict": "flagged",
                "violation_codes": ["voice_we"],
                "claims_used": [],
                "model": "offline-cheap",
            }
            for variant, (when, channel, text, _) in EDITS.items()
            if when == day
        ]
    )


@pytest.fixture
def con(tmp_path: Path, engine_url: str | None):
    with connect(tmp_path / "warehouse.duckdb", url=engine_url) as connection:
        for day in (D1, D2):
            store_pieces(connection, rows(day), content_id=CONTENT, day=day, run_id="run-1", spec_version="s1")
        for variant, (_, _, _, new) in EDITS.items():
            edit(connection, SPEC, variant, new, "ana", "house style")
        yield connection


def change_pct(variants: list[str]) -> list[float]:
    return [100 * (len(EDITS[v][3]) - len(EDITS[v][2])) / len(EDITS[v][2]) for v in variants]


def test_no_edits_teach_nothing(con: duckdb.DuckDBPyConnection) -> None:
    lessons = edit_lessons(con, CONTENT, D1)  # every edit is of a piece of D1 or later
    assert lessons.channels == () and lessons.edits == 0 and lessons.notes() == []
    assert edit_lessons(con, "another-content", D3).edits == 0
    assert with_edit_notes(None, lessons) is None
    assert with_edit_notes({"feature_effects": {"is_question": -9.0}}, lessons) == {"feature_effects": {"is_question": -9.0}}


def test_per_channel_counts_distances_lengths_and_phrases(con: duckdb.DuckDBPyConnection) -> None:
    lessons = edit_lessons(con, CONTENT, D2)
    post, headline = lessons.channel("linkedin_post"), lessons.channel("headline")
    assert (lessons.edits, post.edits, headline.edits) == (7, 4, 3)  # h4 (a piece of D2) is not known before D2
    distances = con.execute(
        "SELECT avg(edit_distance) FROM raw.content_reviews WHERE variant_id IN ('h1', 'h2', 'h3')"
    ).fetchone()[0]
    assert headline.mean_edit_distance == pytest.approx(distances)
    assert headline.median_length_change_pct == pytest.approx(statistics.median(change_pct(["h1", "h2", "h3"])))
    assert post.median_length_change_pct == pytest.approx(statistics.median(change_pct(["l1", "l2", "l3", "l4"])))
    assert (headline.shortened, headline.lengthened, post.shortened, post.lengthened) == (3, 0, 3, 1)

    assert headline.removed == (PhraseCount("with less stress", 3),) and headline.added == ()
    # Only the longest phrase of a count; "close" left one place and stayed in another, so it was not removed;
    # "read more at the link" left once only.
    assert post.removed == (PhraseCount("worth a look before your next close", 3), PhraseCount("game-changing", 3))
    assert post.added == (PhraseCount("what works for your team", 4), PhraseCount("calm", 2))

    later = edit_lessons(con, CONTENT, D3)
    assert later.channel("headline").removed == (PhraseCount("with less stress", 4),)


def test_notes_are_few_plain_and_strongest_first(con: duckdb.DuckDBPyConnection) -> None:
    notes = edit_lessons(con, CONTENT, D2).notes()
    headline_cut = -statistics.median(change_pct(["h1", "h2", "h3"]))
    assert notes == [
        "operators added 'what works for your team' in 4 of 4 linkedin_post edits",
        "operators removed 'with less stress' in 3 of 3 headline edits",
        f"operators shortened headline texts by {headline_cut:.0f}% on median (3 of 3 edits)",
        "operators removed 'game-changing' in 3 of 4 linkedin_post edits",
        "operators removed 'worth a look before your next close' in 3 of 4 linkedin_post edits",
    ]
    assert len(edit_lessons(con, CONTENT, D2).notes(limit=2)) == 2


def test_a_rejection_after_an_edit_keeps_the_edit_as_a_lesson(con: duckdb.DuckDBPyConnection) -> None:
    reject(con, SPEC, "h1", "bo", "not this week")
    assert edit_lessons(con, CONTENT, D2).channel("headline").removed == (PhraseCount("with less stress", 3),)


def test_edit_notes_reach_the_briefs_guidance(con: duckdb.DuckDBPyConnection) -> None:
    lessons = edit_lessons(con, CONTENT, D2)
    guidance = {"feature_effects": {"is_question": -12.0}, "notes": ["questions cost clicks for controllers"]}
    merged = with_edit_notes(guidance, lessons)
    assert merged["notes"] == ["questions cost clicks for controllers", *lessons.notes()]
    assert guidance["notes"] == ["questions cost clicks for controllers"]  # a new dict
    lines = guidance_lines(merged)
    assert lines[0] == "a question: -12% clicks across earlier pieces" and lines[-len(lessons.notes()) :] == lessons.notes()
    assert with_edit_notes(None, lessons) == {"notes": lessons.notes()}
    # The offline writer reads back exactly the phrases these notes say operators removed.
    assert removed_phrases(lessons.notes()) == ["with less stress", "game-changing", "worth a look before your next close"]
    assert with_edit_notes(merged, lessons)["notes"] == merged["notes"]  # merged twice: no repeats
    with pytest.raises(ValueError, match="list of sentences"):
        with_edit_notes({"notes": "one string"}, lessons)


def test_tokens_ignore_case_and_edge_punctuation() -> None:
    assert tokens("Worth a look, before YOUR next close.") == ["worth", "a", "look", "before", "your", "next", "close"]
    assert tokens(" -- ") == []


# ---------------------------------------------------------------- the offline writer honours "removed" notes


def post_brief(guidance: list[str], channel: str = "linkedin_post") -> dict:
    limits = SPEC.channel(channel)
    return {
        "channel": channel,
        "max_chars": limits.max_chars,
        "hook_max_chars": limits.hook_limit,
        "count": 3,
        "topic": "close_speed",
        "topic_angle": SPEC.topic("close_speed").angle,
        "angle": SPEC.topic("close_speed").angle,
        "claims": [{"id": c.id, "text": c.text} for c in SPEC.claims_for("close_speed")],
        "banned_phrases": list(SPEC.banned_phrases),
        "guidance": guidance,
        "piece_id": "p-1",
        "day": str(D1),
    }


def test_removed_phrases_are_read_from_notes_with_apostrophes() -> None:
    notes = [
        "operators removed 'worth a look before your next close' in 3 of 4 linkedin_post edits",
        "operators removed 'today's close' in 2 of 2 headline edits",
        "operators added 'what works for your team' in 4 of 4 linkedin_post edits",
        "a question: -12% clicks across earlier pieces",
    ]
    assert removed_phrases(notes) == ["worth a look before your next close", "today's close"]


def test_the_offline_writer_leaves_out_a_phrase_operators_removed() -> None:
    """Find phrases the writer uses without guidance, then tell it operators removed them: it writes around them."""
    texts = [
        v["text"]
        for seed in range(12)
        for channel in ("linkedin_post", "headline")
        for v in content_variants_answer(post_brief([], channel), random.Random(seed), [None] * 3)["variants"]
    ]
    used = [p for p in ("read more at the link", "month-end", "close the month") if any(p in t.lower() for t in texts)]
    assert used, "the writer's usual wording changed: pick phrases it uses"
    notes = [f"operators removed '{p}' in 3 of 4 linkedin_post edits" for p in used]
    for seed in range(12):
        for channel in ("linkedin_post", "headline"):
            variants = content_variants_answer(post_brief(notes, channel), random.Random(seed), [None] * 3)["variants"]
            for v in variants:
                assert not any(" ".join(tokens(p)) in " ".join(tokens(v["text"])) for p in used), v["text"]


def test_the_offline_brief_passes_a_channel_note_only_to_that_channel() -> None:
    brief = {
        "topic": {"name": "close_speed", "angle": "Faster closes.", "claims": [{"id": "close_4_days_faster"}]},
        "segments": [{"name": "controllers", "description": "Controllers."}],
        "channels": [{"name": "headline"}, {"name": "linkedin_post"}],
        "planned_today": [],
        "brand": {"tone": "plain"},
    }
    notes = {
        "headline": "operators removed 'with less stress' in 3 of 3 headline edits",
        "linkedin_post": "operators removed 'game-changing' in 3 of 4 linkedin_post edits",
    }
    chosen = set()
    for seed in range(8):
        answer = content_brief_answer(brief, list(notes.values()), random.Random(seed), 0.0)
        assert answer["guidance"] == [notes[answer["channel"]]]
        chosen.add(answer["channel"])
    assert chosen == set(notes)


def test_lessons_are_a_frozen_value() -> None:
    lessons = EditLessons(CONTENT, D1, ())
    with pytest.raises(AttributeError):
        lessons.before = D1 + timedelta(days=1)  # type: ignore[misc]


def test_the_lesson_reaches_the_next_days_variants_through_the_stages(tmp_path: Path) -> None:
    """Operators cut "Read more at the link." from two LinkedIn posts; the next days' LinkedIn variants leave it out."""
    registry = load_registry()
    cut = "Read more at the link."
    posts = {
        "c1": f"How calm teams close the month.\n\nStart with the checks that always run late.\n\n{cut}",
        "c2": f"Small habits for a calm close.\n\n{FASTER}\n\n{cut}",
    }
    frame = pd.DataFrame(
        [
            {**rows(D1).iloc[0].to_dict(), "piece_id": "p-cut", "variant_id": v, "channel": "linkedin_post", "text": t}
            for v, t in posts.items()
        ]
    )
    with connect(tmp_path / "warehouse.duckdb") as con:
        store_pieces(con, frame, content_id=CONTENT, day=D1, run_id="run-1", spec_version="s1")
        for variant, text in posts.items():
            edit(con, SPEC, variant, text.replace(f"\n\n{cut}", ""), "ana", "no link in the post")
        lessons = edit_lessons(con, CONTENT, D2)
    assert lessons.notes()[0] == "operators removed 'read more at the link' in 2 of 2 linkedin_post edits"

    def linkedin_texts(guidance: dict | None) -> list[str]:
        texts = []
        for offset in range(10):
            day = D2 + timedelta(days=offset)
            gateway = ModelGateway(registry, resolve_routes(SPEC, registry, {}), RunContext("t", day, CONTENT), environ={})
            briefs, _ = write_briefs(gateway, SPEC, day, guidance)
            variants, _ = write_variants(gateway, SPEC, briefs)
            texts += list(variants.loc[variants.channel == "linkedin_post", "text"])
        return texts

    before = linkedin_texts(None)
    assert any(cut in t for t in before)  # the writer's usual closing, without the lesson
    after = linkedin_texts(with_edit_notes(None, lessons))
    assert after and not any(cut.lower() in t.lower() for t in after)
