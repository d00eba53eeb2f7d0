"""Dagster wiring of the intake stage: the `leads` asset and its blocking checks."""

from collections.abc import Mapping
from datetime import date
from typing import Any

import dagster as dg
import duckdb

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.gates.checks import stored_rows_check
from factory_dagster.intake.importer import import_lead_files
from factory_dagster.intake.validation import lead_schema_failures
from factory_dagster.resources import FactoryResource, LineCheck, check_specs, line_asset, run_checks
from factory_dagster.warehouse.store import fetch_one


def _leads_accounted_for(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date) -> tuple[bool, Mapping[str, Any]]:
    ceiling = spec.limits.max_quarantine_ratio
    total, accepted, quarantined = fetch_one(
        con,
        """SELECT (SELECT coalesce(sum(rows_total), 0) FROM raw.intake_files
                   WHERE kind = 'leads' AND status = 'imported' AND partition_day = $day AND campaign_id = $campaign),
                  (SELECT count(*) FROM raw.leads WHERE partition_day = $day AND campaign_id = $campaign),
                  (SELECT count(*) FROM raw.leads_quarantine WHERE partition_day = $day AND campaign_id = $campaign)""",
        {"day": day, "campaign": spec.campaign_id},
    )
    ratio = quarantined / total if total else 0.0
    return total == accepted + quarantined and ratio <= ceiling, {
        "rows_in": int(total),
        "accepted": accepted,
        "quarantined": quarantined,
        "quarantine_ratio": ratio,
        "ceiling": ceiling,
    }


LEAD_CHECKS = (
    LineCheck(
        "leads_match_schema",
        "Accepted leads of the day pass the Pandera lead schema.",
        lambda con, spec, day: stored_rows_check(con, spec, day, "leads", lambda frame, _spec: lead_schema_failures(frame)),
    ),
    LineCheck(
        "leads_accounted_for",
        "Every input row is accepted or quarantined, and the bad-row share stays under the spec's ceiling.",
        _leads_accounted_for,
    ),
)


@line_asset(group_name="intake", kinds={"duckdb", "pandera"}, check_specs=check_specs("leads", *LEAD_CHECKS))
def leads(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """New lead files from the inbox, validated: good rows to `raw.leads`, bad rows to `raw.leads_quarantine`."""
    spec = factory.spec(context)
    run = factory.run_context(context, spec)
    with factory.warehouse() as con:
        summary = import_lead_files(con, factory.lead_inboxes(context), spec, run)
        checks = run_checks(con, spec, run.partition_day, *LEAD_CHECKS)
    for path, error in summary.rejected_files.items():
        context.log.warning(f"rejected lead file {path}: {error}")
    return dg.MaterializeResult(
        metadata={
            "files_imported": len(summary.files),
            "files_rejected": len(summary.rejected_files),
            "rows_in": summary.rows,
            "accepted": summary.accepted,
            "quarantined": summary.quarantined,
            "inbox": dg.MetadataValue.path(str(factory.lead_inboxes(context)[0])),
        },
        check_results=checks,
    )
