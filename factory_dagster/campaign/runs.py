"""Running one campaign's day of a line job in this process (the demo, the CLI's tools and the tests).

The daily schedule asks the daemon for the same runs (`campaign.schedule`); this is the in-process
twin for a person or a test at one machine: it registers the campaign as a partition first, as the
schedule does, then runs the job for the campaign's day.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import dagster as dg

from factory_dagster.partitions import CAMPAIGNS, line_key


def register_campaigns(instance: dg.DagsterInstance, keys: list[str]) -> list[str]:
    """Add the campaign keys the instance does not know yet as partitions; the keys added."""
    missing = [key for key in keys if not instance.has_dynamic_partition(CAMPAIGNS.name, key)]
    if missing:
        instance.add_dynamic_partitions(CAMPAIGNS.name, missing)
    return missing


def execute_campaign_day(
    defs: dg.Definitions, instance: dg.DagsterInstance, campaign: str, day: date, job: str = "daily_line", **kwargs: Any
) -> dg.ExecuteInProcessResult:
    """Run `job` for the campaign's day in this process; a failure is in the result, not raised."""
    register_campaigns(instance, [campaign])
    return defs.resolve_job_def(job).execute_in_process(
        partition_key=line_key(campaign, day), instance=instance, raise_on_error=False, **kwargs
    )
