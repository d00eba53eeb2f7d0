"""Operators' edits propose a variants prompt with house rules, run as an experiment and judged on untouched variants."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest

from factory_dagster.content.edit_proposals import (
    RULES_HEADER,
    arm_of,
    champion,
    decide_prompt_experiment,
    edit_rules,
    prompt_versions,
    propose_from_edits,
    running_prompt_experiment,
)
from factory_dagster.content.edits import ChannelEdits, EditLessons, PhraseCount
from factory_dagster.content.review import auto_approve, store_pieces
from factory_dagster.content.spec import load_content_spec
from factory_dagster.improve import store
from factory_dagster.improve.decisions import start_approved
from factory_dagster.models import prompts
from factory_dagster.run_context import RunContext
from factory_dagster.settings import PROJECT_ROOT

SPEC = load_content_spec(PROJECT_ROOT / "campaigns" / "content_brightwave.yaml")
CONTENT = SPEC.content_id
DAY = date(2026, 3, 2)
AT = datetime(2026, 3, 2, 18, 0)
RUN = RunContext("run-1", DAY, CONTENT)


def lessons(removed: int = 3, shortened: int = 0) -> EditLessons:
    posts = ChannelEdits(
        "linkedin_post", 4, 0.3, -20.0 if shortened else 0.0, shortened, 0, (PhraseCount("game-changing", removed),), ()
    )
    return EditLessons(CONTENT, DAY, (posts,))


@pytest.fixture
def con(engine_con):
    """Each test on both warehouses."""
    return engine_con


def test_only_lessons_taught_often_enough_become_rules() -> None:
    assert edit_rules(lessons(removed=2)) == []
    assert edit_rules(lessons(removed=3)) == ["For linkedin_post texts, never write 'game-changing'."]
    assert (
        edit_rules(lessons(removed=3, shortened=3))[1] == "Keep linkedin_post texts about 20% shorter than you otherwise would."
    )


def test_a_lesson_is_proposed_once_as_a_challenger_prompt_stored_with_its_parent(con) -> None:
    proposed = propose_from_edits(con, SPEC, lessons(), RUN, AT)
    experiment = proposed.experiment
    assert experiment is not None and experiment.kind == "prompt_version" and experiment.state == "proposed"
    assert experiment.control == prompts.CONTENT_VARIANTS_PROMPT_VERSION and experiment.primary_metric == "untouched_rate"
    (challenger,) = experiment.challengers
    parent, origin, text = con.execute(
        "SELECT parent, origin, template FROM raw.prompt_versions WHERE prompt_version = ?", [challenger]
    ).fetchone()
    assert parent == prompts.CONTENT_VARIANTS_PROMPT_VERSION and origin == "operators' edits"
    assert text.endswith(f"{RULES_HEADER} For linkedin_post texts, never write 'game-changing'.")
    again = propose_from_edits(con, SPEC, lessons(), RUN, AT)
    assert again.experiment is None and "is proposed" in again.reason  # one open at a time
    store.decide_by_person(con, experiment.experiment_id, "reject", "maya", "not now", "cli", AT)
    tried = propose_from_edits(con, SPEC, lessons(), RUN, AT)
    assert tried.experiment is None and "tried already" in tried.reason  # a rejected design is not proposed again
    assert propose_from_edits(con, SPEC, lessons(removed=1), RUN, AT).experiment is None


def piece_rows(version: str, pieces: range, flagged_share: float) -> pd.DataFrame:
    rows = []
    for number in pieces:
        for variant in range(3):
            flagged = (number * 3 + variant) % 100 < flagged_share * 100
            rows.append(
                {
                    "piece_id": f"p{number}",
                    "variant_id": f"v{number}-{variant}",
                    "topic": "close_speed",
                    "segment": "general",
                    "channel": "headline",
                    "text": f"Headline {number} {variant}",
                    "gate_verdict": "flagged" if flagged else "passed",
                    "violation_codes": ["near_duplicate"] if flagged else [],
                    "claims_used": [],
                    "model": "cheap",
                    "prompt_version": version,
                }
            )
    return pd.DataFrame(rows)


def test_the_running_experiment_splits_pieces_and_a_clear_winner_becomes_the_champion(con, tmp_path: Path) -> None:
    experiment = propose_from_edits(con, SPEC, lessons(), RUN, AT).experiment
    store.decide_by_person(con, experiment.experiment_id, "approve", "maya", "try it", "cli", AT)
    (started,) = start_approved(con, CONTENT, DAY, RUN.run_id, AT)  # the loop's own start step
    running = running_prompt_experiment(con, CONTENT)
    assert started.action == "started" and running is not None and running.state == "running"
    arms = prompt_versions(con, CONTENT, [f"p{n}" for n in range(400)])
    challenger = experiment.challengers[0]
    assert 160 < sum(v == challenger for v in arms.values()) < 240  # about half the pieces
    assert all(arms[p] == arm_of(running, p) for p in arms)  # stable: a re-run writes each piece with the same prompt
    # The challenger's variants go out untouched far more often than the champion's (the gate flags fewer).
    control_pieces = [int(p[1:]) for p, v in arms.items() if v != challenger]
    challenger_pieces = [int(p[1:]) for p, v in arms.items() if v == challenger]
    frames = [
        piece_rows(experiment.control, range(0), 0.0),
        *(piece_rows(experiment.control, range(n, n + 1), 0.5) for n in control_pieces),
        *(piece_rows(challenger, range(n, n + 1), 0.05) for n in challenger_pieces),
    ]
    store_pieces(con, pd.concat(frames, ignore_index=True), content_id=CONTENT, day=DAY, run_id="r", spec_version="s1")
    auto_approve(con, CONTENT, DAY)
    assert decide_prompt_experiment(con, CONTENT, RUN, AT) == "promote"
    assert decide_prompt_experiment(con, CONTENT, RUN, AT) is None  # one look a day
    prompts._STORED.pop(challenger)  # a new process: the champion is loaded from raw.prompt_versions
    assert champion(con, CONTENT) == challenger and RULES_HEADER in prompts.prompt(challenger).system
    assert set(prompt_versions(con, CONTENT, ["p1", "p2"]).values()) == {challenger}
