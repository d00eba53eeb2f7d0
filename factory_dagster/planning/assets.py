"""Dagster wiring of the plan stage: `campaign_plan` and its blocking check."""

import dagster as dg
import pandas as pd

from factory_dagster.controls.incidents import record_incident
from factory_dagster.gates.checks import stored_rows_check
from factory_dagster.gates.schemas import plan_failures
from factory_dagster.learning.marts import segment_angle_performance
from factory_dagster.models.gateway import DEFERRED, CallRequest
from factory_dagster.models.ledger import write_ledger
from factory_dagster.models.prompts import build_messages
from factory_dagster.models.routing import routes_frame
from factory_dagster.planning.plan import PLAN_PROMPT_VERSION, PlanAnswer, PlanError, parse_plan, plan_brief, plan_violations
from factory_dagster.resources import FactoryResource, line_asset
from factory_dagster.warehouse.store import replace_partition, transaction

PLAN_ATTEMPTS = 2
SEND_OUTCOMES = dg.AssetKey(["intermediate", "int_send_outcomes"])


@line_asset(
    group_name="plan",
    deps=[SEND_OUTCOMES],
    kinds={"duckdb"},
)
def campaign_plan(context: dg.AssetExecutionContext, factory: FactoryResource) -> dg.MaterializeResult:
    """Per-segment plan (angles, hooks, claims) by the premium model, from the spec and the marts."""
    spec = factory.spec()
    gateway = factory.gateway(context, spec)
    with factory.warehouse() as con:
        performance = segment_angle_performance(con, spec.campaign_id, gateway.run.partition_day)
        messages = build_messages(PLAN_PROMPT_VERSION, plan_brief(spec, performance))
    requests = [
        CallRequest("plan", PLAN_PROMPT_VERSION, messages, seed=n, response_model=PlanAnswer) for n in range(PLAN_ATTEMPTS)
    ]
    problems: list[str] = []
    plan, planner = pd.DataFrame(), spec.routing["plan"]
    for request in requests:
        answer = gateway.complete(request)
        if answer.status == DEFERRED:
            problems = ["the daily model budget is spent"]
            break
        try:
            plan, planner = parse_plan(answer.text), answer.model
            problems = plan_violations(plan, spec)
        except PlanError as exc:
            problems = [str(exc)]
        if not problems:
            break
    routing = routes_frame(gateway.routes)
    with factory.warehouse() as con, transaction(con):
        write_ledger(con, gateway)
        replace_partition(con, "routing", gateway.run.partition_day, gateway.run.stamp(routing, "recorded_at"), spec.campaign_id)
        if problems:
            record_incident(con, gateway.run, "plan_rejected", "error", "; ".join(problems))
        else:
            rows = plan.assign(spec_version=spec.spec_version, model=planner, prompt_version=PLAN_PROMPT_VERSION)
            replace_partition(con, "plans", gateway.run.partition_day, gateway.run.stamp(rows), spec.campaign_id)
    if problems:
        raise dg.Failure(description=f"the plan failed its checks after {PLAN_ATTEMPTS} attempts: " + "; ".join(problems))
    return dg.MaterializeResult(metadata={"segments": plan.segment.nunique(), "rows": len(plan), **gateway.usage()})


@dg.asset_check(
    asset=campaign_plan,
    blocking=True,
    description="The stored plan passes the Pandera plan schema: every segment covered, known angles, only the spec's claims.",
)
def plan_is_valid(context: dg.AssetCheckExecutionContext, factory: FactoryResource) -> dg.AssetCheckResult:
    return stored_rows_check(context, factory, "plans", plan_failures)
