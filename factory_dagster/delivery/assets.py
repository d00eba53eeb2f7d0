"""Dagster wiring of the send stage: `sends` through the transport, and its blocking check."""

import os
from collections.abc import Mapping
from datetime import date
from typing import Any

import dagster as dg
import duckdb

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.delivery.config import ConfigError
from factory_dagster.delivery.errors import TransportUnusable
from factory_dagster.delivery.stage import DeliverySetup, run_sends
from factory_dagster.delivery.unsubscribe import MissingSecret
from factory_dagster.gates.assets import message_audit, messages
from factory_dagster.learning.assets import send_guard
from factory_dagster.market.simulated import SimulatedMarket
from factory_dagster.resources import FactoryResource, LineCheck, check_specs, line_asset, run_checks
from factory_dagster.review.sendable import effective_messages
from factory_dagster.warehouse.dialect import is_postgres
from factory_dagster.warehouse.store import fetch_one


def _sends_are_safe(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date) -> tuple[bool, Mapping[str, Any]]:
    count, ungated = fetch_one(
        con,
        """SELECT count(*),
                  count(*) FILTER (WHERE s.message_id NOT IN (
                      SELECT m.message_id FROM raw.messages m JOIN raw.gate_results g
                        ON g.draft_id = m.draft_id AND g.passed AND g.selected))
           FROM raw.sends s WHERE s.partition_day = ? AND s.campaign_id = ?""",
        [day, spec.campaign_id],
    )
    return count <= spec.limits.daily_send_cap and ungated == 0, {
        "sends": count,
        "cap": spec.limits.daily_send_cap,
        "sends_without_passing_gate": ungated,
    }


SEND_CHECKS = (
    LineCheck("sends_are_safe", "Today's sends: within the cap, each from a message that passed the gate.", _sends_are_safe),
)


@line_asset(
    group_name="send",
    deps=[messages, message_audit, send_guard, "suppression_list"],
    kinds={"duckdb"},
    check_specs=check_specs("sends", *SEND_CHECKS),
)
def sends(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """Accepted messages through the outbox (queued -> claimed -> sent | failed | uncertain), at most once each,
    within the daily cap: as .eml files, or by SMTP with FACTORY_TRANSPORT=smtp."""
    spec = factory.spec(context)
    run = factory.run_context(context, spec)
    try:
        setup = DeliverySetup.from_env(spec, factory.paths.outbox, os.environ)
    except (ConfigError, MissingSecret) as exc:
        raise dg.Failure(description=f"sending is not configured: {exc}") from exc
    with factory.warehouse() as con:
        try:
            result = run_sends(con, spec, run, setup)
        except TransportUnusable as exc:
            raise dg.Failure(description=str(exc)) from exc
        todays = con.execute(
            f"""SELECT s.*, m.body, a.hook_version, l.industry, l.company_size, l.seniority, l.region
               FROM raw.sends s JOIN {effective_messages(is_postgres(con))} m USING (message_id)
               LEFT JOIN raw.assignments a ON a.campaign_id = s.campaign_id AND a.lead_id = s.lead_id
               LEFT JOIN raw.leads l ON l.campaign_id = s.campaign_id AND l.lead_id = s.lead_id
               WHERE s.partition_day = ? AND s.campaign_id = ? AND s.status IS DISTINCT FROM 'bounced'""",
            [run.partition_day, spec.campaign_id],
        ).df()
        checks = run_checks(con, spec, run.partition_day, *SEND_CHECKS)
    plan, report = result.plan, result.report
    if plan.hold_reason:
        context.log.error(f"sending held: {plan.hold_reason}")
    uncertain = result.recovery.uncertain + report.uncertain
    if uncertain:
        context.log.error(f"{len(uncertain)} sends are uncertain (factory outbox uncertain): {', '.join(uncertain[:5])}")
    if report.stopped:
        context.log.error(f"sending stopped: {report.stopped}")
    if factory.simulate_market:
        # The market answers every send of the day (who the recipient is and what hook they read with it);
        # it remembers what it saw, so this is idempotent.
        SimulatedMarket(factory.paths.market, seed=factory.market_seed).receive(
            todays.rename(columns={"partition_day": "sent_day"})
        )
    metadata: dict[str, Any] = {
        "transport": setup.transport.name,
        "sent": len(report.sent),
        "bounced": len(report.bounced),
        "uncertain": len(uncertain),
        "requeued": len(report.requeued) + len(report.not_tried),
        "waiting_for_a_mailbox": len(report.no_mailbox),
        "suppressed_at_send": len(report.suppressed),
        "retries": report.retries,
        "deferred": plan.deferred,
        "held_by_contact_gap": plan.held_by_contact_gap,
        "held": plan.hold_reason or "no",
        "sent_today_total": len(todays),
    }
    if setup.transport.name == "file":
        metadata["outbox"] = dg.MetadataValue.path(str(factory.paths.outbox / run.partition_day.isoformat()))
    return dg.MaterializeResult(metadata=metadata, check_results=checks)
