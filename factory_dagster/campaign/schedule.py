"""The daily schedule: one run of the line per campaign, so each campaign's day succeeds or fails on its own.

Each tick registers the campaigns folder's keys as partitions (a new spec file becomes a campaign the
next morning, no redeploy) and asks for one run per campaign; the run key makes a tick's request for a
campaign's day idempotent, so a daemon restart does not start the same day twice.
"""

from datetime import UTC, date
from pathlib import Path

import dagster as dg

from factory_dagster.campaign.registry import CampaignFolderError, campaign_specs
from factory_dagster.campaign.runs import register_campaigns
from factory_dagster.partitions import line_key

CAMPAIGN_TAG = "factory/campaign"


def campaign_run_requests(keys: list[str], day: date) -> list[dg.RunRequest]:
    """One request per campaign for the day, tagged with its campaign (for the UI's filters and run-queue limits)."""
    return [dg.RunRequest(run_key=f"{key}|{day}", partition_key=line_key(key, day), tags={CAMPAIGN_TAG: key}) for key in keys]


def daily_line_schedule(job: dg.JobDefinition, campaigns: Path) -> dg.ScheduleDefinition:
    """At 06:00 UTC, today's day of every campaign in the folder (a day's partition exists from midnight UTC).

    The folder is read at each tick, without the line's resource: a tick must not open the warehouse,
    which a run may be holding.
    """

    @dg.schedule(job=job, cron_schedule="0 6 * * *", execution_timezone="UTC", name="daily_line_schedule")
    def daily_line_every_campaign(context: dg.ScheduleEvaluationContext):
        try:
            keys = list(campaign_specs(campaigns))
        except CampaignFolderError as exc:
            return dg.SkipReason(str(exc))
        if not keys:
            return dg.SkipReason(f"no campaign spec in {campaigns}")
        register_campaigns(context.instance, keys)
        return campaign_run_requests(keys, context.scheduled_execution_time.astimezone(UTC).date())

    return daily_line_every_campaign
