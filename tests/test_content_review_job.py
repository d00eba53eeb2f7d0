"""The `content_review` Dagster job (Launchpad): real in-process runs of the code location's job on a temporary warehouse.

It must decide exactly as `factory content approve|edit|reject` does (same functions), record the reviewer it is
given, and fail the run with the reason, writing nothing, when the decision is refused.
"""

from __future__ import annotations

from datetime import date

import dagster as dg
import pandas as pd
import pytest

from factory_dagster.content.review import find_variant, store_pieces
from factory_dagster.content.spec import load_content_spec
from factory_dagster.definitions import build_definitions
from factory_dagster.review.analysis import word_edit_distance
from factory_dagster.settings import PROJECT_ROOT, Paths
from factory_dagster.warehouse.store import connect

SPEC = load_content_spec(PROJECT_ROOT / "campaigns" / "content_brightwave.yaml")
DAY = date(2026, 3, 2)
OP = "review_content_variant"
BANNED_TEXT = "A revolutionary way to close the month"
TEXTS = {
    "v-banned": (BANNED_TEXT, "flagged", ["banned_phrase"]),
    "v-excl": ("Close the month 4 days faster, really!", "flagged", ["voice_exclamation"]),
    "v-pass": ("Close the month up to 4 days faster", "passed", []),
}


@pytest.fixture(scope="module")
def defs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dg.Definitions, Paths]:
    """One code location and warehouse for the module; each test decides on its own variants."""
    paths = Paths.under(tmp_path_factory.mktemp("content_review_job") / "data")
    return build_definitions(paths), paths


def seed(paths: Paths, prefix: str) -> None:
    """Three variants of one headline piece, ids prefixed so that each test has its own."""
    rows = [
        {
            "piece_id": f"{prefix}-p1",
            "variant_id": f"{prefix}-{name}",
            "topic": "close_speed",
            "segment": "controllers",
            "channel": "headline",
            "text": text,
            "gate_verdict": verdict,
            "violation_codes": codes,
            "claims_used": [],
            "model": "offline-cheap",
        }
        for name, (text, verdict, codes) in TEXTS.items()
    ]
    with connect(paths.warehouse) as con:
        store_pieces(con, pd.DataFrame(rows), content_id=SPEC.content_id, day=DAY, run_id="run-1", spec_version="s1")


def run(defs: tuple[dg.Definitions, Paths], **config: str) -> dg.ExecuteInProcessResult:
    return (
        defs[0]
        .resolve_job_def("content_review")
        .execute_in_process(
            run_config={"ops": {OP: {"config": config}}}, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
        )
    )


def failure(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    return result.failure_data_for_node(OP).user_failure_data.description


def reviews(paths: Paths, variant_id: str) -> list[tuple]:
    with connect(paths.warehouse, read_only=True) as con:
        return con.execute(
            "SELECT action, actor, reason, edited_text, diff, edit_distance FROM raw.content_reviews WHERE variant_id = ? "
            "ORDER BY seq",
            [variant_id],
        ).fetchall()


def test_the_job_is_in_the_code_location_and_needs_a_reviewer(defs) -> None:
    job = defs[0].resolve_job_def("content_review")
    assert "reviewer" in job.description
    seed(defs[1], "r")
    with pytest.raises(dg.DagsterInvalidConfigError, match="reviewer"):
        run(defs, variant_id="r-v-pass", action="approve")
    with pytest.raises(dg.DagsterInvalidConfigError):
        run(defs, variant_id="r-v-pass", action="publish", reviewer="ana")  # not an action
    assert "every decision records who made it" in failure(run(defs, variant_id="r-v-excl", action="approve", reviewer=" "))
    assert reviews(defs[1], "r-v-excl") == []


def test_approve_records_the_reviewer_and_a_hard_rule_is_refused(defs) -> None:
    paths = defs[1]
    seed(paths, "a")
    refused = failure(run(defs, variant_id="a-v-banned", action="approve", reviewer="ana"))
    assert "cannot approve away" in refused and "banned_phrase" in refused
    assert "needs a --reason" in failure(run(defs, variant_id="a-v-excl", action="approve", reviewer="ana"))
    assert reviews(paths, "a-v-banned") == reviews(paths, "a-v-excl") == []
    result = run(defs, variant_id="a-v-excl", action="approve", reviewer="ana (Launchpad)", reason="the brand's tagline")
    assert result.success
    assert reviews(paths, "a-v-excl") == [("approve", "ana (Launchpad)", "the brand's tagline", None, None, None)]
    assert "text is only for an edit" in failure(
        run(defs, variant_id="a-v-pass", action="approve", reviewer="ana", text="Another text")
    )


def test_an_edit_stores_its_diff_and_distance_and_a_rule_breaking_edit_fails_the_run(defs) -> None:
    paths = defs[1]
    seed(paths, "e")
    refused = failure(
        run(defs, variant_id="e-v-banned", action="edit", reviewer="bo", text="A guaranteed way to close the month 9 days faster")
    )
    assert "breaks the content gate's rules" in refused and "banned_phrase" in refused and "unsupported_number" in refused
    assert "needs the new text" in failure(run(defs, variant_id="e-v-banned", action="edit", reviewer="bo"))
    assert reviews(paths, "e-v-banned") == []

    new = "A calmer way to close the month"
    assert run(defs, variant_id="e-v-banned", action="edit", reviewer="bo", text=new, reason="no hype").success
    ((action, actor, reason, edited, diff, distance),) = reviews(paths, "e-v-banned")
    assert (action, actor, reason, edited) == ("edit", "bo", "no hype", new)
    assert f"-{BANNED_TEXT}" in diff and f"+{new}" in diff
    assert distance == pytest.approx(word_edit_distance(BANNED_TEXT, new))
    with connect(paths.warehouse, read_only=True) as con:
        item = find_variant(con, SPEC.content_id, "e-v-banned")
    assert (item.text, item.status) == (new, "approved by bo, edited (1x)")


def test_reject_needs_a_reason_and_a_moved_on_variant_is_refused(defs) -> None:
    paths = defs[1]
    seed(paths, "j")
    assert "needs a reason" in failure(run(defs, variant_id="j-v-pass", action="reject", reviewer="cy"))
    with connect(paths.warehouse, read_only=True) as con:
        seen = find_variant(con, SPEC.content_id, "j-v-excl").sha256[:12]
    assert run(defs, variant_id="j-v-excl", action="edit", reviewer="cy", text="Close the month up to 4 days sooner").success
    late = failure(run(defs, variant_id="j-v-excl", action="reject", reviewer="di", reason="too close", seen_sha256=seen))
    assert "changed since you looked" in late
    assert run(defs, variant_id="j-v-pass", action="reject", reviewer="cy", reason="off brief").success
    assert reviews(paths, "j-v-pass") == [("reject", "cy", "off brief", None, None, None)]
    assert "was rejected by cy" in failure(run(defs, variant_id="j-v-pass", action="approve", reviewer="di"))
    assert "no variant" in failure(run(defs, variant_id="j-missing", action="approve", reviewer="di"))
    assert [r[0] for r in reviews(paths, "j-v-excl")] == ["edit"]
