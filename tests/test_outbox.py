"""The send stage's outbox and the drafting work list, against a real DuckDB warehouse.

The state is built row by row as the earlier stages would have written it: assignments,
accepted messages, sends, suppression, the model ledger and the kill switch.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pandas as pd
import pytest
from helpers_db import (
    CAMPAIGN,
    DAY,
    LEADS,
    OTHER_CAMPAIGN,
    SPEC,
    add_assignment,
    add_leads,
    add_llm_call,
    add_message,
    add_plan,
    add_send,
    add_suppression,
    count,
    query,
    run_for,
)

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.controls.kill_switch import set_kill_switch
from factory_dagster.delivery.config import ConfigError, Mailbox
from factory_dagster.delivery.contact_gap import CONTACT_GAP_ENV, DEFAULT_GAP_DAYS, contact_gap_days
from factory_dagster.delivery.eml import FileTransport
from factory_dagster.delivery.outbox import pending_messages, plan_sends
from factory_dagster.delivery.stage import DeliverySetup, run_sends
from factory_dagster.drafting.work import clear_unsent, unsent_work
from factory_dagster.warehouse.store import insert_rows

YESTERDAY = DAY - timedelta(days=1)
TWO_DAYS_AGO = DAY - timedelta(days=2)
TOMORROW = DAY + timedelta(days=1)


@pytest.fixture
def con(engine_con):
    """The warehouse, once on DuckDB and once on PostgreSQL (tests/warehouse_engines.py)."""
    return engine_con


def with_limits(**limits: object) -> CampaignSpec:
    return SPEC.model_copy(update={"limits": SPEC.limits.model_copy(update=limits)})


def send_ids(frame: pd.DataFrame) -> list[str]:
    return frame["send_id"].tolist()


@pytest.fixture
def outbox(con) -> dict[str, dict]:
    """Messages of several days in every state the outbox must tell apart (by lead email)."""
    anna, juergen, siobhan, pieter, maria, lars = LEADS
    messages = {
        "today": add_message(con, anna, DAY),
        "yesterday": add_message(con, juergen, YESTERDAY, angle="fewer_errors", prompt_version="draft-v2"),
        "two_days_ago": add_message(con, siobhan, TWO_DAYS_AGO, angle="team_time"),
        "sent": add_message(con, pieter, YESTERDAY),
        "suppressed": add_message(con, maria, DAY),
        "tomorrow": add_message(con, lars, TOMORROW),
        "other_campaign": add_message(con, anna, DAY, campaign_id=OTHER_CAMPAIGN),
    }
    add_send(con, messages["sent"], YESTERDAY)
    add_suppression(con, maria.email.upper(), "unsubscribed", YESTERDAY)  # case must not matter
    return messages


# --- pending_messages --------------------------------------------------------------------------


def test_pending_excludes_sent_suppressed_future_and_other_campaigns_oldest_first(con, outbox) -> None:
    pending = pending_messages(con, DAY, CAMPAIGN)

    assert send_ids(pending) == [outbox[k]["send_id"] for k in ("two_days_ago", "yesterday", "today")]
    # Each row carries the message and the lead's segment from its assignment.
    assert pending["segment"].tolist() == [LEADS[2].segment, LEADS[1].segment, LEADS[0].segment]
    assert pending["body"].tolist() == [outbox[k]["body"] for k in ("two_days_ago", "yesterday", "today")]
    assert (pending["campaign_id"] == CAMPAIGN).all()


def test_pending_orders_by_day_then_message_id(con) -> None:
    for lead in LEADS[:4]:
        add_message(con, lead, DAY)
    add_message(con, LEADS[4], YESTERDAY)
    pending = pending_messages(con, DAY, CAMPAIGN)
    assert pending["partition_day"].dt.date.tolist() == [YESTERDAY] + [DAY] * 4
    assert pending["message_id"].iloc[1:].tolist() == sorted(pending["message_id"].iloc[1:])


def test_a_held_day_stays_in_the_outbox_until_released(con, outbox) -> None:
    from factory_dagster.controls.holds import hold_day, release_day

    hold_day(con, run_for(YESTERDAY), "the sampled audit failed")
    assert send_ids(pending_messages(con, DAY, CAMPAIGN)) == [outbox[k]["send_id"] for k in ("two_days_ago", "today")]
    release_day(con, YESTERDAY, CAMPAIGN, "ann", "reviewed")
    assert send_ids(pending_messages(con, DAY, CAMPAIGN)) == [
        outbox[k]["send_id"] for k in ("two_days_ago", "yesterday", "today")
    ]


def test_a_message_leaves_the_outbox_once_its_send_is_recorded(con, outbox) -> None:
    add_send(con, outbox["two_days_ago"], DAY)
    assert send_ids(pending_messages(con, DAY, CAMPAIGN)) == [outbox[k]["send_id"] for k in ("yesterday", "today")]


# --- plan_sends --------------------------------------------------------------------------------


def test_plan_sends_takes_everything_under_the_cap(con, outbox) -> None:
    plan = plan_sends(con, SPEC, DAY)
    assert plan.hold_reason is None and plan.deferred == 0
    assert send_ids(plan.batch) == send_ids(pending_messages(con, DAY, CAMPAIGN))
    assert len(plan.batch) == 3


def test_nobody_is_emailed_by_two_campaigns_within_the_contact_gap(con) -> None:
    anna, juergen = LEADS[:2]
    mine = [add_message(con, anna, DAY), add_message(con, juergen, DAY)]
    theirs = add_message(con, anna, TWO_DAYS_AGO, campaign_id=OTHER_CAMPAIGN)
    add_send(con, {**theirs, "to_email": anna.email.upper()}, TWO_DAYS_AGO)  # another campaign, two days ago
    plan = plan_sends(con, SPEC, DAY, gap_days=14)
    assert send_ids(plan.batch) == [mine[1]["send_id"]] and plan.held_by_contact_gap == 1 and plan.deferred == 0
    assert plan_sends(con, SPEC, DAY, gap_days=2).held_by_contact_gap == 0  # the gap has passed
    assert plan_sends(con, SPEC, DAY, gap_days=0).held_by_contact_gap == 0  # 0 turns it off
    # An outbox row of another campaign that may have gone (claimed) holds too.
    other = add_message(con, LEADS[2], DAY)
    outbox_row = {**add_message(con, LEADS[2], DAY, campaign_id=OTHER_CAMPAIGN), "state": "claimed"}
    insert_rows(
        con,
        "outbox",
        pd.DataFrame(
            [
                {
                    "send_id": outbox_row["send_id"],
                    "campaign_id": OTHER_CAMPAIGN,
                    "lead_id": outbox_row["lead_id"],
                    "message_id": outbox_row["message_id"],
                    "header_message_id": "<x@factory.invalid>",
                    "to_email": outbox_row["to_email"],
                    "transport": "file",
                    "state": "claimed",
                    "attempts": 1,
                    "partition_day": DAY,
                    "run_id": "r",
                    "queued_at": pd.Timestamp(DAY),
                    "updated_at": pd.Timestamp(DAY),
                }
            ]
        ),
    )
    held = plan_sends(con, SPEC, DAY, gap_days=14)
    assert other["send_id"] not in send_ids(held.batch) and held.held_by_contact_gap == 2


def test_plan_sends_counts_todays_sends_against_the_cap_and_defers_the_rest(con) -> None:
    already = [add_message(con, lead, YESTERDAY) for lead in LEADS[:2]]
    for message in already:
        add_send(con, message, DAY)  # sent earlier today (e.g. by a previous run)
    add_send(con, add_message(con, LEADS[2], TWO_DAYS_AGO), YESTERDAY)  # yesterday's send: not today's quota
    add_send(con, add_message(con, LEADS[2], YESTERDAY, campaign_id=OTHER_CAMPAIGN), DAY)  # other campaign
    waiting = [add_message(con, lead, DAY) for lead in LEADS[3:]]

    plan = plan_sends(con, with_limits(daily_send_cap=3), DAY)

    assert plan.hold_reason is None
    assert len(plan.batch) == 1 and plan.deferred == 2
    assert send_ids(plan.batch) == send_ids(pending_messages(con, DAY, CAMPAIGN))[:1]
    assert set(send_ids(plan.batch)) <= {m["send_id"] for m in waiting}

    # Once today's cap is used up, nothing goes and everything waits for tomorrow.
    full = plan_sends(con, with_limits(daily_send_cap=2), DAY)
    assert full.batch.empty and full.deferred == 3 and full.hold_reason is None
    # Tomorrow the quota is fresh, and the oldest go first.
    tomorrow = plan_sends(con, with_limits(daily_send_cap=2), TOMORROW)
    assert send_ids(tomorrow.batch) == send_ids(pending_messages(con, TOMORROW, CAMPAIGN))[:2]
    assert tomorrow.deferred == 1


def test_an_engaged_kill_switch_holds_every_message(con, outbox) -> None:
    set_kill_switch(con, True, "anomaly-guard", "complaint rate 0.42% over the last 7 days")

    plan = plan_sends(con, SPEC, DAY)

    assert plan.batch.empty and plan.deferred == 3
    assert plan.hold_reason is not None
    assert "anomaly-guard" in plan.hold_reason and "complaint rate 0.42% over the last 7 days" in plan.hold_reason

    set_kill_switch(con, False, "maya@brightwave-ledger.example", "complaints traced to one bad list; list removed")
    released = plan_sends(con, SPEC, DAY)
    assert released.hold_reason is None and len(released.batch) == 3


def test_spend_over_the_daily_budget_holds_sending(con, outbox) -> None:
    budget = SPEC.limits.daily_budget_usd
    add_llm_call(con, 1.25, DAY, n=1)
    add_llm_call(con, 0.70, DAY, n=2)
    add_llm_call(con, 5.00, YESTERDAY)  # another day's spend does not count
    add_llm_call(con, 5.00, DAY, campaign_id=OTHER_CAMPAIGN)  # nor another campaign's
    assert plan_sends(con, SPEC, DAY).hold_reason is None  # $1.95 of $2.00

    add_llm_call(con, 0.10, DAY, n=3)
    plan = plan_sends(con, SPEC, DAY)

    assert plan.batch.empty and plan.deferred == 3
    assert plan.hold_reason == f"model spend $2.0500 exceeded the daily budget ${budget:.2f}"


def test_the_kill_switch_is_checked_before_the_budget(con, outbox) -> None:
    add_llm_call(con, 9.0, DAY)
    set_kill_switch(con, True, "maya@brightwave-ledger.example", "pausing for the holiday")
    assert "pausing for the holiday" in plan_sends(con, SPEC, DAY).hold_reason


# --- the send stage on the file transport ----------------------------------------------------------


def _file_setup(outbox: Path) -> DeliverySetup:
    return DeliverySetup(FileTransport(outbox), [Mailbox(SPEC.sender.email, SPEC.sender.name, daily_cap=None, per_minute=None)])


def test_the_send_stage_writes_one_eml_per_message_and_send_rows(con, outbox, tmp_path: Path) -> None:
    plan = plan_sends(con, SPEC, DAY)
    result = run_sends(con, SPEC, run_for(DAY), _file_setup(tmp_path / "outbox"))

    files = sorted((tmp_path / "outbox").rglob("*.eml"))
    sent = con.execute("SELECT * FROM raw.sends WHERE partition_day = ? ORDER BY send_id", [DAY]).df()
    assert len(files) == len(plan.batch) == len(sent) == result.queued == 3
    assert sorted(sent["transport_ref"]) == [str(f) for f in files]
    assert (sent["transport"] == "file").all()
    bodies = dict(query(con, "SELECT send_id, body FROM raw.messages WHERE campaign_id = ?", [CAMPAIGN]))
    for row in sent.itertuples():
        assert row.body_sha256 == hashlib.sha256(bodies[row.send_id].encode("utf-8")).hexdigest()
        email = message_from_bytes(Path(row.transport_ref).read_bytes(), policy=policy.default)
        assert email["To"] == row.to_email
        assert email["X-Factory-Send-Id"] == row.send_id
        assert Path(row.transport_ref).parent.name == DAY.isoformat()
    assert pending_messages(con, DAY, CAMPAIGN).empty
    assert query(con, "SELECT DISTINCT state FROM raw.outbox") == [("sent",)]

    # Running the stage again (a retried run) writes no new file, changes none and adds no send.
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = run_sends(con, SPEC, run_for(DAY), _file_setup(tmp_path / "outbox"))
    assert again.queued == 0 and count(con, "sends", "partition_day = ?", [DAY]) == 3
    assert sorted((tmp_path / "outbox").rglob("*.eml")) == files
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    assert not list((tmp_path / "outbox").rglob(".*.tmp"))


def test_a_held_send_stage_writes_nothing(con, tmp_path: Path) -> None:
    set_kill_switch(con, True, "ops", "maintenance")
    add_message(con, LEADS[0], DAY)
    result = run_sends(con, SPEC, run_for(DAY), _file_setup(tmp_path / "outbox"))
    assert result.queued == 0 and "maintenance" in result.plan.hold_reason
    assert count(con, "sends") == 0
    assert not (tmp_path / "outbox").exists()


# --- drafting work list ------------------------------------------------------------------------


HOOKS = {
    ("scaleup_finance_leaders", "close_speed"): "Your close could end on working day 4.",
    ("operations_heavy", "fewer_errors"): "Inventory accruals are where close errors hide.",
    ("general", "team_time"): "Give the finance team its evenings back at month-end.",
}


@pytest.fixture
def drafting_day(con) -> dict[str, dict]:
    """Three assigned leads on DAY with a plan for their (segment, angle); one of them already sent."""
    anna, juergen, siobhan = LEADS[:3]
    add_leads(con, LEADS[:3])
    for (segment, angle), hook in HOOKS.items():
        add_plan(con, segment, angle, hook, DAY)
        add_plan(con, segment, angle, f"yesterday's hook for {segment}", YESTERDAY)
    add_assignment(con, anna, DAY, "close_speed")
    add_assignment(con, juergen, DAY, "fewer_errors", "draft-v2")
    sent = add_message(con, siobhan, DAY, "team_time")  # assigned, drafted, gated and sent
    add_send(con, sent, DAY)
    # A lead assigned on another day is not today's work.
    add_leads(con, LEADS[3:4], YESTERDAY)
    add_assignment(con, LEADS[3], YESTERDAY, "close_speed")
    return {"sent": sent}


def test_unsent_work_joins_assignment_lead_and_plan_and_skips_sent_leads(con, drafting_day) -> None:
    work = unsent_work(con, DAY, CAMPAIGN)

    anna, juergen, siobhan = LEADS[:3]
    assert sorted(work["lead_id"]) == sorted([anna.lead_id, juergen.lead_id])
    assert siobhan.lead_id not in set(work["lead_id"])
    rows = {r["lead_id"]: r for r in work.to_dict("records")}
    a, j = rows[anna.lead_id], rows[juergen.lead_id]
    assert (a["segment"], a["angle"], a["prompt_version"]) == ("scaleup_finance_leaders", "close_speed", "draft-v1")
    assert (j["segment"], j["angle"], j["prompt_version"]) == ("operations_heavy", "fewer_errors", "draft-v2")
    assert (a["email"], a["first_name"], a["company"], a["role"], a["note"]) == (
        anna.email,
        anna.first_name,
        anna.company,
        anna.role,
        anna.note,
    )
    assert a["hook"] == HOOKS[("scaleup_finance_leaders", "close_speed")]  # today's plan, not yesterday's
    assert list(a["claims"]) == SPEC.angle("close_speed").claims
    assert j["hook"] == HOOKS[("operations_heavy", "fewer_errors")]
    assert work["lead_id"].tolist() == sorted(work["lead_id"])


def test_unsent_work_is_empty_for_another_campaign_or_day(con, drafting_day) -> None:
    assert unsent_work(con, DAY, OTHER_CAMPAIGN).empty
    assert unsent_work(con, TOMORROW, CAMPAIGN).empty


def draft_rows(lead_ids: list[str], day, attempts: tuple[int, ...] = (0,)) -> pd.DataFrame:
    rows = [
        {
            "draft_id": "drf_" + hashlib.sha256(f"{lead_id}|{day}|{attempt}|{i}".encode()).hexdigest()[:20],
            "lead_id": lead_id,
            "arm_id": "close_speed|draft-v1|offline-cheap",
            "candidate_index": i,
            "attempt": attempt,
            "model": "offline-cheap",
            "prompt_version": "draft-v1",
            "llm_call_id": "call_" + hashlib.sha256(f"{lead_id}|{attempt}|{i}".encode()).hexdigest()[:20],
            "subject": "Closing the month in fewer days",
            "body": "Hi,\n\nWould a 20-minute call next week be useful?",
            "parse_error": None,
        }
        for lead_id in lead_ids
        for attempt in attempts
        for i in range(2)
    ]
    return run_for(day).stamp(pd.DataFrame(rows))


def drafts_by_lead(con) -> dict[tuple, int]:
    rows = query(con, "SELECT lead_id, partition_day, attempt, count(*) FROM raw.drafts GROUP BY 1, 2, 3")
    return {(lead, day, attempt): n for lead, day, attempt, n in rows}


def test_clear_unsent_keeps_the_rows_of_sent_leads(con, drafting_day) -> None:
    anna, juergen, siobhan = (lead.lead_id for lead in LEADS[:3])
    insert_rows(con, "drafts", draft_rows([anna, juergen, siobhan], DAY, attempts=(0, 1)))
    insert_rows(con, "drafts", draft_rows([anna], YESTERDAY))

    clear_unsent(con, "drafts", DAY, CAMPAIGN, where="attempt > 0")  # the gate clears repair attempts first
    assert drafts_by_lead(con) == {
        (anna, DAY, 0): 2,
        (juergen, DAY, 0): 2,
        (siobhan, DAY, 0): 2,
        (siobhan, DAY, 1): 2,
        (anna, YESTERDAY, 0): 2,
    }

    clear_unsent(con, "drafts", DAY, CAMPAIGN)
    assert drafts_by_lead(con) == {(siobhan, DAY, 0): 2, (siobhan, DAY, 1): 2, (anna, YESTERDAY, 0): 2}

    clear_unsent(con, "messages", DAY, CAMPAIGN)  # the sent lead's message stays as it went out
    assert query(con, "SELECT send_id FROM raw.messages") == [(drafting_day["sent"]["send_id"],)]


def test_the_contact_gap_setting() -> None:
    assert contact_gap_days({}) == DEFAULT_GAP_DAYS == 14
    assert contact_gap_days({CONTACT_GAP_ENV: " 0 "}) == 0 and contact_gap_days({CONTACT_GAP_ENV: "30"}) == 30
    for bad in ("-1", "two weeks", "400"):
        with pytest.raises(ConfigError, match=CONTACT_GAP_ENV):
            contact_gap_days({CONTACT_GAP_ENV: bad})
