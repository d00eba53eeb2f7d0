"""Sending queued sends: pick a mailbox, check suppression, claim, hand over, record the outcome.

For a transport that is not idempotent (SMTP) every message is its own round: its claim is
committed before the transport is called and its outcome right after, so a crash leaves at most
the one message in flight `uncertain`. An idempotent transport (the `.eml` files) goes in one
round for the whole batch (one claim commit, one outcome commit), since a claim it leaves behind
is simply handed over again: that keeps the default line as fast as before.

Temporary failures are retried here with bounded exponential backoff; the transport says which
failures are safe to retry (delivery/errors.py). The sender never imports pandas, the spec or
Dagster: the crash test starts it as a fresh process many times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from factory_dagster.delivery.config import Mailbox, RetryPolicy, UnsubscribeLinks
from factory_dagster.delivery.eml import OutgoingMessage, Transport
from factory_dagster.delivery.errors import Bounce, OutcomeUnknown, TemporaryFailure, TransportUnusable
from factory_dagster.delivery.mailboxes import MailboxPool
from factory_dagster.delivery.states import (
    Change,
    RunLike,
    move,
    record_bounces,
    record_sends,
    transaction,
    utcnow,
)
from factory_dagster.review.sendable import effective_messages
from factory_dagster.warehouse.dialect import is_postgres
from factory_dagster.warehouse.suppressed import suppressed_sql


@dataclass(frozen=True)
class Outcome:
    """How one hand-over ended: sent, bounced, temporary, unknown or unusable (see delivery/errors.py)."""

    kind: str
    detail: str
    attempts: int
    connection: bool = False


@dataclass
class SendJob:
    """Everything the sender needs besides the warehouse."""

    run: RunLike
    postal_address: str
    actor: str
    transport: Transport
    pool: MailboxPool
    links: UnsubscribeLinks | None = None
    retry: RetryPolicy = RetryPolicy(retries=0)
    sleep: Callable[[float], None] = time.sleep
    real_time_date: bool = False  # the Date header from the clock (SMTP) instead of the send day (files)


@dataclass
class SendReport:
    sent: list[str] = field(default_factory=list)
    bounced: list[str] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)  # temporary failures: they go with a later run
    suppressed: list[str] = field(default_factory=list)
    no_mailbox: list[str] = field(default_factory=list)  # every mailbox at its daily cap: they stay queued
    missing_message: list[str] = field(default_factory=list)  # no stored message (being redrafted): they stay queued
    not_tried: list[str] = field(default_factory=list)  # the batch stopped before them: they stay queued
    retries: int = 0
    stopped: str | None = None  # why the batch stopped early (server unreachable, transport unusable)
    unusable: bool = False


def hand_over(transport: Transport, msg: OutgoingMessage, retry: RetryPolicy, sleep: Callable[[float], None]) -> Outcome:
    """Deliver with retries of temporary failures; never raises for a delivery problem."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return Outcome("sent", transport.deliver(msg), attempt)
        except TemporaryFailure as exc:
            if attempt > retry.retries:
                return Outcome("temporary", str(exc), attempt, exc.connection)
            sleep(retry.delay(attempt))
        except Bounce as exc:
            return Outcome("bounced", str(exc), attempt)
        except OutcomeUnknown as exc:
            return Outcome("unknown", str(exc), attempt)
        except TransportUnusable as exc:
            return Outcome("unusable", str(exc), attempt)
        except Exception as exc:  # a transport bug: only an idempotent transport may take it for "nothing happened"
            kind = "unusable" if transport.idempotent else "unknown"
            return Outcome(kind, f"{type(exc).__name__}: {exc}", attempt)


@dataclass(frozen=True)
class _Queued:
    send_id: str
    header_message_id: str
    message_id: str | None
    to_email: str | None
    subject: str | None
    body: str | None
    suppressed: bool | None


def _queued_messages(con: duckdb.DuckDBPyConnection, send_ids: Sequence[str]) -> list[_Queued]:
    """The given sends that are still queued, in the given order, with their stored message (None if it is gone;
    its text as a reviewer last edited it, review/sendable.py) and whether the recipient is suppressed now.

    This is the check right before a send goes: the claim that follows commits on this same warehouse state,
    because no other process writes while the sender holds the warehouse.
    """
    rows = con.execute(
        f"""SELECT o.send_id, o.header_message_id, m.message_id, m.to_email, m.subject, m.body,
                   {suppressed_sql("m.to_email")} AS suppressed
            FROM raw.outbox o LEFT JOIN {effective_messages(is_postgres(con))} m USING (send_id)
            WHERE o.state = 'queued' AND o.send_id IN (SELECT unnest($ids::VARCHAR[]))""",
        {"ids": list(send_ids)},
    ).fetchall()
    found = {r[0]: _Queued(*r) for r in rows}
    return [found[s] for s in send_ids if s in found]


def send_queued(con: duckdb.DuckDBPyConnection, send_ids: Sequence[str], job: SendJob) -> SendReport:
    """Send the given queued sends in order; what is not sent stays queued (or is recorded as failed/uncertain).

    Sends not in the queue (already sent, failed, uncertain) are left alone. When the transport cannot send
    at all the report says so (`unusable`, `stopped`) after everything is recorded; the caller fails loudly.
    """
    report = SendReport()
    size = len(send_ids) if job.transport.idempotent else 1
    todo = list(send_ids)
    while todo:
        part, todo = todo[:size], todo[size:]
        no_mailbox = _round(con, part, job, report)
        if no_mailbox:
            report.no_mailbox.extend(no_mailbox + todo)
            break
        if report.stopped is not None:
            report.not_tried.extend(todo)
            break
    return report


def _round(con: duckdb.DuckDBPyConnection, send_ids: list[str], job: SendJob, report: SendReport) -> list[str]:
    """One claim commit, the hand-overs, one outcome commit; returns the sends no mailbox could take."""
    queued = _queued_messages(con, send_ids)
    report.missing_message.extend(r.send_id for r in queued if r.body is None)
    # Suppression is checked again right before a send goes (see _queued_messages).
    suppressed = [r for r in queued if r.body is not None and r.suppressed]
    ready = [r for r in queued if r.body is not None and not r.suppressed]
    claims: list[tuple[_Queued, Mailbox]] = []
    no_mailbox: list[str] = []
    for index, row in enumerate(ready):
        mailbox = job.pool.acquire()  # waits for the mailbox's pace
        if mailbox is None:
            no_mailbox = [r.send_id for r in ready[index:]]
            break
        claims.append((row, mailbox))
    with transaction(con):
        move(
            con,
            "failed",
            [Change(r.send_id, "recipient suppressed before it was sent", error="suppressed") for r in suppressed],
            from_state="queued",
            actor=job.actor,
            run=job.run,
        )
        move(
            con,
            "claimed",
            [
                Change(r.send_id, f"handing over to {job.transport.name}", mailbox=m.email, message_id=r.message_id)
                for r, m in claims
            ],
            from_state="queued",
            actor=job.actor,
            run=job.run,
            transport=job.transport.name,
        )
    report.suppressed.extend(r.send_id for r in suppressed)
    outcomes: list[tuple[_Queued, Mailbox, Outcome]] = []
    for row, mailbox in claims:
        if report.stopped is not None:
            outcomes.append((row, mailbox, Outcome("not_tried", f"not tried: {report.stopped}", 0)))
            continue
        outcome = hand_over(job.transport, _outgoing(row, mailbox, job), job.retry, job.sleep)
        report.retries += outcome.attempts - 1
        if outcome.kind == "unusable":
            report.stopped, report.unusable = outcome.detail, True
        elif outcome.kind == "temporary" and outcome.connection:
            report.stopped = f"{outcome.detail} (after {outcome.attempts} attempts)"
        outcomes.append((row, mailbox, outcome))
    _record(con, outcomes, job, report)
    return no_mailbox


def _outgoing(row: _Queued, mailbox: Mailbox, job: SendJob) -> OutgoingMessage:
    return OutgoingMessage(
        send_id=row.send_id,
        day=job.run.partition_day,
        from_name=mailbox.name,
        from_email=mailbox.email,
        to_email=row.to_email,
        subject=row.subject,
        body=row.body,
        postal_address=job.postal_address,
        message_id=row.header_message_id,
        unsubscribe_url=job.links.url_for(row.send_id, row.to_email) if job.links else None,
        sent_at=datetime.now(UTC) if job.real_time_date else None,
    )


def _record(
    con: duckdb.DuckDBPyConnection, outcomes: list[tuple[_Queued, Mailbox, Outcome]], job: SendJob, report: SendReport
) -> None:
    """Commit every outcome of the round at once: send rows, bounce events and the outbox moves."""
    by_kind: dict[str, list[tuple[_Queued, Mailbox, Outcome]]] = {}
    for item in outcomes:
        by_kind.setdefault(item[2].kind, []).append(item)
    sent, bounced = by_kind.get("sent", []), by_kind.get("bounced", [])
    requeue = by_kind.get("temporary", []) + by_kind.get("unusable", []) + by_kind.get("not_tried", [])
    unknown = by_kind.get("unknown", [])
    for _, mailbox, _ in requeue:
        job.pool.give_back(mailbox)
    transport = job.transport.name
    with transaction(con):
        record_sends(
            con,
            [(r.send_id, o.detail, "sent") for r, _, o in sent]
            + [(r.send_id, f"bounced: {o.detail}", "bounced") for r, _, o in bounced],
            day=job.run.partition_day,
            run_id=job.run.run_id,
            transport=transport,
            sent_at=utcnow(),
        )
        record_bounces(con, [r.send_id for r, _, _ in bounced], job.run, transport)
        common = {"from_state": "claimed", "actor": job.actor, "run": job.run}
        move(con, "sent", [Change(r.send_id, o.detail, attempts=o.attempts) for r, _, o in sent], **common)
        move(
            con,
            "failed",
            [Change(r.send_id, f"bounced: {o.detail}", attempts=o.attempts, error=f"bounced: {o.detail}") for r, _, o in bounced],
            **common,
        )
        move(
            con, "uncertain", [Change(r.send_id, o.detail, attempts=o.attempts, error=o.detail) for r, _, o in unknown], **common
        )
        move(
            con,
            "queued",
            [Change(r.send_id, f"back to the queue: {o.detail}", attempts=o.attempts, error=o.detail) for r, _, o in requeue],
            **common,
        )
    report.sent.extend(r.send_id for r, _, _ in sent)
    report.bounced.extend(r.send_id for r, _, _ in bounced)
    report.uncertain.extend(r.send_id for r, _, _ in unknown)
    report.requeued.extend(r.send_id for r, _, _ in requeue)
