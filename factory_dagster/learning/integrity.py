"""The weekly warehouse-integrity job: the dbt tests that the daily build skips.

They repeat constraints that raw's DDL enforces on every insert (primary keys, NOT NULL),
so running them daily would only cost time. Weekly, they catch a warehouse whose tables
were created or altered outside the line's contracts (a restored copy, a manual fix).
"""

from datetime import UTC, datetime

import dagster as dg

from factory_dagster.controls.incidents import record_incident
from factory_dagster.learning.dbt_project import INTEGRITY_TAG
from factory_dagster.learning.dbt_runner import invoke
from factory_dagster.resources import POOL, FactoryResource
from factory_dagster.run_context import RunContext


@dg.op(pool=POOL)
def integrity_tests(context: dg.OpExecutionContext, factory: FactoryResource) -> None:
    """The `integrity` tests (and the staging views they read); a failure raises an incident and fails the run."""
    run = invoke(
        ["build", "--select", f"+tag:{INTEGRITY_TAG}", "--indirect-selection", "empty"],
        factory.paths.warehouse,
        factory.paths.home / "dbt_target",
        warehouse_url=factory.paths.warehouse_url,
    )
    context.log.info(f"{len(run.results)} integrity tests ran")
    if run.success:
        return
    detail = run.describe_failure()
    with factory.warehouse() as con:
        incident_run = RunContext(context.run_id, datetime.now(UTC).date(), factory.spec().campaign_id)
        record_incident(con, incident_run, "warehouse_integrity_failed", "error", detail)
    raise dg.Failure(description=f"warehouse integrity tests failed: {detail}")


@dg.job(description="Weekly: the dbt tests that repeat raw's own constraints (tag `integrity`), skipped by the daily build.")
def warehouse_integrity():
    integrity_tests()


weekly_integrity = dg.ScheduleDefinition(job=warehouse_integrity, cron_schedule="0 5 * * 0", execution_timezone="UTC")
