"""The line runs one partition per day; today's partition exists from midnight UTC."""

import dagster as dg

DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)

# Every stage of day t reads what day t-1 left behind, so backfills run one day per run.
ONE_DAY_PER_RUN = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
