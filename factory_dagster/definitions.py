"""Factory's Dagster code location, assembled from the per-stage modules."""

from __future__ import annotations

import dagster as dg

from factory_dagster.assignment.assets import assignments
from factory_dagster.campaign.schedule import daily_line_schedule
from factory_dagster.content.assets import CONTENT_ASSETS, content_line
from factory_dagster.content.review_job import content_review
from factory_dagster.controls.jobs import kill_switch
from factory_dagster.controls.run_history import for_local_instance
from factory_dagster.delivery.assets import sends
from factory_dagster.drafting.assets import drafts
from factory_dagster.feedback.assets import outcome_events, suppression_list
from factory_dagster.gates.assets import message_audit, messages
from factory_dagster.improve.assets import experiment_decisions
from factory_dagster.improve.jobs import experiment_decision, loop_rollback
from factory_dagster.improve.proposal_assets import experiment_proposals
from factory_dagster.intake.assets import leads
from factory_dagster.learning.assets import PRIOR_DAYS, dbt_marts, send_guard
from factory_dagster.learning.integrity import warehouse_integrity, weekly_integrity
from factory_dagster.partitions import CAMPAIGN_DAYS
from factory_dagster.planning.assets import campaign_plan
from factory_dagster.report.assets import loop_report, loop_report_job
from factory_dagster.resources import FactoryResource
from factory_dagster.settings import Paths

# The daily line's assets, in the order of the stage table in docs/design.md.
LINE_ASSETS = [
    outcome_events,
    suppression_list,
    dbt_marts,
    send_guard,
    experiment_decisions,
    experiment_proposals,
    leads,
    campaign_plan,
    assignments,
    drafts,
    messages,
    message_audit,
    sends,
]


def build_definitions(paths: Paths | None = None, **factory_overrides: object) -> dg.Definitions:
    """The whole line over one data folder (tests pass a temporary one)."""
    paths = paths or Paths.from_env()
    for_local_instance(paths.dagster_home)
    daily_line = dg.define_asset_job(
        "daily_line",
        selection=dg.AssetSelection.assets(*LINE_ASSETS),
        partitions_def=CAMPAIGN_DAYS,
        # One process for the whole day: steps share the DuckDB pool anyway, and the
        # multiprocess executor would re-import the code location for every step.
        executor_def=dg.in_process_executor,
        description="Observe → learn → improve → intake → plan → assign → draft → gate → send, for one campaign's day.",
    )
    refresh_marts = dg.define_asset_job(
        "refresh_marts", selection=dg.AssetSelection.assets(dbt_marts), executor_def=dg.in_process_executor
    )
    return dg.Definitions(
        assets=[*LINE_ASSETS, *PRIOR_DAYS, loop_report, *CONTENT_ASSETS],
        # Every stage's checks run inside its asset (resources.LineCheck).
        jobs=[
            daily_line,
            refresh_marts,
            kill_switch,
            warehouse_integrity,
            experiment_decision,
            loop_rollback,
            loop_report_job,
            content_line,
            content_review,
        ],
        schedules=[daily_line_schedule(daily_line, paths.campaigns), weekly_integrity],
        resources={"factory": FactoryResource.from_paths(paths, **factory_overrides)},
    )


defs = build_definitions()
