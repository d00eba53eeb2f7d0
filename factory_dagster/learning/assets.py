"""Dagster wiring of the learn stage: the dbt build, and the anomaly guard after it."""

import json
import os

import dagster as dg
from dagster_dbt import DbtCliResource, dbt_assets

from factory_dagster.controls.incidents import record_incident
from factory_dagster.controls.kill_switch import kill_switch_state, set_kill_switch
from factory_dagster.learning.dbt_project import FactoryDbtTranslator, ensure_manifest, prior_day_specs
from factory_dagster.learning.marts import halt_reason
from factory_dagster.partitions import DAILY, ONE_DAY_PER_RUN
from factory_dagster.resources import POOL, FactoryResource, line_asset

MANIFEST = ensure_manifest()
ANOMALIES = dg.AssetKey(["marts", "anomalies"])
PRIOR_DAYS = prior_day_specs(json.loads(MANIFEST.read_text()))


# One day per run, like every other stage of the line: the days build on each other.
@dbt_assets(
    manifest=MANIFEST,
    dagster_dbt_translator=FactoryDbtTranslator(),
    partitions_def=DAILY,
    backfill_policy=ONE_DAY_PER_RUN,
    pool=POOL,
)
def dbt_marts(context: dg.AssetExecutionContext, dbt: DbtCliResource, factory: FactoryResource):
    """`dbt build`: staging → intermediate → marts over the warehouse, with the dbt tests as checks."""
    # The profile reads the warehouse path from the environment; the dbt subprocess
    # inherits it when it starts, after which this process's environment is restored.
    previous = os.environ.get("FACTORY_WAREHOUSE")
    os.environ["FACTORY_WAREHOUSE"] = str(factory.paths.warehouse)
    try:
        invocation = dbt.cli(["build"], context=context, target_path=factory.paths.home / "dbt_target")
    finally:
        if previous is None:
            os.environ.pop("FACTORY_WAREHOUSE")
        else:
            os.environ["FACTORY_WAREHOUSE"] = previous
    yield from invocation.stream()


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
