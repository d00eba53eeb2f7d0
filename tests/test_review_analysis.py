"""What an edit changed: the word edit distance on known pairs, the sections, the rule facts and the phrases."""

from __future__ import annotations

import pytest
from helpers_db import LEADS, SPEC
from helpers_review import HOOK, valid_body, valid_subject

from factory_dagster.review.analysis import (
    SECTIONS,
    Change,
    analyse_edit,
    levenshtein,
    phrase_changes,
    split_sections,
    unified_diff,
    word_edit_distance,
)
from factory_dagster.review.cli import UsageError, parse_edited

ANNA, JUERGEN = LEADS[0], LEADS[1]
CLOSE_SPEED = SPEC.angle("close_speed")


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("kitten", "sitting", 3),  # the textbook pair, on characters
        ("flaw", "lawn", 2),
        ("", "abc", 3),
        ("same", "same", 0),
    ],
)
def test_levenshtein_on_known_pairs(a: str, b: str, distance: int) -> None:
    assert levenshtein(a, b) == distance == levenshtein(b, a)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("a b c", "a b c", 0.0),
        ("a b c", "a x c", 1 / 3),  # one word substituted of three
        ("a b", "a b c d", 2 / 4),  # two words inserted; the longer text has four
        ("one two three", "four five six", 1.0),  # nothing kept in place
        ("we close faster", "close faster", 1 / 3),  # one word deleted
        ("", "", 0.0),
        ("Hi  Anna,\nthanks", "Hi Anna, thanks", 0.0),  # whitespace is not a word
    ],
)
def test_word_edit_distance_is_word_levenshtein_over_the_longer_length(old: str, new: str, expected: float) -> None:
    assert word_edit_distance(old, new) == pytest.approx(expected)


def test_sections_of_a_message_shaped_like_the_drafts() -> None:
    sections = split_sections(valid_subject(ANNA), valid_body(ANNA), SPEC)

    assert list(sections) == list(SECTIONS)
    assert sections["subject"] == valid_subject(ANNA)
    assert sections["greeting"] == "Hi Anna,"
    assert sections["hook"] == f"Closing the books at {ANNA.company} {HOOK}"
    assert sections["body"] == " ".join(CLOSE_SPEED.claims)
    assert sections["call_to_action"] == SPEC.required.call_to_action
    assert sections["footer"].startswith("Best,\nMaya Okafor")
    assert sections["footer"].endswith(SPEC.sender.postal_address)


def test_sections_a_message_lacks_are_empty() -> None:
    sections = split_sections("Hello", "Just one sentence here. And a second one.", SPEC)
    assert sections["greeting"] == sections["call_to_action"] == sections["footer"] == ""
    assert sections["hook"] == "Just one sentence here."
    assert sections["body"] == "And a second one."


def test_an_edit_that_cuts_a_claim_and_rewrites_the_hook() -> None:
    old = valid_body(ANNA)
    new = old.replace(HOOK, "takes a week.").replace(" Reconciliations run automatically every night.", "")

    analysis = analyse_edit(valid_subject(ANNA), old, valid_subject(ANNA), new, SPEC, CLOSE_SPEED, ANNA.__dict__)

    assert analysis.sections_changed == ["hook", "body"]
    assert analysis.words_before - analysis.words_after == len(HOOK.split()) - 3 + 5
    assert Change("body", "claim", "removed", "Reconciliations run automatically every night.") in analysis.changes
    assert Change("body", "phrase", "removed", "reconciliations run automatically every night") in analysis.changes
    hook = [c for c in analysis.changes if c.section == "hook"]
    assert {c.change for c in hook} == {"removed", "added"} and all(c.kind == "phrase" for c in hook)
    assert hook == [
        Change("hook", "phrase", "removed", "likely still takes over the first week of every month"),
        Change("hook", "phrase", "added", "takes a week"),
    ]  # one rewrite, not fragments around the kept "the" and "week"
    old_words = len(f"{valid_subject(ANNA)}\n{old}".split())
    assert analysis.edit_distance == pytest.approx(
        levenshtein(f"{valid_subject(ANNA)}\n{old}".split(), f"{valid_subject(ANNA)}\n{new}".split()) / old_words
    )
    assert "-Closing the books at" in analysis.diff and "+Closing the books at" in analysis.diff


def test_names_are_masked_so_the_same_change_to_two_leads_is_the_same_phrase() -> None:
    found = []
    for lead in (ANNA, JUERGEN):
        old = valid_body(lead)
        new = old.replace(f"Closing the books at {lead.company}", f"At {lead.company}, closing the books")
        analysis = analyse_edit(valid_subject(lead), old, valid_subject(lead), new, SPEC, CLOSE_SPEED, lead.__dict__)
        found.append(sorted((c.change, c.value) for c in analysis.changes if c.kind == "phrase"))
    assert found[0] == found[1]
    assert found[0] == [("added", "at {company}, closing the books"), ("removed", "closing the books at {company}")]


def test_subject_greeting_and_numbers_are_rule_facts() -> None:
    old_body = valid_body(ANNA)
    new_body = old_body.replace("Hi Anna,", "Dear Anna,").replace("up to 4 days faster", "much faster")
    analysis = analyse_edit("Old subject", old_body, "A new subject", new_body, SPEC, CLOSE_SPEED, ANNA.__dict__)

    assert analysis.sections_changed == ["subject", "greeting", "body"]
    assert Change("body", "number", "removed", "4") in analysis.changes
    assert Change("body", "claim", "removed", "Teams using Brightwave close the month up to 4 days faster.") in analysis.changes
    assert Change("greeting", "phrase", "removed", "hi") in analysis.changes
    assert Change("greeting", "phrase", "added", "dear") in analysis.changes
    # The greeting still greets the lead by name: that fact did not change.
    assert not [c for c in analysis.changes if c.kind == "greeting"]


def test_punctuation_and_case_alone_are_not_phrase_changes() -> None:
    assert phrase_changes("We close faster.", "we close faster!") == ([], [])
    assert phrase_changes("a b c", "a c") == (["b"], [])


def test_an_unchanged_section_is_not_reported() -> None:
    body = valid_body(ANNA)
    analysis = analyse_edit("Subject one", body, "Subject two", body, SPEC, CLOSE_SPEED, ANNA.__dict__)
    assert analysis.sections_changed == ["subject"]
    assert {c.section for c in analysis.changes} == {"subject"}


def test_unified_diff_reads_like_the_message() -> None:
    diff = unified_diff("Old", "Hi Anna,\n\nLine one.", "New", "Hi Anna,\n\nLine two.")
    assert diff.splitlines()[:2] == ["--- before", "+++ after"]
    assert "-Subject: Old" in diff and "+Subject: New" in diff
    assert "-Line one." in diff and "+Line two." in diff and " Hi Anna," in diff


def test_the_editor_text_is_parsed_back_into_subject_and_body() -> None:
    assert parse_edited("Subject: Hello there\n\nHi Anna,\n\nBody.\n") == ("Hello there", "Hi Anna,\n\nBody.")
    with pytest.raises(UsageError, match="Subject"):
        parse_edited("Hi Anna,\n\nno subject line")
