"""The demo's content editor: the same decisions a person makes with `factory content`, taken unattended."""

from __future__ import annotations

from datetime import date

import pandas as pd

from factory_dagster.content.assets import content_spec
from factory_dagster.content.demo import DEMO_OPERATOR, fixed_text, review_as_operator
from factory_dagster.content.review import history, store_pieces
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import open_warehouse

SPEC = content_spec()
DAY = date(2026, 3, 2)


def test_a_quick_fix_drops_the_banned_sentence_and_trims_without_a_dangling_word() -> None:
    post = "New finance leaders keep close habits in view.\n\nHonestly, this is synergy.\nMost teams know it."
    assert (
        fixed_text(post, ["banned_phrase"], SPEC, "linkedin_post")
        == "New finance leaders keep close habits in view.\n\nMost teams know it."
    )
    assert fixed_text("A revolutionary close", ["banned_phrase"], SPEC, "headline") == "A close"
    long = "The painful part of close speed for busy controllers this month, and what it means for every finance team"
    trimmed = fixed_text(long, ["too_long"], SPEC, "headline")
    assert trimmed == "The painful part of close speed for busy controllers this month" and len(trimmed) <= 70


def row(variant: str, text: str, codes: list[str]) -> dict:
    return {
        "piece_id": "p1",
        "variant_id": variant,
        "topic": SPEC.topics[0].name,
        "segment": SPEC.segments[0].name,
        "channel": "headline",
        "text": text,
        "gate_verdict": "flagged" if codes else "passed",
        "violation_codes": codes,
        "claims_used": [],
        "model": "cheap",
    }


def test_the_editor_approves_judgement_calls_fixes_hard_rules_and_rejects_what_it_cannot_fix(engine_paths: Paths) -> None:
    paths = engine_paths
    pieces = pd.DataFrame(
        [
            row("v-dup", "Close the books sooner", ["near_duplicate"]),
            row("v-banned", "A revolutionary way to close faster", ["banned_phrase"]),
            row("v-number", "Close 9 days faster", ["unsupported_number"]),
        ]
    )
    with open_warehouse(paths) as con:
        store_pieces(con, pieces, content_id=SPEC.content_id, day=DAY, run_id="r", spec_version="s1")
    lines = review_as_operator(paths, DAY)
    assert lines == ["the demo's content editor: 1 approved, 1 edited, 1 rejected"]
    with open_warehouse(paths) as con:
        actions = {v: [(h["action"], h["actor"]) for h in history(con, v)] for v in pieces["variant_id"]}
    assert actions == {
        "v-dup": [("approve", DEMO_OPERATOR)],
        "v-banned": [("edit", DEMO_OPERATOR)],
        "v-number": [("reject", DEMO_OPERATOR)],  # no quick fix for a number no claim has: it goes
    }
    assert review_as_operator(paths, DAY) == []  # nothing waits any more
