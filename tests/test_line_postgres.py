"""The daily line on the PostgreSQL warehouse: whole days in-process through Dagster, every station writing there,
beside the same days on the DuckDB file: the offline models are deterministic, so both must hold the same rows.

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
from factory_dagster.warehouse.contracts import RAW_TABLES
from factory_dagster.warehouse.pg_connection import PgConnection
from factory_dagster.warehouse.store import connect

START = date(2026, 3, 2)
DAYS = 3
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


def run_line(paths: Paths) -> None:
    """The line's days without the dbt build, on the warehouse `paths` names (each day's same sample leads)."""
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


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory, module_dsn: str) -> tuple[Paths, Paths]:
    """The same days on the DuckDB file and on PostgreSQL."""
    duck = Paths.under(tmp_path_factory.mktemp("factory-duckdb"))
    base = Paths.under(tmp_path_factory.mktemp("factory-pg"))
    pg = Paths(base.home, base.warehouse, base.leads_inbox, base.spec, module_dsn)
    run_line(duck)
    run_line(pg)
    return duck, pg


def query(paths: Paths, sql: str) -> pd.DataFrame:
    with connect(paths.warehouse, url=paths.warehouse_url) as con:
        assert isinstance(con, PgConnection) == bool(paths.warehouse_url)
        return con.execute(sql).df()


def test_every_station_wrote_its_days_to_postgresql_and_no_duckdb_file_exists(lines: tuple[Paths, Paths]) -> None:
    _, pg = lines
    assert not Path(pg.warehouse).exists()
    counts = query(
        pg,
        """SELECT (SELECT count(*) FROM raw.leads) AS leads, (SELECT count(*) FROM raw.drafts) AS drafts,
                  (SELECT count(*) FROM raw.gate_results) AS gated, (SELECT count(*) FROM raw.sends) AS sends""",
    ).iloc[0]
    assert counts.leads > 0 and counts.drafts > 0 and counts.gated > 0 and counts.sends > 0, counts.to_dict()


def test_both_warehouses_hold_the_same_rows_in_every_raw_table(lines: tuple[Paths, Paths]) -> None:
    duck, pg = lines
    counts = " UNION ALL ".join(f"SELECT '{t}' AS name, count(*) AS n FROM raw.{t}" for t in sorted(RAW_TABLES))
    duck_counts, pg_counts = (dict(query(p, counts).itertuples(index=False)) for p in (duck, pg))
    assert pg_counts == duck_counts
    assert duck_counts["sends"] > 0 and duck_counts["llm_calls"] > 0


@pytest.mark.parametrize(
    ("table", "columns"),
    [
        ("leads", "campaign_id, lead_id, email, segment, source_row"),
        ("assignments", "campaign_id, lead_id, arm_id, holdout"),
        ("drafts", "draft_id, lead_id, attempt, subject, body"),
        ("gate_results", "draft_id, passed, selected"),
        ("messages", "message_id, send_id, lead_id, subject, body"),
        ("sends", "send_id, message_id, lead_id, arm_id, subject, body_sha256, status"),
        ("outbox", "send_id, state, attempts, header_message_id"),
        ("suppression", "email, reason"),
        ("events", "event_id, send_id, event_type"),
    ],
)
def test_each_station_wrote_the_same_values_on_both(lines: tuple[Paths, Paths], table: str, columns: str) -> None:
    duck, pg = lines
    sql = f"SELECT {columns} FROM raw.{table} ORDER BY {columns}"
    expected, got = query(duck, sql), query(pg, sql)
    assert len(expected) > 0 or table in ("suppression", "events")
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
