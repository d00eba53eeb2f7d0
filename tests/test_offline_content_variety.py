"""The offline content writer (models/offline_content.py) writes varied, clean, deterministic variants.

Why it matters: the content gate flags a variant that shares more than `max_similarity` of its word 3-shingles with
anything published before. A writer with a handful of fixed lines makes most of a fortnight's variants near-duplicates
and sends them to a person; a real team's queue holds mostly real rule catches. These tests run the real brief and
variant stages through the offline gateway day after day, publishing what passed, as the line does.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import date, timedelta

import pytest

from factory_dagster.content.gates import check_piece
from factory_dagster.content.spec import load_content_spec
from factory_dagster.content.stages import write_briefs, write_variants
from factory_dagster.models.gateway import ModelGateway
from factory_dagster.models.offline_content import FRAMES, _figure, _readers, content_variants_answer
from factory_dagster.models.registry import load_registry
from factory_dagster.models.routing import resolve_routes
from factory_dagster.run_context import RunContext
from factory_dagster.settings import PROJECT_ROOT

SPEC = load_content_spec(PROJECT_ROOT / "campaigns" / "content_brightwave.yaml")
REGISTRY = load_registry()
START = date(2026, 1, 1)


def brief(topic: str, segment: str, channel: str, guidance: list[str] | None = None) -> dict:
    limits = SPEC.channel(channel)
    return {
        "channel": channel,
        "max_chars": limits.max_chars,
        "hook_max_chars": limits.hook_limit,
        "count": SPEC.variants_per_piece,
        "topic": topic,
        "topic_angle": SPEC.topic(topic).angle,
        "segment": {"name": segment},
        "claims": [{"id": c.id, "text": c.text} for c in SPEC.claims_for(topic)],
        "banned_phrases": list(SPEC.banned_phrases),
        "reading_grade_max": SPEC.reading_grade_max,
        "guidance": guidance or [],
    }


def run_days(days: int) -> tuple[Counter, int, int]:
    """The brief and variant stages for `days` days, publishing what the gate passed: (codes, variants, flagged)."""
    published: list[str] = []
    codes: Counter = Counter()
    total = flagged = 0
    for offset in range(days):
        day = START + timedelta(days=offset)
        gateway = ModelGateway(
            REGISTRY, resolve_routes(SPEC, REGISTRY, {}), RunContext("variety", day, SPEC.campaign_id), environ={}
        )
        briefs, _ = write_briefs(gateway, SPEC, day, None)
        variants, _ = write_variants(gateway, SPEC, briefs, published)
        total += len(variants)
        for row in variants.itertuples():
            codes.update(row.violations)
            flagged += row.gate_verdict == "flagged"
            if row.gate_verdict == "passed":
                published.append(row.text)
    return codes, total, flagged


def test_a_fortnight_sends_a_person_mostly_real_rule_catches() -> None:
    codes, total, flagged = run_days(14)
    assert total == 14 * SPEC.cadence.pieces_per_day * SPEC.variants_per_piece
    assert 0.08 <= flagged / total <= 0.30  # the cheap model's slips (defect rate 0.15), not its sameness
    assert codes["near_duplicate"] <= 0.05 * total, codes
    planted = codes["too_long"] + codes["hook_too_long"] + codes["banned_phrase"] + codes["unsupported_number"]
    assert planted >= 0.5 * flagged  # what a person sees is mostly a planted defect the gate caught


@pytest.mark.parametrize("channel", SPEC.channels.names)
def test_clean_variants_pass_every_rule_for_every_topic_and_segment(channel: str) -> None:
    for topic in SPEC.topics:
        for segment in SPEC.segments:
            for seed in range(10):
                variants = content_variants_answer(brief(topic.name, segment.name, channel), random.Random(seed), [None] * 3)
                texts = [v["text"] for v in variants["variants"]]
                assert len(set(texts)) == 3
                for text in texts:
                    assert text[0].isupper() and check_piece(text, channel, SPEC, topic=topic.name) == [], text


def test_the_same_brief_gives_the_same_variants_and_another_day_other_ones() -> None:
    one = brief("close_speed", "controllers", "headline")
    first = content_variants_answer(one, random.Random("piece-1"), [None] * 3)
    assert content_variants_answer(one, random.Random("piece-1"), [None] * 3) == first
    others = {v["text"] for seed in range(20) for v in content_variants_answer(one, random.Random(seed), [None] * 3)["variants"]}
    assert len(others) >= 40  # 60 variants of one topic, segment and channel: few repeats


def test_frames_read_right_for_any_topic_and_figures_keep_their_qualifier() -> None:
    assert all(len(frames) >= 7 for frames in FRAMES.values())
    assert _figure("Teams using Brightwave close the month up to 4 days faster.") == "up to 4 days faster"
    assert _figure("Most teams are set up within 2 weeks.") == "within 2 weeks"
    assert _figure("Every adjustment keeps a full audit trail.") == ""
    assert _readers({"name": "scaleup_finance_leaders"}) == "finance leaders"
    assert _readers({"name": "general"}) == "finance teams" and _readers("controllers") == "controllers"
