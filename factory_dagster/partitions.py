"""The line runs one partition per day; today's partition exists from midnight UTC."""

import dagster as dg

DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)
