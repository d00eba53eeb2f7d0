"""Dagster wiring of the send stage: `sends` through the transport, and its blocking check."""

from collections.abc import Mapping
from datetime import date
from typing import Any

import dagster as dg
import duckdb

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.controls.incidents import record_incident
from factory_dagster.delivery.eml import FileTransport
from factory_dagster.delivery.outbox import deliver_batch, plan_sends
from factory_dagster.gates.assets import message_audit, messages
from factory_dagster.learning.assets import send_guard
from factory_dagster.market.simulated import SimulatedMarket
from factory_dagster.resources import FactoryResource, LineCheck, check_specs, line_asset, run_checks
from factory_dagster.warehouse.store import fetch_one, insert_rows, transaction


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
    """Accepted messages delivered through the file transport (.eml), at most once each, within the daily cap."""
    spec = factory.spec()
    run = factory.run_context(context, spec)
    with factory.warehouse() as con:
        plan = plan_sends(con, spec, run.partition_day)
        with transaction(con):
            # The rows commit only if every delivery in the batch returned; the transport is idempotent per send_id.
            sent = deliver_batch(plan.batch, spec, run.partition_day, FileTransport(factory.paths.outbox))
            insert_rows(con, "sends", run.stamp(sent, "sent_at"))
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
        todays = con.execute(
            """SELECT s.*, m.body FROM raw.sends s JOIN raw.messages m USING (message_id)
               WHERE s.partition_day = ? AND s.campaign_id = ?""",
            [run.partition_day, spec.campaign_id],
        ).df()
        checks = run_checks(con, spec, run.partition_day, *SEND_CHECKS)
    if plan.hold_reason:
        context.log.error(f"sending held: {plan.hold_reason}")
    if factory.simulate_market:
        # The market answers every send of the day; it remembers what it saw, so this is idempotent.
        SimulatedMarket(factory.paths.market, seed=factory.market_seed).receive(
            todays.rename(columns={"partition_day": "sent_day"})
        )
    return dg.MaterializeResult(
        metadata={
            "sent": len(sent),
            "deferred": plan.deferred,
            "held": plan.hold_reason or "no",
            "sent_today_total": len(todays),
            "outbox": dg.MetadataValue.path(str(factory.paths.outbox / run.partition_day.isoformat())),
        },
        check_results=checks,
    )
