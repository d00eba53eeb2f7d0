"""The line runs one partition per campaign and day; today's day exists from midnight UTC.

Why campaign x day: every campaign spec in the campaigns folder runs daily with its own budget,
kill switch, holds and experiments, and a failing campaign must not stop the others, so each
campaign's day is a run of its own, and the Dagster UI shows each campaign's runs and assets
apart. The campaign dimension is dynamic (a key per spec file, `campaign.registry`): a new spec
file becomes a campaign without redeploying the code location.
"""

from datetime import date

import dagster as dg

DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)
CAMPAIGNS = dg.DynamicPartitionsDefinition(name="campaign")
CAMPAIGN_DAYS = dg.MultiPartitionsDefinition({"campaign": CAMPAIGNS, "day": DAILY})

# Every stage of day t reads what day t-1 left behind, so backfills run one day per run.
ONE_DAY_PER_RUN = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)


def line_key(campaign: str, day: date) -> dg.MultiPartitionKey:
    """The partition of one campaign's day (its string form is `<campaign>|<day>`)."""
    return dg.MultiPartitionKey({"campaign": campaign, "day": day.isoformat()})


def key_parts(partition_key: str) -> tuple[str | None, date]:
    """(campaign key, day) of a line partition, or (None, day) of a day-only partition (the content line's)."""
    if isinstance(partition_key, dg.MultiPartitionKey):
        parts = partition_key.keys_by_dimension
        return parts["campaign"], date.fromisoformat(parts["day"])
    if "|" in partition_key:
        campaign, day = partition_key.split("|")
        return campaign, date.fromisoformat(day)
    return None, date.fromisoformat(partition_key)
