"""Dagster wiring of the improve stage's decision step (the logic is `decisions.run_decision_step`)."""

import dagster as dg
import pandas as pd

from factory_dagster.improve.decisions import StepOutcome, run_decision_step
from factory_dagster.improve.preflight import preflight_promotion
from factory_dagster.improve.versions import current_version
from factory_dagster.resources import FactoryResource, line_asset
from factory_dagster.run_context import utcnow

# The counts it decides on; a key of the dbt build, so the step runs after the day's marts.
ARM_COUNTS = dg.AssetKey(["intermediate", "int_experiment_arm_counts"])


def outcomes_table(outcomes: list[StepOutcome]) -> str:
    """The day's experiments as a markdown table: what the step did with each, and why."""
    if not outcomes:
        return "no approved or running experiments"
    frame = pd.DataFrame(
        {
            "experiment": [o.experiment_id for o in outcomes],
            "kind": [o.kind for o in outcomes],
            "segments": [", ".join(o.segments) for o in outcomes],
            "state": [o.state for o in outcomes],
            "today": [o.action for o in outcomes],
            "loop version": ["" if o.version is None else str(o.version) for o in outcomes],
            "why": [o.detail for o in outcomes],
        }
    )
    return frame.to_markdown(index=False)


@line_asset(group_name="improve", deps=[ARM_COUNTS], kinds={"duckdb"})
def experiment_decisions(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """Starts approved experiments (one per segment and layer), then promotes, retires or rolls back
    running ones on their mature outcomes; a promotion records a new loop version (champion, hook,
    split or routing), and one that changes allocation (a segment split) only after the off-policy
    preflight on the campaign's logged sends passes (its figures are in the `why` column)."""
    spec = factory.spec(context)
    run = factory.run_context(context, spec)
    with factory.warehouse() as con:
        outcomes = run_decision_step(con, spec, run.partition_day, run.run_id, utcnow(), preflight_promotion)
        version = current_version(con, spec)
    for outcome in outcomes:
        context.log.info(f"{outcome.experiment_id} ({outcome.state}): {outcome.action}: {outcome.detail}")
    actions = [o.action for o in outcomes]
    return dg.MaterializeResult(
        metadata={
            "experiments": dg.MetadataValue.md(outcomes_table(outcomes)),
            "started": actions.count("started"),
            "waiting": actions.count("waiting"),
            "promoted": actions.count("promote"),
            "retired": actions.count("retire"),
            "rolled_back": actions.count("roll_back"),
            "loop_version": version.version,
            "champions": dg.MetadataValue.json(dict(version.state.champions)),
            "routing": dg.MetadataValue.json(dict(version.state.routing)),
            "hooks": dg.MetadataValue.json(dict(version.state.hooks)),
            "splits": dg.MetadataValue.json(dict(version.state.splits)),
        }
    )
