"""`factory review` on a real DuckDB warehouse: list, show, approve, edit, hold and release, and what each refuses."""

from __future__ import annotations

import getpass
import hashlib
import sys

import pytest
from helpers_db import LEADS, SPEC, Lead, add_leads, add_send, query, run_for
from helpers_review import HOOK, add_valid_message, review, valid_body

from factory_dagster.delivery.states import Change as Move
from factory_dagster.delivery.states import QueuedSend, enqueue, move, transaction
from factory_dagster.review.actions import find_message, unsent_messages
from factory_dagster.review.sendable import text_sha256
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import open_warehouse

ANNA, JUERGEN, SIOBHAN, PIETER = LEADS[:4]
# A colleague of Anna's: same company, same e-mail domain.
ERIK = Lead("erik.lund@northwind-labs.example", "Erik", "Lund", "Northwind Labs AB", "Software", 250, "CFO", "C-level", "Nordics")
ERIK_HOOK = "probably means late evenings for the whole team."


@pytest.fixture
def paths(engine_paths: Paths) -> Paths:
    """The data folder, once with the DuckDB file and once with a PostgreSQL warehouse (tests/warehouse_engines.py)."""
    return engine_paths


@pytest.fixture
def messages(paths: Paths) -> dict[str, dict]:
    """Three open messages (Anna, Jürgen, Erik) and one already sent (Pieter)."""
    with open_warehouse(paths) as con:
        add_leads(con, [ANNA, JUERGEN, PIETER, ERIK])
        found = {lead.first_name: add_valid_message(con, lead) for lead in (ANNA, JUERGEN, PIETER)}
        # Colleagues' messages going out the same day must differ (the gate's near-duplicate rule).
        found["Erik"] = add_valid_message(con, ERIK, angle="team_time", hook=ERIK_HOOK)
        add_send(con, found["Pieter"])
    return found


def edited_body(lead: Lead) -> str:
    return valid_body(lead).replace(HOOK, "is still the longest week of the month.")


def rows(paths: Paths, sql: str, params: list | None = None) -> list[tuple]:
    with open_warehouse(paths) as con:
        return query(con, sql, params)


def test_list_shows_the_open_messages_with_what_the_send_stage_needs(paths, messages, capsys) -> None:
    assert review(paths, "list") == 0
    out = capsys.readouterr().out

    for name in ("Anna", "Jürgen", "Erik"):
        m = messages[name]
        assert m["message_id"] in out and m["to_email"] in out and m["subject"] in out
    assert messages["Pieter"]["message_id"] not in out  # already sent
    assert f"Closing the books at {ANNA.company} {HOOK}" in out  # the first line after the greeting
    ((model,),) = rows(paths, "SELECT model FROM raw.messages WHERE message_id = ?", [messages["Anna"]["message_id"]])
    assert f"{ANNA.email}  {ANNA.segment}  draft-v1  {model}" in out
    assert "3 messages not sent yet: 0 held, 0 approved, 0 edited" in out
    assert "review is optional" in out


def test_list_by_day_takes_what_that_days_send_stage_would(paths, messages, capsys) -> None:
    from helpers_db import DAY

    with open_warehouse(paths) as con:
        later = Lead("kim@later.example", "Kim", "Park", "Later Co", "Software", 80, "CFO", "C-level", "Nordics")
        add_leads(con, [later])
        add_valid_message(con, later, DAY.replace(day=DAY.day + 1))
        assert len(unsent_messages(con, SPEC.campaign_id, DAY)) == 3
        assert len(unsent_messages(con, SPEC.campaign_id)) == 4


def test_an_edit_is_stored_with_both_texts_the_diff_and_the_distance(paths, messages, tmp_path, capsys) -> None:
    anna = messages["Anna"]
    body_file = tmp_path / "body.txt"
    body_file.write_text(edited_body(ANNA) + "\n", encoding="utf-8")

    code = review(
        paths, "edit", anna["message_id"], "--subject", "Month-end at Northwind Labs AB", "--body-file", str(body_file),
        "--reason", "hook too vague", "--actor", "ann",
    )  # fmt: skip

    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "passed the gate's rules" in out and "+Subject: Month-end at Northwind Labs AB" in out
    (edit,) = rows(
        paths,
        """SELECT old_subject, old_body, new_subject, new_body, diff, edit_distance, sections_changed, actor, reason,
                  base_sha256, edit_seq, prompt_version, segment
           FROM raw.message_edits WHERE message_id = ?""",
        [anna["message_id"]],
    )
    old_subject, old_body, new_subject, new_body, diff, distance, sections, actor, reason, base, seq, prompt, segment = edit
    assert (old_subject, old_body) == (anna["subject"], anna["body"])
    assert (new_subject, new_body) == ("Month-end at Northwind Labs AB", edited_body(ANNA))  # trailing newline gone
    assert "-Subject: " + anna["subject"] in diff and "+is still the longest week" not in diff  # whole lines
    assert f"+Closing the books at {ANNA.company} is still the longest week of the month." in diff
    old_words = f"{old_subject}\n{old_body}".split()
    new_words = f"{new_subject}\n{new_body}".split()
    assert 0 < distance < 0.5
    assert distance == pytest.approx(_levenshtein(old_words, new_words) / max(len(old_words), len(new_words)))
    assert sections == ["subject", "hook"]
    assert (actor, reason, seq, prompt, segment) == ("ann", "hook too vague", 1, "draft-v1", ANNA.segment)
    assert base == text_sha256(anna["subject"], anna["body"]) == hashlib.sha256(f"{old_subject}\n{old_body}".encode()).hexdigest()
    assert rows(paths, "SELECT action, actor, edit_id IS NOT NULL FROM raw.message_reviews") == [("edit", "ann", True)]

    assert review(paths, "show", anna["send_id"]) == 0  # a send id finds the message too
    shown = capsys.readouterr().out
    assert edited_body(ANNA) in shown and "changes from the model's text:" in shown
    assert "edit by ann: hook too vague (distance" in shown and "changed subject, hook" in shown


def _levenshtein(a: list[str], b: list[str]) -> int:
    table = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, table[0] = table[0], i
        for j, y in enumerate(b, 1):
            prev, table[j] = table[j], min(table[j] + 1, table[j - 1] + 1, prev + (x != y))
    return table[-1]


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (lambda b: b.replace(HOOK, "is guaranteed to get shorter."), "banned_phrase"),
        (lambda b: b.replace(SPEC.required.call_to_action, "Let me know."), "missing_cta"),
        (lambda b: b.replace("up to 4 days", "up to 7 days"), "unsupported_number"),
        (lambda b: b.replace(SPEC.required.unsubscribe_footer, ""), "missing_unsubscribe"),
        (lambda b: b.replace("Hi Anna,", "Hi Maria,"), "wrong_name"),
        (lambda b: b + " Call me on WhatsApp." * 40, "too_long"),
    ],
)
def test_an_edit_that_breaks_a_gate_rule_is_refused_and_nothing_is_stored(
    paths, messages, tmp_path, capsys, change, rule
) -> None:
    body_file = tmp_path / "body.txt"
    body_file.write_text(change(valid_body(ANNA)), encoding="utf-8")

    assert review(paths, "edit", messages["Anna"]["message_id"], "--body-file", str(body_file), "--actor", "ann") == 1

    err = capsys.readouterr().err
    assert "breaks the gate's rules, so it was not stored" in err and f"{rule}:" in err
    assert rows(paths, "SELECT count(*) FROM raw.message_edits") == [(0,)]
    assert rows(paths, "SELECT count(*) FROM raw.message_reviews") == [(0,)]


def test_an_edit_into_a_copy_of_a_colleagues_message_is_refused_as_a_near_duplicate(paths, messages, tmp_path, capsys) -> None:
    """The consistency rules run too: Erik's message may not read like Anna's going out the same day."""
    anna_like = valid_body(ANNA).replace(HOOK, "is the week nobody at the company looks forward to, with late nights.")
    with open_warehouse(paths) as con:
        con.execute("UPDATE raw.messages SET body = ? WHERE message_id = ?", [anna_like, messages["Anna"]["message_id"]])
    body_file = tmp_path / "body.txt"
    body_file.write_text(anna_like.replace("Hi Anna,", "Hi Erik,"), encoding="utf-8")

    assert review(paths, "edit", messages["Erik"]["message_id"], "--body-file", str(body_file)) == 1
    assert "near_duplicate:" in capsys.readouterr().err
    assert rows(paths, "SELECT count(*) FROM raw.message_edits") == [(0,)]


def test_edits_of_sent_claimed_or_unknown_messages_and_empty_edits_are_refused(paths, messages, capsys) -> None:
    run = run_for()
    jurgen = messages["Jürgen"]
    with open_warehouse(paths) as con, transaction(con):
        enqueue(
            con, [QueuedSend(jurgen["send_id"], jurgen["lead_id"], jurgen["message_id"], jurgen["to_email"])], run, "smtp", "t"
        )
        move(con, "claimed", [Move(jurgen["send_id"], "t", mailbox="m@x.example", message_id=jurgen["message_id"])],
             from_state="queued", actor="t", run=run, transport="smtp")  # fmt: skip

    cases = [
        (messages["Pieter"]["message_id"], "was already sent: too late to edit it"),
        (jurgen["message_id"], "is claimed in the outbox"),
        ("msg_nope", "no message of campaign"),
    ]
    for ident, expected in cases:
        assert review(paths, "edit", ident, "--subject", "Anything new") == 1
        assert expected in capsys.readouterr().err
    assert review(paths, "edit", messages["Anna"]["message_id"], "--subject", messages["Anna"]["subject"]) == 1
    assert "changes nothing" in capsys.readouterr().err
    assert review(paths, "hold", jurgen["send_id"], "--reason", "late") == 1  # too late for a hold as well
    assert rows(paths, "SELECT count(*) FROM raw.message_edits") == [(0,)]


def test_a_queued_send_can_still_be_edited(paths, messages, capsys) -> None:
    anna = messages["Anna"]
    with open_warehouse(paths) as con, transaction(con):
        enqueue(con, [QueuedSend(anna["send_id"], anna["lead_id"], anna["message_id"], anna["to_email"])], run_for(), "file", "t")
    assert review(paths, "edit", anna["message_id"], "--subject", "Month-end at Northwind Labs AB") == 0


def test_hold_release_approve_and_their_refusals(paths, messages, capsys) -> None:
    anna = messages["Anna"]["message_id"]
    assert review(paths, "hold", anna, "--reason", "check the claim with sales", "--actor", "ann") == 0
    assert review(paths, "hold", anna, "--reason", "again") == 1
    assert "already held: check the claim with sales" in capsys.readouterr().err
    assert review(paths, "approve", anna) == 1
    assert "release it first" in capsys.readouterr().err
    review(paths, "list")
    assert "HELD: check the claim with sales" in capsys.readouterr().out

    assert review(paths, "release", anna, "--reason", "sales confirmed", "--actor", "bob") == 0
    assert review(paths, "release", anna, "--reason", "again") == 1
    assert "is not held" in capsys.readouterr().err
    assert review(paths, "approve", anna, "--reason", "fine") == 0
    assert review(paths, "approve", anna) == 0
    assert "already approved" in capsys.readouterr().out

    assert rows(paths, "SELECT seq, action, actor, reason FROM raw.message_reviews ORDER BY seq") == [
        (1, "hold", "ann", "check the claim with sales"),
        (2, "release", "bob", "sales confirmed"),
        (3, "approve", getpass.getuser(), "fine"),
    ]


def test_an_approval_is_of_one_text_an_edit_voids_it(paths, messages, capsys) -> None:
    anna = messages["Anna"]["message_id"]
    with open_warehouse(paths) as con:
        assert review(paths, "approve", anna) == 0
        assert find_message(con, SPEC.campaign_id, anna).approved
        assert review(paths, "edit", anna, "--subject", "Month-end at Northwind Labs AB") == 0
        assert not find_message(con, SPEC.campaign_id, anna).approved
        assert review(paths, "edit", anna, "--subject", "Northwind Labs AB: month-end", "--approve") == 0
        item = find_message(con, SPEC.campaign_id, anna)
        assert item.approved and item.edited and item.edits == 2
        assert item.subject == "Northwind Labs AB: month-end" and item.model_subject == messages["Anna"]["subject"]
    # The second edit's diff starts from the first edit's text.
    assert rows(paths, "SELECT old_subject FROM raw.message_edits WHERE edit_seq = 2") == [("Month-end at Northwind Labs AB",)]
    assert review(paths, "approve", "--all") == 0
    assert "approved 2 messages" in capsys.readouterr().out  # Jürgen and Erik; Anna already was
    assert review(paths, "approve", anna, "--all") == 2


def test_a_body_file_that_is_not_utf8_or_missing_is_named(paths, messages, tmp_path, capsys) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(valid_body(ANNA).replace("Hi Anna,", "Hi Ånna,").encode("latin-1"))
    assert review(paths, "edit", messages["Anna"]["message_id"], "--body-file", str(bad)) == 2
    assert f"--body-file {bad}: not UTF-8 text" in capsys.readouterr().err
    assert review(paths, "edit", messages["Anna"]["message_id"], "--body-file", str(tmp_path / "none.txt")) == 2
    assert "no such file" in capsys.readouterr().err


def test_without_subject_or_body_file_the_editor_edits_the_message(paths, messages, tmp_path, monkeypatch, capsys) -> None:
    script = tmp_path / "editor.py"
    script.write_text(
        "import sys, pathlib\n"
        "p = pathlib.Path(sys.argv[1])\n"
        f"p.write_text(p.read_text(encoding='utf-8').replace({HOOK!r}, 'is the longest week.'), encoding='utf-8')\n"
    )
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")

    assert review(paths, "edit", messages["Anna"]["message_id"], "--reason", "shorter") == 0, capsys.readouterr().err
    (new_body,) = rows(paths, "SELECT new_body FROM raw.message_edits")[0]
    assert new_body == valid_body(ANNA).replace(HOOK, "is the longest week.")

    monkeypatch.delenv("EDITOR")
    assert review(paths, "edit", messages["Jürgen"]["message_id"]) == 2
    assert "set $EDITOR" in capsys.readouterr().err
