"""Dagster wiring of the plan stage: `campaign_plan` and its blocking check."""

import dagster as dg

from factory_dagster.gates.checks import stored_rows_check
from factory_dagster.gates.schemas import plan_failures
from factory_dagster.learning.marts import segment_angle_performance
from factory_dagster.models.ledger import write_ledger
from factory_dagster.models.prompts import build_messages
from factory_dagster.models.routing import routes_frame
from factory_dagster.planning.fallback import settle_plan
from factory_dagster.planning.plan import PLAN_PROMPT_VERSION, ask_planner, plan_brief
from factory_dagster.resources import FactoryResource, LineCheck, check_specs, line_asset, run_checks
from factory_dagster.warehouse.store import replace_partition, transaction

SEND_OUTCOMES = dg.AssetKey(["intermediate", "int_send_outcomes"])

PLAN_CHECKS = (
    LineCheck(
        "plan_is_valid",
        "The stored plan passes the Pandera plan schema: every segment covered, known angles, only the spec's claims.",
        lambda con, spec, day: stored_rows_check(con, spec, day, "plans", plan_failures),
    ),
)


@line_asset(
    group_name="plan",
    deps=[SEND_OUTCOMES],
    kinds={"duckdb"},
    check_specs=check_specs("campaign_plan", *PLAN_CHECKS),
)
def campaign_plan(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """Per-segment plan (angles, hooks, claims) by the premium model, from the spec and the marts.

    When the planner's answers fail their checks the day falls back to the last accepted plan,
    else to a plan built from the spec alone (`planning.fallback`), and an incident says so.
    """
    spec = factory.spec(context)
    gateway = factory.gateway(context, spec)
    day = gateway.run.partition_day
    with factory.warehouse() as con:
        performance = segment_angle_performance(con, spec.campaign_id, day)
        messages = build_messages(PLAN_PROMPT_VERSION, plan_brief(spec, performance))
    planned, planner, problems = ask_planner(gateway, spec, messages)
    routing = routes_frame(gateway.routes)
    with factory.warehouse() as con:
        with transaction(con):
            write_ledger(con, gateway)
            replace_partition(con, "routing", day, gateway.run.stamp(routing, "recorded_at"), spec.campaign_id)
            choice = settle_plan(con, gateway.run, spec, planned, planner, problems)
        checks = run_checks(con, spec, day, *PLAN_CHECKS)
    if choice.incident:
        context.log.warning(choice.incident)
    return dg.MaterializeResult(
        metadata={
            "plan_source": choice.source,
            "fallback_reason": choice.incident or "none",
            "segments": choice.rows.segment.nunique(),
            "rows": len(choice.rows),
            **gateway.usage(),
        },
        check_results=checks,
    )
