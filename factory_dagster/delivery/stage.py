"""The send stage as a plain function: settle crashed claims, plan, queue, send, say what happened.

The Dagster asset (delivery/assets.py) only calls `run_sends` and turns its result into
metadata; tests call it directly against a real warehouse and a real SMTP server.
`FACTORY_TRANSPORT` picks the transport (delivery/config.py): `file` by default, so `make run`
needs no server; `smtp` sends through the configured server and mailboxes. `FACTORY_REVIEW_REQUIRED`
(review/sendable.py, default off) makes the stage send only messages a person approved.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.controls.incidents import record_incident
from factory_dagster.delivery.config import (
    DEFAULT_PER_MINUTE,
    Mailbox,
    RetryPolicy,
    SmtpSettings,
    UnsubscribeLinks,
    mailboxes_from_env,
    transport_name,
)
from factory_dagster.delivery.contact_gap import CONTACT_GAP_ENV, CONTACT_GAP_LOCK, DEFAULT_GAP_DAYS, contact_gap_days
from factory_dagster.delivery.eml import FileTransport, Transport
from factory_dagster.delivery.errors import TransportUnusable
from factory_dagster.delivery.mailboxes import MailboxPool
from factory_dagster.delivery.outbox import SendPlan, plan_sends
from factory_dagster.delivery.sender import SendJob, SendReport, send_queued
from factory_dagster.delivery.smtp import SmtpTransport
from factory_dagster.delivery.states import QueuedSend, Recovery, enqueue, mailbox_usage, recover_claims, transaction
from factory_dagster.review.sendable import review_required
from factory_dagster.run_context import RunContext
from factory_dagster.warehouse.store import exclusive


@dataclass
class DeliverySetup:
    """The transport and what goes with it: mailboxes, one-click links, retries, and the clock the pacing uses."""

    transport: Transport
    mailboxes: list[Mailbox]
    links: UnsubscribeLinks | None = None
    retry: RetryPolicy = RetryPolicy(retries=0)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    require_review: bool = False  # only messages a person approved go (factory review approve)
    contact_gap_days: int = DEFAULT_GAP_DAYS  # nobody is e-mailed by two campaigns within this many days

    @classmethod
    def from_env(cls, spec: CampaignSpec, outbox: Path, environ: Mapping[str, str] | None = None) -> DeliverySetup:
        """Read FACTORY_TRANSPORT and its settings; raises ConfigError or MissingSecret with a clear message.

        The file transport writes as the spec's sender and adds the https one-click link only when
        FACTORY_UNSUBSCRIBE_BASE_URL is set; SMTP needs the link (and so the secret) and rotates the mailboxes.
        """
        env = os.environ if environ is None else environ
        review, gap = review_required(env), contact_gap_days(env)
        if transport_name(env) == "file":
            sender = Mailbox(spec.sender.email, spec.sender.name, daily_cap=None, per_minute=None)
            links = UnsubscribeLinks.from_env(env, required=False)
            return cls(FileTransport(outbox), [sender], links, require_review=review, contact_gap_days=gap)
        settings = SmtpSettings.from_env(env)
        links = UnsubscribeLinks.from_env(env, required=True)
        default = Mailbox(spec.sender.email, spec.sender.name, daily_cap=None, per_minute=DEFAULT_PER_MINUTE)
        mailboxes = mailboxes_from_env(default, env)
        return cls(SmtpTransport(settings), mailboxes, links, settings.retry, require_review=review, contact_gap_days=gap)


@dataclass
class StageResult:
    plan: SendPlan
    recovery: Recovery
    queued: int
    report: SendReport = field(default_factory=SendReport)


def run_sends(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, run: RunContext, setup: DeliverySetup) -> StageResult:
    """Settle claims a dead run of this campaign left, plan today's sends, queue them (Message-IDs fixed), send, record incidents.

    Raises TransportUnusable (after recording what went and an incident) when the transport cannot send at all.
    """
    actor = f"send stage, run {run.run_id}"
    recovery = recover_claims(con, actor, run, campaign_id=run.campaign_id)
    # Planning and queueing take turns across campaigns (on PostgreSQL their runs go at once): the contact gap reads
    # the other campaigns' queued sends, so a second campaign's plan must see the first's queue, not plan beside it.
    with exclusive(con, CONTACT_GAP_LOCK):
        plan = plan_sends(con, spec, run.partition_day, require_review=setup.require_review, gap_days=setup.contact_gap_days)
        batch = [QueuedSend(m.send_id, m.lead_id, m.message_id, m.to_email) for m in plan.batch.itertuples()]
        with transaction(con):
            queued = enqueue(con, batch, run, setup.transport.name, actor)
    result = StageResult(plan, recovery, queued)
    pool = MailboxPool(setup.mailboxes, mailbox_usage(con, run.partition_day), setup.clock, setup.sleep)
    job = SendJob(
        run=run,
        postal_address=spec.sender.postal_address,
        actor=actor,
        transport=setup.transport,
        pool=pool,
        links=setup.links,
        retry=setup.retry,
        sleep=setup.sleep,
        real_time_date=not setup.transport.idempotent,
    )
    try:
        result.report = send_queued(con, [q.send_id for q in batch], job)
    finally:
        close = getattr(setup.transport, "close", None)
        if close is not None:
            close()
    with transaction(con):
        _record_incidents(con, run, spec, result, setup)
    if result.report.unusable:
        raise TransportUnusable(f"sending through {setup.transport.name} is not possible: {result.report.stopped}")
    return result


def _record_incidents(
    con: duckdb.DuckDBPyConnection, run: RunContext, spec: CampaignSpec, result: StageResult, setup: DeliverySetup
) -> None:
    plan, report, recovery = result.plan, result.report, result.recovery
    if plan.hold_reason:
        record_incident(con, run, "sends_held", "critical", plan.hold_reason)
    elif plan.deferred:
        record_incident(
            con,
            run,
            "send_cap_reached",
            "info",
            f"{plan.deferred} messages deferred to the next day by the daily cap of {spec.limits.daily_send_cap}",
        )
    uncertain = recovery.uncertain + report.uncertain
    if uncertain:
        record_incident(
            con,
            run,
            "sends_uncertain",
            "critical",
            f"{len(uncertain)} sends may or may not have been delivered ({', '.join(uncertain[:5])}"
            f"{', ...' if len(uncertain) > 5 else ''}); they are never sent again by themselves: "
            "list them with `factory outbox uncertain`, settle each with `factory outbox resolve`",
        )
    if report.no_mailbox:
        caps = ", ".join(f"{m.email} {m.daily_cap}" for m in setup.mailboxes if m.daily_cap is not None)
        record_incident(
            con,
            run,
            "mailbox_caps_reached",
            "info",
            f"{len(report.no_mailbox)} sends stay queued for the next day: every mailbox reached its daily cap ({caps})",
        )
    if report.stopped:
        record_incident(
            con,
            run,
            "transport_stopped",
            "critical",
            f"sending through {setup.transport.name} stopped: {report.stopped}; "
            f"{len(report.requeued) + len(report.not_tried)} sends stay queued",
        )
    if plan.held_for_review:
        record_incident(
            con,
            run,
            "messages_held_by_review",
            "info",
            f"{plan.held_for_review} message(s) held by a reviewer wait until released (factory review list)",
        )
    if plan.held_by_contact_gap:
        record_incident(
            con,
            run,
            "contact_gap",
            "info",
            f"{plan.held_by_contact_gap} message(s) wait: another campaign e-mailed their recipients within the last "
            f"{setup.contact_gap_days} days ({CONTACT_GAP_ENV}); each goes once the gap has passed",
        )
    if plan.awaiting_review:
        record_incident(
            con,
            run,
            "messages_awaiting_review",
            "warning",
            f"{plan.awaiting_review} message(s) wait for a person's approval (FACTORY_REVIEW_REQUIRED is on): "
            "factory review list, then factory review approve",
        )
    if report.suppressed:
        record_incident(
            con,
            run,
            "suppressed_at_send",
            "info",
            f"{len(report.suppressed)} queued sends were not sent: their recipients are now suppressed",
        )
