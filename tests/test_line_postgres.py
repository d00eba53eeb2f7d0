"""The daily line on the PostgreSQL warehouse: whole days in-process through Dagster, every station writing there,
beside the same days on the DuckDB file: the offline models are deterministic, so both must hold the same rows.

One setting (`Paths.warehouse_url`, FACTORY_WAREHOUSE_URL) moves the warehouse; the DuckDB file is never created.
The days run the job as it ships, the learn stage's dbt build included (dbt-postgres on PostgreSQL). A fresh
warehouse's first day has no performance to learn from, so both warehouses start from the same first day that DuckDB
built (copied into PostgreSQL, tests/warehouse_copy.py, with the data folder): the stations' reads of the marts
(improve, plan, assign) then have rows to read on both, and the checks below that each station wrote rows on the
compared days (looks, allocations and plans included) hold. A fresh PostgreSQL warehouse's first day is run by
tests/test_dagster_postgres_instance.py.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from postgres_server import new_database, wait_until_a_session_waits
from warehouse_copy import copy_warehouse

from factory_dagster.campaign.runs import execute_campaign_day
from factory_dagster.definitions import build_definitions
from factory_dagster.demo import run_days
from factory_dagster.gates.consistency import CONSISTENCY_LOCK
from factory_dagster.intake.sample_leads import write_sample_file
from factory_dagster.learning.assets import dbt_marts
from factory_dagster.learning.build_log import database_now, record_build
from factory_dagster.learning.dbt_project import INTEGRITY_TAG
from factory_dagster.learning.dbt_runner import invoke
from factory_dagster.settings import Paths
from factory_dagster.warehouse import postgres
from factory_dagster.warehouse.contracts import RAW_TABLES
from factory_dagster.warehouse.pg_connection import PgConnection
from factory_dagster.warehouse.store import connect, exclusive, lock_key

START = date(2026, 3, 2)
HISTORY_DAYS = 1  # DuckDB's days before the compared ones: a week of outcomes is not needed, a day with sends is
FIRST = START + timedelta(days=HISTORY_DAYS)  # the first day run on both warehouses
DAYS = 1  # one day on each warehouse runs every station there; a second repeated them at the suite's cost
LEADS_PER_DAY = 30  # enough for every station to write rows on both; the days cost what their dbt builds cost


def run_line(paths: Paths, start: date, days: int = DAYS) -> None:
    """The line's days, dbt included, on the warehouse `paths` names (each day's same sample leads)."""
    defs = build_definitions(paths)
    results = []
    # Disposed where it was made: an instance left to the garbage collector closes its SQLite session from another
    # thread (these runs also go on in threads of their own), which SQLite refuses with a traceback on stderr.
    with dg.DagsterInstance.ephemeral() as instance:
        for offset in range(days):
            day = start + timedelta(days=offset)
            write_sample_file(paths.campaign_inboxes(paths.default_campaign)[0], day, n=LEADS_PER_DAY, seed=(day - START).days)
            results.append(execute_campaign_day(defs, instance, paths.default_campaign, day))
    failures = [
        f"{e.step_key}: {e.event_specific_data.error.to_string() if e.event_specific_data.error else ''}"
        for r in results
        for e in r.all_events
        if e.is_step_failure
    ]
    assert all(r.success for r in results), "\n".join(failures)


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory, postgres_server, dbt_manifest) -> tuple[Paths, Paths]:
    """HISTORY_DAYS days of the whole line on DuckDB (dbt included), copied into PostgreSQL with the data folder, then
    the same DAYS more days (dbt included) on each."""
    duck = Paths.under(tmp_path_factory.mktemp("line-duckdb"))
    results = run_days(
        build_definitions(duck), dg.DagsterInstance.ephemeral(), duck, START, HISTORY_DAYS, LEADS_PER_DAY, lambda _: None
    )
    assert all(r.success for r in results), [r.error for r in results]
    home = tmp_path_factory.mktemp("line-pg") / "home"
    shutil.copytree(duck.home, home, ignore=shutil.ignore_patterns("warehouse.duckdb*", "dagster_home"))
    base = Paths.under(home)
    pg = Paths(base.home, base.warehouse, base.leads_inbox, base.spec, postgres_server.dsn(new_database(postgres_server, "line")))
    with connect(duck.warehouse, read_only=True) as source, postgres.connect_postgres(pg.warehouse_url) as target:
        copied = copy_warehouse(source, target)
    assert copied["marts.daily_kpis"] == HISTORY_DAYS and copied["raw.sends"] > 0, copied
    for paths in (duck, pg):
        run_line(paths, FIRST)
    return duck, pg


def query(paths: Paths, sql: str) -> pd.DataFrame:
    with connect(paths.warehouse, url=paths.warehouse_url) as con:
        assert isinstance(con, PgConnection) == bool(paths.warehouse_url)
        return con.execute(sql).df()


def test_every_station_wrote_its_days_to_postgresql_and_no_duckdb_file_exists(lines: tuple[Paths, Paths]) -> None:
    _, pg = lines
    assert not Path(pg.warehouse).exists()
    tables = ("leads", "assignments", "drafts", "gate_results", "messages", "sends", "llm_calls")
    counts = query(
        pg,
        " UNION ALL ".join(f"SELECT '{t}' AS name, count(*) AS n FROM raw.{t} WHERE partition_day >= '{FIRST}'" for t in tables),
    )
    assert dict(counts.itertuples(index=False)).keys() == set(tables) and (counts["n"] > 0).all(), counts


def test_both_warehouses_hold_the_same_rows_in_every_raw_table(lines: tuple[Paths, Paths]) -> None:
    duck, pg = lines
    # raw.dbt_builds logs the builds on PostgreSQL only (learning/build_log.py): one per day run there.
    tables = sorted(set(RAW_TABLES) - {"dbt_builds"})
    counts = " UNION ALL ".join(f"SELECT '{t}' AS name, count(*) AS n FROM raw.{t}" for t in tables)
    duck_counts, pg_counts = (dict(query(p, counts).itertuples(index=False)) for p in (duck, pg))
    assert pg_counts == duck_counts
    assert duck_counts["sends"] > 0 and duck_counts["llm_calls"] > 0
    builds = query(pg, "SELECT CAST(partition_day AS VARCHAR) AS day, success FROM raw.dbt_builds ORDER BY started_at")
    assert list(builds.itertuples(index=False, name=None)) == [(str(FIRST + timedelta(days=n)), True) for n in range(DAYS)]
    assert query(duck, "SELECT count(*) AS n FROM raw.dbt_builds")["n"][0] == 0


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
        # What the improve, plan and assign stations made of the marts.
        ("allocations", "partition_day, segment, arm_id, share"),
        ("plans", "partition_day, segment, angle, hook"),
        ("experiments", "experiment_id, state, design_key"),
        ("experiment_looks", "experiment_id, partition_day, arm, mature_sends, p_better"),
    ],
)
def test_each_station_wrote_the_same_values_on_both(lines: tuple[Paths, Paths], table: str, columns: str) -> None:
    duck, pg = lines
    sql = f"SELECT {columns} FROM raw.{table} ORDER BY {columns}"
    expected, got = query(duck, sql), query(pg, sql)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert len(expected) > 0 or table in ("suppression", "events")
    if table not in ("suppression", "events", "outbox", "experiments"):  # the days both ran wrote rows of their own
        new = query(duck, f"SELECT count(*) AS n FROM raw.{table} WHERE partition_day >= '{FIRST}'")
        assert new["n"].iloc[0] > 0, table


def test_a_campaign_run_waiting_for_the_dbt_build_reuses_a_build_that_started_after_it_asked(
    lines: tuple[Paths, Paths], tmp_path: Path
) -> None:
    """A campaign's run asks for the marts while another build holds the `dbt-build` lock: here the test holds it,
    and builds once the run is waiting, as another campaign's run would. The run then reuses that build instead of
    building again, and runs only its own campaign's reconciliation tests."""
    _, pg = lines
    day = FIRST + timedelta(days=DAYS)
    results: list[dg.ExecuteInProcessResult] = []

    def learn() -> None:  # the learn stage alone of the second campaign's day
        defs = build_definitions(pg)
        with dg.DagsterInstance.ephemeral() as instance:  # disposed in this thread (see run_line)
            results.append(execute_campaign_day(defs, instance, "brightwave_spend", day, asset_selection=list(dbt_marts.keys)))

    # The test's session is opened before the run's (one process shares a held session between its threads).
    with connect(pg.warehouse, url=pg.warehouse_url) as con:
        (builds_before,) = con.execute("SELECT count(*) FROM raw.dbt_builds").fetchall()[0]
        with exclusive(con, "dbt-build"):
            run = threading.Thread(target=learn)
            run.start()
            wait_until_a_session_waits(pg.warehouse_url, run, "the run waits for the build lock", 120)
            started_at = database_now(con)
            scope = ["--vars", json.dumps({"reconcile_campaign": "brightwave-close"})]
            build = invoke(["build", "--exclude", f"tag:{INTEGRITY_TAG}", *scope], pg.warehouse, tmp_path, pg.warehouse_url)
            assert build.success, build.describe_failure()
            record_build(con, "another-run", "brightwave-close", day, started_at, success=True)
        run.join(timeout=300)
        new_builds = con.execute("SELECT run_id FROM raw.dbt_builds ORDER BY started_at").fetchall()[builds_before:]
    (result,) = results
    assert result.success and new_builds == [("another-run",)]  # not built again
    materialized = result.asset_materializations_for_node(dbt_marts.op.name)
    assert {m.metadata["status"].value for m in materialized} == {"reused"}
    assert dg.AssetKey(["marts", "daily_kpis"]) in {m.asset_key for m in materialized}
    assert "another-run" in materialized[0].metadata["why"].value
    # Its own campaign's reconciliation tests ran here; every other test passed in the build it reused, and says so.
    checks = result.get_asset_check_evaluations()
    assert len(checks) > 20 and all(c.passed for c in checks)
    ran_here = {c.check_name for c in checks if "why" not in c.metadata}
    assert ran_here == {"assert_daily_kpis_match_raw", "assert_segment_arm_performance_sends_match_raw"}
    assert {c.metadata["status"].value for c in checks if c.check_name not in ran_here} == {"reused"}


def test_rerunning_a_day_on_postgresql_sends_nothing_twice_and_matches_duckdbs_rerun(lines: tuple[Paths, Paths]) -> None:
    """Last in the module: it adds a re-run to the shared days."""
    duck, pg = lines
    counts = """SELECT (SELECT count(*) FROM raw.sends) AS sends, (SELECT count(*) FROM raw.llm_calls) AS calls,
                       (SELECT sum(cost_usd) FROM raw.llm_calls) AS cost"""
    before = query(pg, counts).iloc[0].to_dict()
    last = FIRST + timedelta(days=DAYS - 1)
    run_line(duck, last, 1)
    # On PostgreSQL another campaign's gate holds the consistency lock meanwhile (here the test): the re-run's gate
    # waits for it, so it reads what that gate stores before its own consistency check.
    errors: list[BaseException] = []

    def rerun() -> None:
        try:
            run_line(pg, last, 1)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    with connect(pg.warehouse, url=pg.warehouse_url) as con:  # opened before the run's own session (see above)
        with exclusive(con, CONSISTENCY_LOCK):
            thread = threading.Thread(target=rerun)
            thread.start()
            waiting = f"the re-run's gate waits for the lock {errors}"
            wait_until_a_session_waits(pg.warehouse_url, thread, waiting, 120, lock_key(CONSISTENCY_LOCK))
        thread.join(timeout=300)
    assert not errors, errors
    after = query(pg, counts).iloc[0].to_dict()
    # The same lead file: nothing new to send or to pay for (the re-run's model calls are cache hits, recorded free).
    assert after["sends"] == before["sends"] and after["cost"] == pytest.approx(before["cost"], abs=1e-12)
    assert after["calls"] > before["calls"]
    pd.testing.assert_frame_equal(query(pg, counts), query(duck, counts), check_dtype=False, atol=1e-12)


def test_the_learn_stage_builds_the_same_marts_on_postgresql(lines: tuple[Paths, Paths]) -> None:
    duck, pg = lines
    kpis = "SELECT day, leads_in, leads_accepted, drafts, sends FROM marts.daily_kpis ORDER BY day"
    on_pg, on_duck = query(pg, kpis), query(duck, kpis)
    # The history day's sends, copied into PostgreSQL as raw rows, are counted by PostgreSQL's own builds (a day's
    # build runs before its own sends, so the compared day's show only after a later build).
    assert len(on_pg) == HISTORY_DAYS + DAYS and on_pg["sends"].iloc[HISTORY_DAYS - 1] > 0
    pd.testing.assert_frame_equal(on_pg.astype(str), on_duck.astype(str))
