"""`marts.edit_patterns`, built by dbt on a small warehouse reviewed through the real review actions."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from helpers_db import LEADS, SPEC, add_leads
from helpers_review import HOOK, add_valid_message, valid_body

from factory_dagster.learning.dbt_runner import invoke
from factory_dagster.review.actions import approve, edit, hold
from factory_dagster.warehouse.store import connect

ANNA, JUERGEN, SIOBHAN, PIETER, MARIA, LARS = LEADS
SHORT_HOOK = "is the longest week of the month."
NIGHTLY = "Reconciliations run automatically every night."


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory, dbt_manifest) -> Path:
    """draft-v1: Anna and Jürgen get the same hook cut (Jürgen also a new subject), Siobhán is only approved.
    draft-v2: Pieter is held, María loses a claim, Lars is never reviewed."""
    path = tmp_path_factory.mktemp("edit_patterns") / "warehouse.duckdb"
    with connect(path) as con:
        add_leads(con, LEADS)
        ids = {}
        for lead in LEADS:
            version = "draft-v1" if lead in (ANNA, JUERGEN, SIOBHAN) else "draft-v2"
            ids[lead.first_name] = add_valid_message(con, lead, prompt_version=version)["message_id"]
        for lead in (ANNA, JUERGEN):
            body = valid_body(lead).replace(HOOK, SHORT_HOOK)
            edit(con, SPEC, ids[lead.first_name], "ann", "vague hook", body=body)
        edit(con, SPEC, ids["Jürgen"], "ann", "subject", subject="Month-end at Kranwerk GmbH")
        approve(con, SPEC.campaign_id, ids["Siobhán"], "bob")
        hold(con, SPEC.campaign_id, ids["Pieter"], "bob", "check the size")
        edit(con, SPEC, ids["María"], "bob", "too much", body=valid_body(MARIA).replace(f" {NIGHTLY}", ""))
    run = invoke(["build", "--select", "stg_message_edits edit_patterns"], path, path.parent / "dbt_target")
    assert run.success, run.describe_failure()
    return path


def mart(warehouse: Path) -> dict[tuple[str, str], dict]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        cursor = con.execute("SELECT * FROM marts.edit_patterns")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return {(r["prompt_version"], r["section"]): r for r in rows}


def raw_distances(warehouse: Path, prompt_version: str, section: str | None = None) -> list[float]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return [
            r[0]
            for r in con.execute(
                "SELECT edit_distance FROM raw.message_edits WHERE prompt_version = ? AND (? IS NULL OR list_contains(sections_changed, ?))",
                [prompt_version, section, section],
            ).fetchall()
        ]


def test_one_row_per_prompt_version_model_and_section(warehouse) -> None:
    rows = mart(warehouse)
    sections = {"all", "subject", "greeting", "hook", "body", "call_to_action", "footer"}
    assert set(rows) == {(v, s) for v in ("draft-v1", "draft-v2") for s in sections}  # Lars's version only via Pieter, María
    assert {r["campaign_id"] for r in rows.values()} == {SPEC.campaign_id}
    assert len({r["model"] for r in rows.values()}) == 1


def test_edit_counts_and_rates_per_section(warehouse) -> None:
    rows = mart(warehouse)
    everything, hook, subject, footer = (rows[("draft-v1", s)] for s in ("all", "hook", "subject", "footer"))
    assert (everything["messages_reviewed"], everything["messages_edited"], everything["edits"]) == (3, 2, 3)
    assert everything["edit_rate"] == pytest.approx(2 / 3)
    assert (hook["messages_edited"], hook["edits"], hook["edit_rate"]) == (2, 2, pytest.approx(2 / 3))
    assert (subject["messages_edited"], subject["edits"], subject["edit_rate"]) == (1, 1, pytest.approx(1 / 3))
    assert (footer["edits"], footer["edit_rate"], footer["mean_edit_distance"]) == (0, 0, None)

    v2 = rows[("draft-v2", "all")]
    assert (v2["messages_reviewed"], v2["messages_edited"], v2["edits"], v2["edit_rate"]) == (2, 1, 1, 0.5)
    assert rows[("draft-v2", "body")]["edits"] == 1 and rows[("draft-v2", "hook")]["edits"] == 0


def test_mean_edit_distance_and_word_change_are_the_edits_own(warehouse) -> None:
    rows = mart(warehouse)
    for version, section in (("draft-v1", "all"), ("draft-v1", "hook"), ("draft-v1", "subject"), ("draft-v2", "body")):
        distances = raw_distances(warehouse, version, None if section == "all" else section)
        assert rows[(version, section)]["mean_edit_distance"] == pytest.approx(sum(distances) / len(distances))
    assert rows[("draft-v2", "body")]["mean_words_change"] == -len(NIGHTLY.split())
    assert rows[("draft-v1", "subject")]["mean_words_change"] == 0  # a subject edit leaves the body's length


def test_the_phrases_and_rule_facts_people_keep_changing(warehouse) -> None:
    rows = mart(warehouse)
    hook = rows[("draft-v1", "hook")]
    # The same cut in two leads' messages is one phrase, counted twice.
    (removed,) = hook["top_removed_phrases"].split("; ")
    (added,) = hook["top_added_phrases"].split("; ")
    assert removed.startswith("likely still takes over the first week") and removed.endswith(" (2)")
    assert added.startswith("is the longest week") and added.endswith(" (2)")
    assert "(2)" in rows[("draft-v1", "all")]["top_removed_phrases"]
    body = rows[("draft-v2", "body")]
    assert body["top_rule_changes"] == f"removed claim: {NIGHTLY} (1)"
    assert body["top_removed_phrases"] == "reconciliations run automatically every night (1)"
    assert body["top_added_phrases"] is None
    subject = rows[("draft-v1", "subject")]
    assert subject["top_rule_changes"] is None and "month-end at {company}" in subject["top_added_phrases"]
