"""The daily line on the PostgreSQL warehouse: whole days in-process through Dagster, every station writing there.

One setting (`Paths.warehouse_url`, FACTORY_WAREHOUSE_URL) moves the warehouse; the DuckDB file is never created.
The learn stage's dbt build is left out of the job until the dbt project runs on PostgreSQL (another branch):
without marts the stations run as on a fresh warehouse's first days (no performance to learn from yet).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from factory_dagster.campaign.runs import execute_campaign_day
from factory_dagster.definitions import LINE_ASSETS, build_definitions
from factory_dagster.intake.sample_leads import write_sample_file
from factory_dagster.learning.assets import dbt_marts
from factory_dagster.partitions import CAMPAIGN_DAYS
from factory_dagster.settings import Paths
from factory_dagster.warehouse.pg_connection import PgConnection
from factory_dagster.warehouse.store import connect

START = date(2026, 3, 2)
DAYS = 2
LEADS_PER_DAY = 60
JOB = "daily_line_without_dbt"


@pytest.fixture(scope="module")
def module_dsn(postgres_server) -> str:
    """One database for the module's days (the per-test `postgres_dsn` would drop it between tests)."""
    import uuid

    import psycopg

    name = f"line_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.dsn("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return postgres_server.dsn(name)


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory, module_dsn: str):
    home = tmp_path_factory.mktemp("factory-pg")
    base = Paths.under(home)
    paths = Paths(base.home, base.warehouse, base.leads_inbox, base.spec, module_dsn)
    job = dg.define_asset_job(
        JOB,
        selection=dg.AssetSelection.assets(*LINE_ASSETS) - dg.AssetSelection.assets(dbt_marts),
        partitions_def=CAMPAIGN_DAYS,
        executor_def=dg.in_process_executor,
    )
    defs = dg.Definitions.merge(build_definitions(paths), dg.Definitions(jobs=[job]))
    instance = dg.DagsterInstance.ephemeral()
    results = []
    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        write_sample_file(paths.campaign_inboxes(paths.default_campaign)[0], day, n=LEADS_PER_DAY, seed=offset)
        results.append(execute_campaign_day(defs, instance, paths.default_campaign, day, JOB))
    failures = [
        f"{e.step_key}: {e.event_specific_data.error.to_string() if e.event_specific_data.error else ''}"
        for r in results
        for e in r.all_events
        if e.is_step_failure
    ]
    assert all(r.success for r in results), "\n".join(failures)
    return paths


def query(paths: Paths, sql: str) -> pd.DataFrame:
    with connect(paths.warehouse, url=paths.warehouse_url) as con:
        assert isinstance(con, PgConnection)
        return con.execute(sql).df()


def test_every_station_wrote_its_days_to_postgresql_and_no_duckdb_file_exists(line: Paths) -> None:
    assert not Path(line.warehouse).exists()
    counts = query(
        line,
        """SELECT (SELECT count(*) FROM raw.leads) AS leads, (SELECT count(*) FROM raw.drafts) AS drafts,
                  (SELECT count(*) FROM raw.gate_results) AS gated, (SELECT count(*) FROM raw.sends) AS sends""",
    ).iloc[0]
    assert counts.leads > 0 and counts.drafts > 0 and counts.gated > 0 and counts.sends > 0, counts.to_dict()
