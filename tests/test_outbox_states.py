"""The crash-safe outbox's states against a real warehouse: queue, claim, recovery, a person's resolution, the CLI,
the file transport through the outbox, and the mailbox pool's pacing and caps on a fake clock."""

from __future__ import annotations

import argparse
import threading
from datetime import timedelta
from email.policy import SMTP
from pathlib import Path

import pytest
from helpers_db import CAMPAIGN, DAY, LEADS, OTHER_CAMPAIGN, SPEC, add_message, query, run_for
from postgres_server import wait_until_a_session_waits

from factory_dagster.delivery.cli import register
from factory_dagster.delivery.config import Mailbox
from factory_dagster.delivery.contact_gap import CONTACT_GAP_LOCK
from factory_dagster.delivery.eml import FileTransport, OutgoingMessage, build_email
from factory_dagster.delivery.mailboxes import MailboxPool, MailboxUsage
from factory_dagster.delivery.outbox import pending_messages, plan_sends
from factory_dagster.delivery.stage import DeliverySetup, run_sends
from factory_dagster.delivery.states import (
    Change,
    OutboxError,
    QueuedSend,
    enqueue,
    mailbox_usage,
    move,
    recover_claims,
    resolve,
    state_of,
    transaction,
    uncertain_sends,
)
from factory_dagster.settings import Paths
from factory_dagster.warehouse.dialect import insertion_order
from factory_dagster.warehouse.store import connect, exclusive

RUN = run_for(DAY)


@pytest.fixture
def con(engine_con):
    """The warehouse, once on DuckDB and once on PostgreSQL (tests/warehouse_engines.py)."""
    return engine_con


def queued(message: dict) -> QueuedSend:
    return QueuedSend(message["send_id"], message["lead_id"], message["message_id"], message["to_email"])


def queue(con, messages: list[dict], transport: str = "smtp") -> None:
    with transaction(con):
        enqueue(con, [queued(m) for m in messages], RUN, transport, "test")


def claim(con, messages: list[dict], transport: str = "smtp", mailbox: str = "maya@brightwave-ledger.example") -> None:
    with transaction(con):
        move(
            con,
            "claimed",
            [Change(m["send_id"], "test claim", mailbox=mailbox, message_id=m["message_id"]) for m in messages],
            from_state="queued",
            actor="test",
            run=RUN,
            transport=transport,
        )


def moves(con, send_id: str) -> list[tuple]:
    return query(
        con,
        "SELECT from_state, to_state, actor FROM raw.outbox_transitions WHERE send_id = ? "
        f"ORDER BY occurred_at, {insertion_order(con).format('')}",
        [send_id],
    )


def test_queueing_fixes_the_message_id_once(con) -> None:
    message = add_message(con, LEADS[0], DAY)
    queue(con, [message])
    queue(con, [message])  # queued again by a re-run: the row and its Message-ID stay

    rows = query(con, "SELECT state, header_message_id, attempts, transport, partition_day FROM raw.outbox")
    assert rows == [("queued", f"<{message['send_id']}@factory.invalid>", 0, "smtp", DAY)]
    assert moves(con, message["send_id"]) == [(None, "queued", "test")]


def test_only_legal_moves_are_made_and_a_refused_one_changes_nothing(con) -> None:
    first, second = (add_message(con, lead, DAY) for lead in LEADS[:2])
    queue(con, [first, second])
    claim(con, [first])

    with pytest.raises(OutboxError, match=rf"{first['send_id']} \(claimed\).*only sends that are queued"):
        claim(con, [second, first])
    with pytest.raises(OutboxError, match="snd_nope \\(not in the outbox\\)"):
        with transaction(con):
            move(con, "sent", [Change("snd_nope", "x")], from_state="claimed", actor="test")
    assert {s: state_of(con, s) for s in (first["send_id"], second["send_id"])} == {
        first["send_id"]: "claimed",
        second["send_id"]: "queued",
    }
    with pytest.raises(ValueError, match="unknown outbox state"):
        move(con, "delivered", [Change(first["send_id"], "x")], from_state="claimed", actor="test")


def test_a_dead_runs_smtp_claims_become_uncertain_and_its_file_claims_go_back_to_the_queue(con) -> None:
    by_smtp, by_file, waiting = (add_message(con, lead, DAY) for lead in LEADS[:3])
    queue(con, [by_smtp, by_file, waiting])
    claim(con, [by_smtp])
    claim(con, [by_file], transport="file")

    recovery = recover_claims(con, "send stage, run run-2", run_for(DAY, run_id="run-2"))

    assert recovery.uncertain == [by_smtp["send_id"]] and recovery.requeued == [by_file["send_id"]]
    assert [state_of(con, m["send_id"]) for m in (by_smtp, by_file, waiting)] == ["uncertain", "queued", "queued"]
    reason = query(con, "SELECT reason FROM raw.outbox_transitions WHERE to_state = 'uncertain'")[0][0]
    assert "ended before the smtp server's answer was recorded: it may have been delivered" in reason
    # An uncertain send is not pending: no run sends it again by itself, and it counts against today's cap.
    assert set(pending_messages(con, DAY, CAMPAIGN).send_id) == {by_file["send_id"], waiting["send_id"]}
    capped = SPEC.model_copy(update={"limits": SPEC.limits.model_copy(update={"daily_send_cap": 2})})
    assert len(plan_sends(con, capped, DAY).batch) == 1
    assert recover_claims(con, "again") == type(recovery)(uncertain=[], requeued=[])


def test_a_campaigns_send_stage_settles_its_own_dead_claims_and_leaves_another_campaigns_live_ones(con) -> None:
    """On PostgreSQL another campaign's run may be sending while this one starts: its claims are not this run's to
    settle (the parallel benchmark's runs failed on sends requeued under them)."""
    ours = add_message(con, LEADS[0], DAY)
    theirs = add_message(con, LEADS[1], DAY, campaign_id=OTHER_CAMPAIGN)
    queue(con, [ours])
    with transaction(con):
        enqueue(con, [queued(theirs)], run_for(DAY, campaign_id=OTHER_CAMPAIGN), "smtp", "test")
    claim(con, [ours, theirs])
    recovery = recover_claims(con, "send stage", run_for(DAY, run_id="run-2"), campaign_id=CAMPAIGN)
    assert recovery.uncertain == [ours["send_id"]] and recovery.requeued == []
    assert [state_of(con, m["send_id"]) for m in (ours, theirs)] == ["uncertain", "claimed"]


def test_a_person_resolves_uncertain_sends(con) -> None:
    arrived, lost, retried = (add_message(con, lead, DAY) for lead in LEADS[:3])
    queue(con, [arrived, lost, retried])
    claim(con, [arrived, lost, retried])
    recover_claims(con, "restart")
    assert [r["send_id"] for r in uncertain_sends(con, CAMPAIGN)] == sorted(m["send_id"] for m in (arrived, lost, retried))

    assert resolve(con, arrived["send_id"], "sent", "maya", "in the server log: queued as 4F1ABC") == "sent"
    assert resolve(con, lost["send_id"], "failed", "maya", "server log shows no such message; lead gone cold") == "failed"
    assert resolve(con, retried["send_id"], "retry", "maya", "server log shows it was never accepted") == "queued"

    sends = query(con, "SELECT send_id, partition_day, transport, transport_ref, status FROM raw.sends")
    assert sends == [(arrived["send_id"], DAY, "smtp", "resolved as sent by maya: in the server log: queued as 4F1ABC", "sent")]
    assert moves(con, arrived["send_id"])[-1] == ("uncertain", "sent", "maya")
    assert uncertain_sends(con) == []
    # The failed one never goes; the retried one is pending again and goes with the next run.
    assert set(pending_messages(con, DAY, CAMPAIGN).send_id) == {retried["send_id"]}

    with pytest.raises(OutboxError, match="only sends that are uncertain"):
        resolve(con, arrived["send_id"], "failed", "maya", "changed my mind")
    with pytest.raises(OutboxError, match="needs a reason"):
        resolve(con, retried["send_id"], "sent", "maya", "  ")
    with pytest.raises(OutboxError, match="resolve a send as one of"):
        resolve(con, retried["send_id"], "bounced", "maya", "x")


def test_the_outbox_cli_lists_and_resolves_with_the_actor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = Paths.under(tmp_path)
    with connect(paths.warehouse) as con:
        crashed, other = (add_message(con, lead, DAY) for lead in LEADS[:2])
        queue(con, [crashed, other])
        claim(con, [crashed, other])  # a run died holding these claims

    root = argparse.ArgumentParser(prog="factory")
    register(root.add_subparsers(dest="command", required=True))

    def factory(*argv: str) -> tuple[int, str, str]:
        args = root.parse_args(list(argv))
        code = args.run(args, paths)
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = factory("outbox", "uncertain")
    assert code == 0
    assert "2 sends claimed by a run that ended mid-send are now uncertain" in out
    assert crashed["send_id"] in out and crashed["to_email"] in out and "2 uncertain; settle each with" in out

    code, out, _ = factory(
        "outbox", "resolve", crashed["send_id"], "--as", "retry", "--reason", "never accepted", "--actor", "ann"
    )
    assert (code, out.strip()) == (
        0,
        f"{crashed['send_id']}: queued (queued again: the next run sends it) by ann: never accepted",
    )
    code, _, err = factory("outbox", "resolve", crashed["send_id"], "--as", "sent", "--reason", "twice", "--actor", "ann")
    assert code == 1 and "only sends that are uncertain" in err
    with pytest.raises(SystemExit):
        root.parse_args(["outbox", "resolve", other["send_id"], "--as", "sent"])  # --reason is required
    code, out, _ = factory("outbox", "uncertain")
    assert other["send_id"] in out and crashed["send_id"] not in out

    with connect(paths.warehouse) as con:
        assert moves(con, crashed["send_id"])[-1] == ("uncertain", "queued", "ann")


def test_on_postgresql_the_outbox_cli_leaves_claims_to_their_campaigns_send_stage(
    postgres_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another campaign's run may be sending now: its claims must not turn uncertain (a person could then queue one
    again, and it would go twice)."""
    base = Paths.under(tmp_path)
    paths = Paths(base.home, base.warehouse, base.leads_inbox, base.spec, postgres_dsn)
    with connect(paths.warehouse, url=postgres_dsn) as con:
        in_flight = [add_message(con, lead, DAY) for lead in LEADS[:2]]
        queue(con, in_flight)
        claim(con, in_flight)
    root = argparse.ArgumentParser(prog="factory")
    register(root.add_subparsers(dest="command", required=True))
    args = root.parse_args(["outbox", "uncertain"])
    assert args.run(args, paths) == 0
    out = capsys.readouterr().out
    assert "2 sends are claimed by a send stage" in out and "no uncertain sends" in out
    with connect(paths.warehouse, url=postgres_dsn) as con:
        assert [moves(con, m["send_id"])[-1][1] for m in in_flight] == ["claimed", "claimed"]
    assert not paths.warehouse.exists()


def test_on_postgresql_a_send_stage_plans_only_once_it_holds_the_contact_gap_lock(postgres_dsn: str, tmp_path: Path) -> None:
    """Two campaigns' runs at once: while another campaign's stage holds the lock (here the test), this one waits before
    planning, so it sees what the other queued meanwhile and leaves the shared recipient for after the gap."""
    unused = tmp_path / "unused.duckdb"
    with connect(unused, url=postgres_dsn) as con:
        mine = add_message(con, LEADS[0], DAY)
        theirs = add_message(con, LEADS[0], DAY, campaign_id=OTHER_CAMPAIGN)  # the same person, another campaign
    setup = DeliverySetup(FileTransport(tmp_path / "outbox"), [Mailbox(SPEC.sender.email, SPEC.sender.name, None, None)])
    results = []

    def send() -> None:
        with connect(unused, url=postgres_dsn) as con:
            results.append(run_sends(con, SPEC, RUN, setup))

    with connect(unused, url=postgres_dsn) as other:
        with exclusive(other, CONTACT_GAP_LOCK):
            stage = threading.Thread(target=send)
            stage.start()
            wait_until_a_session_waits(postgres_dsn, stage, "the send stage waits for the lock", 30)
            with transaction(other):
                queued = QueuedSend(theirs["send_id"], theirs["lead_id"], theirs["message_id"], theirs["to_email"])
                enqueue(other, [queued], run_for(DAY, campaign_id=OTHER_CAMPAIGN), "file", "the other campaign's stage")
        stage.join(timeout=60)
    (result,) = results
    assert result.plan.held_by_contact_gap == 1 and result.report.sent == []
    with connect(unused, url=postgres_dsn) as con:
        assert state_of(con, mine["send_id"]) is None  # not queued: it waits for the gap


def test_the_file_transport_goes_through_the_outbox_and_writes_the_same_bytes(con, tmp_path: Path) -> None:
    messages = [add_message(con, lead, DAY) for lead in LEADS[:3]]
    transport = FileTransport(tmp_path / "outbox")
    setup = DeliverySetup(transport, [Mailbox(SPEC.sender.email, SPEC.sender.name, None, None)])

    result = run_sends(con, SPEC, RUN, setup)

    assert sorted(result.report.sent) == sorted(m["send_id"] for m in messages)
    for m in messages:
        path = tmp_path / "outbox" / DAY.isoformat() / f"{m['send_id']}.eml"
        expected = OutgoingMessage(
            m["send_id"],
            DAY,
            SPEC.sender.name,
            SPEC.sender.email,
            m["to_email"],
            m["subject"],
            m["body"],
            SPEC.sender.postal_address,
        )
        assert path.read_bytes() == build_email(expected).as_bytes(policy=SMTP)  # what the reliability check rebuilds
        assert query(con, "SELECT transport, transport_ref, status FROM raw.sends WHERE send_id = ?", [m["send_id"]]) == [
            ("file", str(path), "sent")
        ]
        assert [t for _, t, _ in moves(con, m["send_id"])] == ["queued", "claimed", "sent"]
    # One commit for the whole batch's claims and one for its outcomes.
    claims = query(con, "SELECT count(DISTINCT occurred_at) FROM raw.outbox_transitions WHERE to_state = 'claimed'")
    assert claims == [(1,)]


def test_a_file_run_killed_after_writing_redelivers_nothing_twice(con, tmp_path: Path) -> None:
    """The file transport's claims of a dead run go back to the queue, and the files already written are found."""
    messages = [add_message(con, lead, DAY) for lead in LEADS[:2]]
    queue(con, messages, transport="file")
    claim(con, messages, transport="file")
    written = FileTransport(tmp_path / "outbox").deliver(
        OutgoingMessage(
            messages[0]["send_id"],
            DAY,
            SPEC.sender.name,
            SPEC.sender.email,
            messages[0]["to_email"],
            messages[0]["subject"],
            messages[0]["body"],
            SPEC.sender.postal_address,
        )
    )  # the run wrote one file, then died

    setup = DeliverySetup(FileTransport(tmp_path / "outbox"), [Mailbox(SPEC.sender.email, SPEC.sender.name, None, None)])
    result = run_sends(con, SPEC, run_for(DAY + timedelta(days=1), run_id="run-2"), setup)

    assert result.recovery.requeued == sorted(m["send_id"] for m in messages) and result.recovery.uncertain == []
    assert sorted(result.report.sent) == sorted(m["send_id"] for m in messages)
    assert sorted(p.name for p in (tmp_path / "outbox").rglob("*.eml")) == sorted(f"{m['send_id']}.eml" for m in messages)
    ref = query(con, "SELECT transport_ref FROM raw.sends WHERE send_id = ?", [messages[0]["send_id"]])[0][0]
    assert ref == written  # found where the dead run wrote it, not written again under the new day


# --- the mailbox pool ---------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def test_the_pool_paces_each_mailbox_and_rotates() -> None:
    clock = Clock()
    fast, slow = Mailbox("a@x.example", "A", None, 6), Mailbox("b@x.example", "B", None, 2)  # every 10 s / 30 s
    pool = MailboxPool([fast, slow], clock=clock, sleep=clock.sleep)

    taken = [(pool.acquire().email, clock.now) for _ in range(6)]

    assert taken == [
        ("a@x.example", 1000.0),
        ("b@x.example", 1000.0),
        ("a@x.example", 1010.0),
        ("a@x.example", 1020.0),
        ("b@x.example", 1030.0),  # ready at 1030, same time as a: the one that sent less goes
        ("a@x.example", 1030.0),
    ]
    for email, gap in (("a@x.example", 10), ("b@x.example", 30)):
        times = [t for e, t in taken if e == email]
        assert all(later - earlier >= gap for earlier, later in zip(times, times[1:], strict=False))


def test_the_pool_stops_at_each_daily_cap_and_counts_what_was_given_back() -> None:
    clock = Clock()
    capped, other = Mailbox("a@x.example", "A", 2, None), Mailbox("b@x.example", "B", 1, None)
    pool = MailboxPool([capped, other], {"a@x.example": MailboxUsage(taken=1)}, clock=clock, sleep=clock.sleep)

    first = pool.acquire()
    second = pool.acquire()
    assert {first.email, second.email} == {"a@x.example", "b@x.example"}
    assert pool.acquire() is None and not pool.has_room()
    pool.give_back(second)  # that one went back to the queue: its slot is free again
    assert pool.acquire() == second and clock.waits == []


def test_the_pace_holds_across_a_restart(con) -> None:
    message = add_message(con, LEADS[0], DAY)
    queue(con, [message])
    claim(con, [message])
    usage = mailbox_usage(con, DAY)
    (last,) = [u.last_at for u in usage.values()]
    assert (
        usage["maya@brightwave-ledger.example"].taken == 1
        and mailbox_usage(con, DAY + timedelta(days=1))["maya@brightwave-ledger.example"].taken == 0
    )

    clock = Clock(now=last + 5)
    pool = MailboxPool([Mailbox("maya@brightwave-ledger.example", "Maya", None, 4)], usage, clock=clock, sleep=clock.sleep)
    pool.acquire()
    assert clock.waits == [pytest.approx(10.0, abs=1e-3)]  # 15 s between messages, 5 s of it already gone
