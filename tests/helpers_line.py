"""What the line's integration tests share: the first day, and running and querying a day of the line."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pandas as pd

from factory_dagster.settings import Paths
from factory_dagster.warehouse.store import connect

START = date(2026, 3, 2)


def query(paths: Paths, sql: str, params: list | None = None) -> pd.DataFrame:
    with connect(paths.warehouse) as con:
        return con.execute(sql, params or []).df()


def run_day(defs: dg.Definitions, instance: dg.DagsterInstance, day: date) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("daily_line").execute_in_process(
        partition_key=day.isoformat(), instance=instance, raise_on_error=False
    )
