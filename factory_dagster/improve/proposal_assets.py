"""Dagster wiring of the improve stage's proposals (the logic is `proposals.propose_day`)."""

import dagster as dg

from factory_dagster.improve.proposals import open_proposals_table, propose_day
from factory_dagster.resources import FactoryResource, line_asset

# The dbt relations the proposals read (improve/evidence.py, the splits' known send outcomes, the routing canaries),
# so the UI's lineage shows them: not the whole dbt build, whose every key Dagster would look up at each run for the
# provenance of this asset's materialization (33 keys, about 0.13 s a run).
READS = [
    dg.AssetKey(["intermediate", "int_send_outcomes"]),
    dg.AssetKey(["marts", "gate_metrics"]),
    dg.AssetKey(["marts", "gate_violations"]),
    dg.AssetKey(["marts", "model_stage_quality"]),
]


@line_asset(group_name="improve", deps=[*READS, "experiment_decisions"], kinds={"duckdb"})
def experiment_proposals(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """Proposes experiments from the marts (the spec's untested prompt versions, a prompt the premium
    model writes), within the open-experiment limit and never twice, and auto-approves what the
    spec's policy allows; the rest waits for a person (`factory experiments approve|reject`)."""
    spec = factory.spec(context)
    gateway = factory.gateway(context, spec)
    report = propose_day(factory.warehouse, spec, gateway)
    for note in report.notes:
        context.log.info(note)
    return dg.MaterializeResult(
        metadata={
            "proposed": len(report.proposed),
            "auto_approved": len(report.auto_approved),
            "waiting_for_a_person": dg.MetadataValue.json(report.waiting),
            "written_prompt": report.written.template.version if report.written else "none",
            "notes": dg.MetadataValue.json(report.notes),
            "open_experiments": dg.MetadataValue.md(open_proposals_table(report.open_experiments)),
            **gateway.usage(),
        }
    )
