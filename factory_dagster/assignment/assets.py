"""Dagster wiring of the assign stage: `assignments` (sticky per lead) and its blocking check."""

import dagster as dg

from factory_dagster.assignment.policy import POLICY_VERSION, allocation_problems, arm_shares, assign_leads, candidate_arms
from factory_dagster.learning.marts import segment_arm_performance
from factory_dagster.planning.assets import SEND_OUTCOMES, campaign_plan
from factory_dagster.resources import FactoryResource, line_asset, line_check, partition_day
from factory_dagster.warehouse.store import fetch_one, insert_rows, replace_partition, transaction


@line_asset(
    group_name="assign",
    deps=["leads", campaign_plan, SEND_OUTCOMES, "suppression_list"],
    kinds={"duckdb"},
)
def assignments(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """Each new, unsuppressed lead of the day gets an arm with a propensity and a reason.

    Assignments are sticky: a lead keeps the arm it was first given, so the decision
    log stays true to what was sent even when a day is re-run after the marts moved.
    """
    spec = factory.spec()
    run = factory.run_context(context, spec)
    with factory.warehouse() as con:
        plan = con.execute(
            "SELECT segment, angle FROM raw.plans WHERE partition_day = ? AND campaign_id = ?",
            [run.partition_day, spec.campaign_id],
        ).df()
        performance = segment_arm_performance(con, spec.campaign_id, run.partition_day)
        todo = con.execute(
            """SELECT l.lead_id, l.segment FROM raw.leads l
               WHERE l.partition_day = ? AND l.campaign_id = ?
                 AND l.lead_id NOT IN (SELECT lead_id FROM raw.assignments WHERE campaign_id = ?)
                 AND l.email NOT IN (SELECT email FROM raw.suppression)
               ORDER BY l.lead_id""",
            [run.partition_day, spec.campaign_id, spec.campaign_id],
        ).df()
        suppressed = fetch_one(
            con,
            "SELECT count(*) FROM raw.leads WHERE partition_day = ? AND email IN (SELECT email FROM raw.suppression)",
            [run.partition_day],
        )[0]
        shares = arm_shares(candidate_arms(plan, spec), performance, spec, run.partition_day)
        new = assign_leads(todo, shares, run.partition_day)
        with transaction(con):
            if not new.empty:
                allocation = run.stamp(shares.assign(policy_version=POLICY_VERSION))
                replace_partition(con, "allocations", run.partition_day, allocation, spec.campaign_id)
                insert_rows(con, "assignments", run.stamp(new.assign(spec_version=spec.spec_version), "assigned_at"))
    return dg.MaterializeResult(
        metadata={
            "assigned": len(new),
            "skipped_suppressed": int(suppressed),
            "arms": dg.MetadataValue.md(shares[["segment", "arm_id", "share", "p_best"]].to_markdown(index=False)),
        }
    )


@line_check(
    asset=assignments,
    description="Allocation sums to 1 per segment, keeps the exploration floor, and assigns no suppressed lead.",
)
def allocation_is_valid(context: dg.AssetCheckExecutionContext, factory: FactoryResource) -> dg.AssetCheckResult:
    spec = factory.spec()
    day = partition_day(context)
    with factory.warehouse(read_only=True) as con:
        shares = con.execute(
            "SELECT segment, arm_id, share FROM raw.allocations WHERE partition_day = ? AND campaign_id = ?",
            [day, spec.campaign_id],
        ).df()
        suppressed = fetch_one(
            con,
            """SELECT count(*) FROM raw.assignments a JOIN raw.leads l USING (lead_id)
               WHERE a.partition_day = ? AND l.email IN (SELECT email FROM raw.suppression WHERE added_at <= a.assigned_at)""",
            [day],
        )[0]
    problems = allocation_problems(shares, spec.allocation.exploration_floor)
    if suppressed:
        problems.append(f"{suppressed} suppressed leads were assigned")
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})
