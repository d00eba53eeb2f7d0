"""Dagster wiring of the intake stage: the `leads` asset and its blocking checks."""

import dagster as dg

from factory_dagster.gates.checks import stored_rows_check
from factory_dagster.intake.importer import import_lead_files
from factory_dagster.intake.validation import lead_schema_failures
from factory_dagster.resources import FactoryResource, line_asset, line_check, partition_day
from factory_dagster.warehouse.store import fetch_one


@line_asset(group_name="intake", kinds={"duckdb", "pandera"})
def leads(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """New lead files from the inbox, validated: good rows to `raw.leads`, bad rows to `raw.leads_quarantine`."""
    spec = factory.spec()
    run = factory.run_context(context, spec)
    with factory.warehouse() as con:
        summary = import_lead_files(con, factory.paths.leads_inbox, spec, run)
    for path, error in summary.rejected_files.items():
        context.log.warning(f"rejected lead file {path}: {error}")
    return dg.MaterializeResult(
        metadata={
            "files_imported": len(summary.files),
            "files_rejected": len(summary.rejected_files),
            "rows_in": summary.rows,
            "accepted": summary.accepted,
            "quarantined": summary.quarantined,
            "inbox": dg.MetadataValue.path(str(factory.paths.leads_inbox)),
        }
    )


@line_check(asset=leads, description="Accepted leads of the day pass the Pandera lead schema.")
def leads_match_schema(context: dg.AssetCheckExecutionContext, factory: FactoryResource) -> dg.AssetCheckResult:
    return stored_rows_check(context, factory, "leads", lambda frame, _spec: lead_schema_failures(frame))


@line_check(
    asset=leads,
    description="Every input row is accepted or quarantined, and the bad-row share stays under the spec's ceiling.",
)
def leads_accounted_for(context: dg.AssetCheckExecutionContext, factory: FactoryResource) -> dg.AssetCheckResult:
    ceiling = factory.spec().limits.max_quarantine_ratio
    day = partition_day(context)
    with factory.warehouse() as con:
        total, accepted, quarantined = fetch_one(
            con,
            """SELECT (SELECT coalesce(sum(rows_total), 0) FROM raw.intake_files
                       WHERE kind = 'leads' AND status = 'imported' AND partition_day = $day),
                      (SELECT count(*) FROM raw.leads WHERE partition_day = $day),
                      (SELECT count(*) FROM raw.leads_quarantine WHERE partition_day = $day)""",
            {"day": day},
        )
    ratio = quarantined / total if total else 0.0
    return dg.AssetCheckResult(
        passed=total == accepted + quarantined and ratio <= ceiling,
        metadata={
            "rows_in": int(total),
            "accepted": accepted,
            "quarantined": quarantined,
            "quarantine_ratio": ratio,
            "ceiling": ceiling,
        },
    )
