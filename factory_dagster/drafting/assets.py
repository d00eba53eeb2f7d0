"""Dagster wiring of the draft stage: N cheap candidates per lead."""

import dagster as dg

from factory_dagster.assignment.assets import assignments
from factory_dagster.controls.incidents import record_incident
from factory_dagster.drafting.draft import draft_candidates
from factory_dagster.drafting.work import clear_unsent, unsent_work
from factory_dagster.gates.checks import stored_rows_check
from factory_dagster.gates.schemas import draft_failures
from factory_dagster.models.ledger import write_ledger
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
    candidates, deferred = draft_candidates(gateway, spec, work, arm_models=True)
    with factory.warehouse() as con:
        with transaction(con):
            clear_unsent(con, "drafts", day, spec.campaign_id)
            insert_rows(con, "drafts", gateway.run.stamp(candidates))
            write_ledger(con, gateway)
            if deferred:
                record_incident(
                    con,
                    gateway.run,
                    "budget_reached",
                    "warning",
                    deferral_detail("drafting", deferred, spec.limits.daily_budget_usd),
                )
        metadata = {
            "leads": len(work),
            "drafts": len(candidates),
            "unparseable": int(candidates.parse_error.notna().sum()) if not candidates.empty else 0,
            "leads_deferred_by_budget": len(deferred),
            **gateway.usage(),
        }
        del work, candidates, gateway  # the check reads the day's drafts back: not two copies of them at once
        checks = run_checks(con, spec, day, *DRAFT_CHECKS)
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


def deferral_detail(stage: str, lead_ids: list[str], budget_usd: float) -> str:
    return f"{stage}: the daily budget of ${budget_usd:.2f} is reached; {len(lead_ids)} leads wait for the next day (first: {', '.join(lead_ids[:5])})"
