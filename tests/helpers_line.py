"""What the line's integration tests share: the first day, and running and querying a day of the line."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd

from factory_dagster.campaign.runs import execute_campaign_day
from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import connect

START = date(2026, 3, 2)


def query(paths: Paths, sql: str, params: list | None = None) -> pd.DataFrame:
    with connect(paths.warehouse) as con:
        return con.execute(sql, params or []).df()


def run_day(
    defs: dg.Definitions, instance: dg.DagsterInstance, day: date, campaign: str | None = None
) -> dg.ExecuteInProcessResult:
    """The line's run of the campaign's day (the default campaign's unless named)."""
    campaign = campaign or Path(defs.resources["factory"].spec_path).stem
    return execute_campaign_day(defs, instance, campaign, day)
