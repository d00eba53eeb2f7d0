"""Dagster wiring of the learn stage: the dbt build, and the anomaly guard after it."""

import json

import dagster as dg
from dagster_dbt import dbt_assets
from dagster_dbt.asset_utils import get_updated_cli_invocation_params_for_context
from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage

from factory_dagster.controls.incidents import record_incident
from factory_dagster.controls.kill_switch import kill_switch_state, set_kill_switch
from factory_dagster.learning.dbt_project import INTEGRITY_TAG, FactoryDbtTranslator, ensure_manifest, prior_day_specs
from factory_dagster.learning.dbt_runner import invoke
from factory_dagster.learning.marts import halt_reason
from factory_dagster.partitions import DAILY, ONE_DAY_PER_RUN
from factory_dagster.resources import POOL, FactoryResource, line_asset

MANIFEST = ensure_manifest()
MANIFEST_JSON = json.loads(MANIFEST.read_text())
TRANSLATOR = FactoryDbtTranslator()
ANOMALIES = dg.AssetKey(["marts", "anomalies"])
PRIOR_DAYS = prior_day_specs(MANIFEST_JSON)


# One day per run, like every other stage of the line: the days build on each other.
@dbt_assets(
    manifest=MANIFEST,
    dagster_dbt_translator=TRANSLATOR,
    exclude=f"tag:{INTEGRITY_TAG}",
    partitions_def=DAILY,
    backfill_policy=ONE_DAY_PER_RUN,
    pool=POOL,
)
def dbt_marts(context: dg.AssetExecutionContext, factory: FactoryResource):
    """`dbt build`, in this process: staging → intermediate → marts, with the dbt tests as checks."""
    selection = get_updated_cli_invocation_params_for_context(context, MANIFEST_JSON, TRANSLATOR)
    indirect = ["--indirect-selection", selection.indirect_selection] if selection.indirect_selection else []
    run = invoke(["build", *selection.selection_args, *indirect], factory.paths.warehouse, factory.paths.home / "dbt_target")
    for event in run.results:
        yield from DbtCoreCliEventMessage(raw_event=event, event_history_metadata={}).to_default_asset_events(
            manifest=MANIFEST_JSON, dagster_dbt_translator=TRANSLATOR, context=context
        )
    if not run.success:
        raise dg.Failure(description=f"dbt build failed: {run.describe_failure()}")


@line_asset(group_name="learn", deps=[ANOMALIES], kinds={"duckdb"})
def send_guard(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """Engages the kill switch when `marts.anomalies` flags a complaint or bounce spike for the day."""
    spec = factory.spec()
    run = factory.run_context(context, spec)
    with factory.warehouse() as con:
        reason = halt_reason(con, spec.campaign_id, run.partition_day)
        state = kill_switch_state(con)
        if reason and not state.engaged:
            state = set_kill_switch(con, True, "anomaly_guard", reason)
            record_incident(con, run, "kill_switch_engaged", "critical", reason)
            context.log.error(f"kill switch engaged: {reason}")
    return dg.MaterializeResult(
        metadata={"kill_switch": "engaged" if state.engaged else "off", "reason": state.reason, "anomaly": reason or "none"}
    )
