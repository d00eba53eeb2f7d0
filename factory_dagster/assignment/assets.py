"""Dagster wiring of the assign stage: `assignments` (sticky per lead, policy loop-v2) and its blocking checks."""

import os
from collections.abc import Mapping
from datetime import date
from typing import Any

import dagster as dg
import duckdb
import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.improve.allocation import allocate, allocation_problems, assign_leads, holdout_problems, split_rules
from factory_dagster.improve.splits import split_performance
from factory_dagster.improve.store import list_experiments
from factory_dagster.improve.versions import current_version
from factory_dagster.learning.marts import segment_arm_performance
from factory_dagster.planning.assets import SEND_OUTCOMES, campaign_plan
from factory_dagster.resources import FactoryResource, LineCheck, check_specs, line_asset, run_checks
from factory_dagster.warehouse.store import fetch_one, insert_rows, replace_partition, transaction
from factory_dagster.warehouse.suppressed import suppressed_sql


def _allocation_is_valid(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date) -> tuple[bool, Mapping[str, Any]]:
    allocation = con.execute(
        "SELECT * FROM raw.allocations WHERE partition_day = ? AND campaign_id = ?", [day, spec.campaign_id]
    ).df()
    assigned = con.execute(
        "SELECT lead_id, holdout, experiment_id, routing_experiment_id FROM raw.assignments WHERE partition_day = ? AND campaign_id = ?",
        [day, spec.campaign_id],
    ).df()
    suppressed = fetch_one(
        con,
        f"""SELECT count(*) FROM raw.assignments a JOIN raw.leads l USING (campaign_id, lead_id)
           WHERE a.partition_day = ? AND a.campaign_id = ? AND {suppressed_sql("l.email", as_of="a.assigned_at")}""",
        [day, spec.campaign_id],
    )[0]
    experiments = {e.experiment_id: e for e in list_experiments(con, spec.campaign_id)}
    problems = allocation_problems(allocation, spec.allocation.exploration_floor, experiments)
    problems += holdout_problems(assigned, spec.campaign_id, spec.improve.holdout_share)
    if suppressed:
        problems.append(f"{suppressed} suppressed leads were assigned")
    return not problems, {"problems": dg.MetadataValue.json(problems), "holdout_leads": int(assigned.holdout.fillna(False).sum())}


ASSIGN_CHECKS = (
    LineCheck(
        "allocation_is_valid",
        "Loop and holdout shares sum to 1 per segment, every angle keeps the exploration floor, experiment traffic "
        "only in running experiments' segments within their share, the holdout is the hash's and of plausible size, "
        "and no suppressed lead is assigned.",
        _allocation_is_valid,
    ),
)


@line_asset(
    group_name="assign",
    deps=["leads", campaign_plan, SEND_OUTCOMES, "suppression_list", "experiment_proposals"],
    kinds={"duckdb"},
    check_specs=check_specs("assignments", *ASSIGN_CHECKS),
)
def assignments(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """Each new, unsuppressed lead of the day gets an arm with a propensity and a reason (policy loop-v2).

    Assignments are sticky: a lead keeps the arm it was first given, so the decision
    log stays true to what was sent even when a day is re-run after the marts moved.
    """
    spec = factory.spec(context)
    run = factory.run_context(context, spec)
    registry = factory.registry()
    with factory.warehouse() as con:
        plan = con.execute(
            "SELECT segment, angle FROM raw.plans WHERE partition_day = ? AND campaign_id = ?",
            [run.partition_day, spec.campaign_id],
        ).df()
        todo = con.execute(
            f"""SELECT l.lead_id, l.segment, l.industry, l.company_size, l.seniority, l.region FROM raw.leads l
               WHERE l.partition_day = ? AND l.campaign_id = ?
                 AND l.lead_id NOT IN (SELECT lead_id FROM raw.assignments WHERE campaign_id = ?)
                 AND NOT {suppressed_sql("l.email")}
               ORDER BY l.lead_id""",
            [run.partition_day, spec.campaign_id, spec.campaign_id],
        ).df()
        suppressed = fetch_one(
            con,
            f"SELECT count(*) FROM raw.leads WHERE partition_day = ? AND campaign_id = ? AND {suppressed_sql('email')}",
            [run.partition_day, spec.campaign_id],
        )[0]
        loop = current_version(con, spec)
        running = list_experiments(con, spec.campaign_id, {"running"})
        allocation = allocate(
            plan,
            segment_arm_performance(con, spec.campaign_id, run.partition_day),
            spec,
            loop.state,
            running,
            run.partition_day,
            lambda name: registry.serving(name, os.environ),
            split_performance(con, spec.campaign_id, run.partition_day, split_rules(loop.state, running)),
        )
        new = assign_leads(todo, allocation, spec, run.partition_day)
        with transaction(con):
            if not new.empty:
                replace_partition(con, "allocations", run.partition_day, run.stamp(allocation), spec.campaign_id)
                insert_rows(con, "assignments", run.stamp(new.assign(spec_version=spec.spec_version), "assigned_at"))
        checks = run_checks(con, spec, run.partition_day, *ASSIGN_CHECKS)
    return dg.MaterializeResult(
        metadata={
            "assigned": len(new),
            "holdout": int(new["holdout"].sum()) if not new.empty else 0,
            "in_experiments": int(new["experiment_id"].notna().sum()) if not new.empty else 0,
            "in_routing_canaries": int(new["routing_experiment_id"].notna().sum()) if not new.empty else 0,
            "in_hook_experiments": int(new["hook_experiment_id"].notna().sum()) if not new.empty else 0,
            "in_split_experiments": int(new["split_experiment_id"].notna().sum()) if not new.empty else 0,
            "skipped_suppressed": int(suppressed),
            "loop_version": loop.version,
            "arms": dg.MetadataValue.md(_arms_table(allocation)),
        },
        check_results=checks,
    )


def _arms_table(allocation: pd.DataFrame) -> str:
    columns = ["segment", "holdout", "arm_id", "experiment_arm", "routing_arm", "angle_share", "share", "p_best"]
    return allocation[columns].to_markdown(index=False, floatfmt=".3f")
