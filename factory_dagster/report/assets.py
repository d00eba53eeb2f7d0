"""Dagster wiring of the report: the `loop_report` asset and its job (the logic is `write.write_report`).

Not partitioned and not in the daily line on purpose: drawing six PNGs costs a few seconds, which
the line's day (already over its time goal) should not pay; the report is written when someone
asks for it (the demo's end, the UI's Materialize button, `factory report`). Its deps are the
marts and raw tables it reads, so the UI shows its lineage and when it is older than them.
"""

from pathlib import Path

import dagster as dg

from factory_dagster.report.cli import default_out_dir
from factory_dagster.resources import POOL, FactoryResource

REPORT_JOB = "report"

# What the report reads (dbt keys are schema/model; the raw tables through the assets that write them).
READS = [
    dg.AssetKey(["marts", "daily_kpis"]),
    dg.AssetKey(["marts", "experiment_results"]),
    dg.AssetKey(["marts", "llm_costs"]),
    dg.AssetKey(["marts", "model_stage_quality"]),
    dg.AssetKey(["marts", "gate_metrics"]),
    dg.AssetKey(["marts", "gate_violations"]),
    dg.AssetKey(["intermediate", "int_send_outcomes"]),
    dg.AssetKey("assignments"),
    dg.AssetKey("experiment_decisions"),
]


def _number(value: object) -> float | int | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


@dg.asset(group_name="report", deps=READS, pool=POOL, kinds={"duckdb", "html"})
def loop_report(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """The loop in pictures: daily funnel, loop vs holdout, traffic per arm, experiment posteriors, cost per
    positive reply, gate catch rates; a static HTML page with PNGs in the data folder's reports/."""
    paths = factory.paths
    # Here, not at the top: every process that loads the code location (the webserver, the daemon, each run) would
    # otherwise load matplotlib, about 0.3 s, for a report only this asset draws.
    from factory_dagster.report.write import write_report

    result = write_report(paths.warehouse, default_out_dir(paths), url=paths.warehouse_url)
    context.log.info(f"report written: {result.index}")
    figures = result.figures
    numbers = {
        name: dg.MetadataValue.float(float(value)) if isinstance(value, float) else dg.MetadataValue.int(int(value))
        for name in (
            "sends",
            "positive_replies",
            "positive_reply_rate",
            "cost_per_positive_reply_usd",
            "loop_lift",
            "experiments_running",
        )
        if (value := _number(figures.get(name))) is not None
    }
    return dg.MaterializeResult(
        metadata={
            "key_figures": dg.MetadataValue.md(result.markdown),
            "index": dg.MetadataValue.path(str(result.index)),
            "images": len(result.images),
            **numbers,
        }
    )


# The job that writes the report alone, in this process (for definitions.py's jobs).
loop_report_job = dg.define_asset_job(
    REPORT_JOB,
    selection=dg.AssetSelection.assets(loop_report),
    executor_def=dg.in_process_executor,
    description="Write the loop's report (static HTML + PNGs) from the warehouse.",
)


def run_report_job(defs: dg.Definitions, instance: dg.DagsterInstance, run_config: dict | None = None) -> Path | None:
    """Materialize `loop_report` through the code location (so the UI shows its figures); the page's path,
    or None when the run failed (the run's events in the instance say why). `run_config` e.g. quiets its logs."""
    result = defs.resolve_job_def(REPORT_JOB).execute_in_process(
        instance=instance, raise_on_error=False, run_config=run_config or {}
    )
    if not result.success:
        return None
    materialization = result.asset_materializations_for_node("loop_report")[-1]
    return Path(materialization.metadata["index"].path)
