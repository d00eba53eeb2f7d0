"""The send stage after a review: edited messages go with their edited text, held ones wait, approvals when required."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from helpers_db import DAY, LEADS, SPEC, add_leads, query, run_for
from helpers_review import HOOK, add_valid_message, review, valid_body

from factory_dagster.delivery.config import ConfigError, Mailbox
from factory_dagster.delivery.eml import FileTransport
from factory_dagster.delivery.outbox import pending_messages
from factory_dagster.delivery.stage import DeliverySetup, run_sends
from factory_dagster.delivery.states import QueuedSend, enqueue, transaction
from factory_dagster.gates.consistency import load_earlier
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import open_warehouse

ANNA, JUERGEN, SIOBHAN = LEADS[:3]
NEW_SUBJECT = "Month-end at Northwind Labs AB"
NEW_HOOK = "is still the longest week of the month."


@pytest.fixture
def paths(engine_paths: Paths):
    """The data folder, once with the DuckDB file and once with a PostgreSQL warehouse (tests/warehouse_engines.py)."""
    paths = engine_paths
    with open_warehouse(paths) as con:
        add_leads(con, [ANNA, JUERGEN, SIOBHAN])
        for lead in (ANNA, JUERGEN, SIOBHAN):
            add_valid_message(con, lead)
    return paths


def setup_for(paths, require_review: bool = False) -> DeliverySetup:
    sender = Mailbox(SPEC.sender.email, SPEC.sender.name, daily_cap=None, per_minute=None)
    return DeliverySetup(FileTransport(paths.outbox), [sender], require_review=require_review)


def ids(paths, lead) -> tuple[str, str]:
    with open_warehouse(paths) as con:
        return query(con, "SELECT message_id, send_id FROM raw.messages WHERE lead_id = ?", [lead.lead_id])[0]


def sent_email(path: str):
    email = message_from_bytes(Path(path).read_bytes(), policy=policy.default)
    return email["Subject"], email.get_body(preferencelist=("plain",)).get_content()


def edit_anna(paths, body_dir: Path) -> str:
    body = valid_body(ANNA).replace(HOOK, NEW_HOOK)
    (body_dir / "anna.txt").write_text(body, encoding="utf-8")
    message_id, _ = ids(paths, ANNA)
    assert review(paths, "edit", message_id, "--subject", NEW_SUBJECT, "--body-file", str(body_dir / "anna.txt")) == 0
    return body


def test_the_edited_text_goes_and_the_held_message_waits_until_released(paths, tmp_path) -> None:
    body = edit_anna(paths, tmp_path)
    juergen_message, juergen_send = ids(paths, JUERGEN)
    assert review(paths, "hold", juergen_message, "--reason", "wrong company size") == 0

    with open_warehouse(paths) as con:
        result = run_sends(con, SPEC, run_for(DAY), setup_for(paths))
        assert result.plan.held_for_review == 1 and result.plan.awaiting_review == 0
        assert sorted(result.report.sent) == sorted([ids(paths, ANNA)[1], ids(paths, SIOBHAN)[1]])
        sends = {r[0]: r[1:] for r in query(con, "SELECT send_id, subject, body_sha256, transport_ref FROM raw.sends")}
        (incident,) = query(con, "SELECT kind, detail FROM raw.incidents WHERE kind = 'messages_held_by_review'")
        assert incident[1].startswith("1 message(s) held by a reviewer wait until released")
        # raw.messages keeps the model's text; the send row says what went.
        (model_subject,) = query(con, "SELECT subject FROM raw.messages WHERE lead_id = ?", [ANNA.lead_id])[0]
    assert juergen_send not in sends

    subject, sha, ref = sends[ids(paths, ANNA)[1]]
    assert subject == NEW_SUBJECT != model_subject
    assert sha == hashlib.sha256(body.encode()).hexdigest()
    email_subject, text = sent_email(ref)
    assert email_subject == NEW_SUBJECT and NEW_HOOK in text and HOOK not in text
    _, _, siobhan_ref = sends[ids(paths, SIOBHAN)[1]]
    assert HOOK in sent_email(siobhan_ref)[1]  # an unedited message goes as the model wrote it

    # Released, the held message goes with the next day's send.
    assert review(paths, "release", juergen_message, "--reason", "size checked") == 0
    with open_warehouse(paths) as con:
        later = run_sends(con, SPEC, run_for(DAY + timedelta(days=1)), setup_for(paths))
    assert later.report.sent == [juergen_send] and later.plan.held_for_review == 0


def test_an_edit_of_a_queued_send_is_what_goes(paths, tmp_path) -> None:
    """A send the outbox queued (e.g. left for the next day by a mailbox cap) but did not claim takes the edit."""
    message_id, anna_send = ids(paths, ANNA)
    with open_warehouse(paths) as con, transaction(con):
        enqueue(con, [QueuedSend(anna_send, ANNA.lead_id, message_id, ANNA.email)], run_for(DAY), "file", "test")
    body = edit_anna(paths, tmp_path)
    with open_warehouse(paths) as con:
        run_sends(con, SPEC, run_for(DAY), setup_for(paths))
        ((ref, sha),) = query(con, "SELECT transport_ref, body_sha256 FROM raw.sends WHERE send_id = ?", [anna_send])
    assert sha == hashlib.sha256(body.encode()).hexdigest() and NEW_HOOK in sent_email(ref)[1]


def test_a_gate_rerun_with_other_text_makes_the_edit_stale(paths, tmp_path) -> None:
    """The edit was of a text that is gone; the gate's new text goes rather than an edit of something else."""
    edit_anna(paths, tmp_path)
    rewritten = valid_body(ANNA).replace(HOOK, "takes a full week.")
    with open_warehouse(paths) as con:
        con.execute("UPDATE raw.messages SET body = ? WHERE lead_id = ?", [rewritten, ANNA.lead_id])
        run_sends(con, SPEC, run_for(DAY), setup_for(paths))
        ((subject, sha),) = query(con, "SELECT subject, body_sha256 FROM raw.sends WHERE lead_id = ?", [ANNA.lead_id])
    assert sha == hashlib.sha256(rewritten.encode()).hexdigest() and subject != NEW_SUBJECT


def test_with_review_required_only_approved_texts_go(paths, tmp_path) -> None:
    anna_message, anna_send = ids(paths, ANNA)
    juergen_message, juergen_send = ids(paths, JUERGEN)
    assert review(paths, "approve", anna_message) == 0
    assert review(paths, "approve", juergen_message) == 0
    edit_anna(paths, tmp_path)  # after the approval: Anna's new text is not approved

    with open_warehouse(paths) as con:
        result = run_sends(con, SPEC, run_for(DAY), setup_for(paths, require_review=True))
        assert result.report.sent == [juergen_send]
        assert result.plan.awaiting_review == 2 and result.plan.held_for_review == 0
        (detail,) = query(con, "SELECT detail FROM raw.incidents WHERE kind = 'messages_awaiting_review'")[0]
        assert detail.startswith("2 message(s) wait for a person's approval")
        # Without the requirement (the default) nothing waits for a person.
        assert len(pending_messages(con, DAY, SPEC.campaign_id)) == 2

    assert review(paths, "approve", anna_message) == 0
    with open_warehouse(paths) as con:
        later = run_sends(con, SPEC, run_for(DAY + timedelta(days=1)), setup_for(paths, require_review=True))
    assert later.report.sent == [anna_send] and later.plan.awaiting_review == 1


@pytest.mark.parametrize(("value", "required"), [(None, False), ("", False), ("0", False), ("1", True), ("yes", True)])
def test_review_is_required_only_when_the_environment_says_so(tmp_path, value, required) -> None:
    env = {} if value is None else {"FACTORY_REVIEW_REQUIRED": value}
    assert DeliverySetup.from_env(SPEC, tmp_path, env).require_review is required


def test_a_mistyped_review_setting_stops_the_send_stage(tmp_path) -> None:
    with pytest.raises(ConfigError, match="FACTORY_REVIEW_REQUIRED must be"):
        DeliverySetup.from_env(SPEC, tmp_path, {"FACTORY_REVIEW_REQUIRED": "maybe"})


def test_the_gate_compares_new_drafts_with_the_edited_text_that_went(paths, tmp_path) -> None:
    edit_anna(paths, tmp_path)
    with open_warehouse(paths) as con:
        run_sends(con, SPEC, run_for(DAY), setup_for(paths))
        colleague = pd.DataFrame([{"lead_id": "new", "email": "new@" + ANNA.email.split("@")[1], "company": ANNA.company}])
        gate = load_earlier(con, SPEC, DAY + timedelta(days=1), colleague)
        earlier = gate.reference(SimpleNamespace(**colleague.iloc[0].to_dict()))["messages"]
    assert earlier and all(NEW_HOOK in m["text"] and HOOK not in m["text"] for m in earlier)
