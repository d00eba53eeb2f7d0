"""Dagster wiring of the draft stage: N cheap candidates per lead."""

import dagster as dg

from factory_dagster.assignment.assets import assignments
from factory_dagster.controls.incidents import record_incident
from factory_dagster.drafting.draft import draft_batches
from factory_dagster.drafting.work import clear_unsent, unsent_work
from factory_dagster.gates.checks import stored_rows_check
from factory_dagster.gates.schemas import draft_failures
from factory_dagster.models.ledger import flush_ledger
from factory_dagster.resources import FactoryResource, LineCheck, check_specs, line_asset, run_checks
from factory_dagster.warehouse.store import insert_rows, transaction

DRAFT_CHECKS = (
    LineCheck(
        "drafts_match_schema",
        "The day's stored drafts pass the Pandera draft schema (every answer kept, parsed or explained).",
        lambda con, spec, day: stored_rows_check(con, spec, day, "drafts", draft_failures),
    ),
)


@line_asset(group_name="draft", deps=[assignments], kinds={"duckdb"}, check_specs=check_specs("drafts", *DRAFT_CHECKS))
def drafts(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """Candidate messages from the cheap model for every assigned lead still waiting for a message."""
    spec = factory.spec(context)
    gateway = factory.gateway(context, spec)
    day = gateway.run.partition_day
    with factory.warehouse() as con:
        work = unsent_work(con, day, spec.campaign_id)
        with transaction(con):  # leads no longer to draft today (sent, or settled on another day) keep no drafts
            clear_unsent(
                con,
                "drafts",
                day,
                spec.campaign_id,
                "a.lead_id NOT IN (SELECT unnest($work::VARCHAR[]))",
                {"work": list(work.lead_id)},
            )
    drafted, unparseable, deferred = 0, 0, []
    # Each batch replaces its leads' drafts in its own transaction, its calls and answers with them: a large
    # day never holds all its drafts, and a crash leaves every lead with either its old drafts or its new ones
    # (same ids), and every call made on the ledger. A re-run redoes the day; the cache answers what was paid.
    for batch in draft_batches(gateway, spec, work, arm_models=True):
        with factory.warehouse() as con, transaction(con):
            clear_unsent(
                con, "drafts", day, spec.campaign_id, "a.lead_id IN (SELECT unnest($batch::VARCHAR[]))", {"batch": batch.lead_ids}
            )
            insert_rows(con, "drafts", gateway.run.stamp(batch.drafts))
            flush_ledger(con, gateway)
        drafted += len(batch.drafts)
        unparseable += int(batch.drafts.parse_error.notna().sum()) if not batch.drafts.empty else 0
        deferred += batch.deferred
    with factory.warehouse() as con:
        if deferred:
            with transaction(con):
                record_incident(
                    con,
                    gateway.run,
                    "budget_reached",
                    "warning",
                    deferral_detail("drafting", deferred, spec.limits.daily_budget_usd),
                )
        metadata = {
            "leads": len(work),
            "drafts": drafted,
            "unparseable": unparseable,
            "leads_deferred_by_budget": len(deferred),
            **gateway.usage(),
        }
        del work, gateway
        checks = run_checks(con, spec, day, *DRAFT_CHECKS)
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


def deferral_detail(stage: str, lead_ids: list[str], budget_usd: float) -> str:
    return f"{stage}: the daily budget of ${budget_usd:.2f} is reached; {len(lead_ids)} leads wait for the next day (first: {', '.join(lead_ids[:5])})"
