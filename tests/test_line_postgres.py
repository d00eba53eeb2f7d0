"""The daily line on the PostgreSQL warehouse: whole days in-process through Dagster, every station writing there,
beside the same days on the DuckDB file: the offline models are deterministic, so both must hold the same rows.

One setting (`Paths.warehouse_url`, FACTORY_WAREHOUSE_URL) moves the warehouse; the DuckDB file is never created.
The days run the job as it ships, the learn stage's dbt build included (dbt-postgres on PostgreSQL). A fresh
warehouse's first day has no performance to learn from, so both warehouses start from the same first day that DuckDB
built (copied into PostgreSQL, tests/warehouse_copy.py, with the data folder): the stations' reads of the marts
(improve, plan, assign) then have rows to read on both, and the checks below that each station wrote rows on the
compared days (looks, allocations and plans included) hold. A fresh PostgreSQL warehouse's first day is run by
tests/test_dagster_postgres_instance.py.

The same dbt project builds the same models on both engines (parity, at the end): a copy of the DuckDB days, with a
week of outcomes after them, the content line with its editor and a person's review edits, is built by dbt; every raw
table is then copied into a fresh PostgreSQL database through the store (`warehouse/pg_copy.py`), the same `dbt build`
runs there (target `postgres`), and every model of the project (staging, intermediate and marts) must hold the same
rows on both. How rows are compared (`differences`):
- Rows are sorted by all their columns first: neither engine promises an order.
- Floats agree to 1e-9 relative (1e-12 absolute near zero): sums and means add in another order on each engine, and a
  DuckDB DECIMAL literal is not a PostgreSQL numeric in its last bits. Everything else must be equal.
- Dates and timestamps are naive on both (UTC by the line's convention) and compared exactly.
- A list of STRUCTs on DuckDB is JSONB on PostgreSQL: both come back as lists of dicts, compared key by key.
- Integer widths may differ (DuckDB's BIGINT lengths, PostgreSQL's integer ones): both are Python ints. Column types
  are compared by family (`family`), so a double that became a numeric or a text would fail.
"""

from __future__ import annotations

import getpass
import json
import math
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import psycopg
import pytest
from helpers_db import LEADS, SPEC, add_leads
from helpers_review import HOOK, add_valid_message, valid_body
from postgres_server import fresh_database, new_database, wait_until_a_session_waits
from warehouse_copy import copy_warehouse

from factory_dagster.campaign.runs import execute_campaign_day
from factory_dagster.content.demo import review_as_operator, run_content_day
from factory_dagster.definitions import build_definitions
from factory_dagster.demo import QUIET_RUN_CONFIG, run_days
from factory_dagster.feedback.assets import outcome_events
from factory_dagster.gates.consistency import CONSISTENCY_LOCK
from factory_dagster.intake.sample_leads import write_sample_file
from factory_dagster.learning.assets import dbt_marts
from factory_dagster.learning.build_log import database_now, record_build
from factory_dagster.learning.dbt_project import INTEGRITY_TAG
from factory_dagster.learning.dbt_runner import DbtError, DbtRun, invoke, target_for
from factory_dagster.review.actions import approve, edit, hold
from factory_dagster.settings import Paths
from factory_dagster.warehouse import postgres
from factory_dagster.warehouse.contracts import RAW_TABLES
from factory_dagster.warehouse.pg_connection import PgConnection
from factory_dagster.warehouse.pg_copy import CopyTargetNotEmptyError, copy_raw
from factory_dagster.warehouse.postgres import connect_postgres
from factory_dagster.warehouse.store import connect, exclusive, lock_key

START = date(2026, 3, 2)
HISTORY_DAYS = 1  # DuckDB's days before the compared ones: a week of outcomes is not needed, a day with sends is
FIRST = START + timedelta(days=HISTORY_DAYS)  # the first day run on both warehouses
DAYS = 1  # one day on each warehouse runs every station there; a second repeated them at the suite's cost
LEADS_PER_DAY = 30  # enough for every station to write rows on both; the days cost what their dbt builds cost
CONTENT_DAYS = 1  # every content model has rows after one day
OUTCOME_WINDOW_DAYS = 7  # dbt var outcome_window_days: a send is mature once this many days have passed
REL_TOL, ABS_TOL = 1e-9, 1e-12
SHOWN = 5  # differences listed per relation


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
    """It adds a re-run to the shared days, so it comes after the tests that compare them (the parity tests below
    copy the DuckDB days after it)."""
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


# ---- the same dbt build on both engines (parity) ----


@dataclass(frozen=True)
class Parity:
    """Both warehouses after the same build: the DuckDB file, the PostgreSQL URL and each build's result."""

    duckdb_path: Path
    postgres_url: str
    duckdb_run: DbtRun
    postgres_run: DbtRun
    models: list[str]  # schema.name of every model the project builds


def _after_the_line(paths: Paths) -> None:
    """What the outreach days leave for other models: outcomes for a week after the last day, the content line, and a
    person's review edits."""
    defs = build_definitions(paths)
    with dg.DagsterInstance.ephemeral() as instance:
        # Outcomes arrive over the week after a send; the last send matures when an event occurs OUTCOME_WINDOW_DAYS
        # later. A CRM export booking a meeting that day comes in through the events inbox with the market's own events.
        last_day = FIRST + timedelta(days=DAYS - 1 + OUTCOME_WINDOW_DAYS)
        with connect(paths.warehouse, read_only=True) as con:
            (send_id,) = con.execute("SELECT min(send_id) FROM raw.sends").fetchone()
        paths.events_inbox.mkdir(parents=True, exist_ok=True)
        (paths.events_inbox / f"crm_bookings_{last_day}_late.csv").write_text(
            f"event_id,send_id,event_type,occurred_at\nevt_parity_late,{send_id},booked,{last_day}T10:00:00Z\n"
        )
        # One observe run on that day lets out every event of the week (the market holds back none of a day it passed).
        observed = execute_campaign_day(
            defs, instance, paths.default_campaign, last_day, run_config=QUIET_RUN_CONFIG, asset_selection=[outcome_events.key]
        )
        assert observed.success
        for offset in range(CONTENT_DAYS):
            lines = run_content_day(
                defs, instance, START + timedelta(days=offset), QUIET_RUN_CONFIG, review=lambda d: review_as_operator(paths, d)
            )
            assert not any("FAILED" in line for line in lines), lines
    _review_edits(paths, START)


def _review_edits(paths: Paths, day: date) -> None:
    """A person edits two messages' hooks (one also its subject), approves one and holds one (marts.edit_patterns)."""
    anna, juergen, siobhan, pieter, *_ = LEADS
    with connect(paths.warehouse) as con:
        add_leads(con, LEADS, day)
        ids = {
            lead: add_valid_message(con, lead, day, prompt_version="draft-v1" if i < 3 else "draft-v2")["message_id"]
            for i, lead in enumerate(LEADS)
        }
        for lead in (anna, juergen):
            edit(
                con,
                SPEC,
                ids[lead],
                "ann",
                "vague hook",
                body=valid_body(lead).replace(HOOK, "is the longest week of the month."),
            )
        edit(con, SPEC, ids[juergen], "ann", "subject", subject="Month-end at Kranwerk GmbH")
        approve(con, SPEC.campaign_id, ids[siobhan], "bob")
        hold(con, SPEC.campaign_id, ids[pieter], "bob", "check the size")


@pytest.fixture(scope="module")
def parity(
    lines: tuple[Paths, Paths], tmp_path_factory: pytest.TempPathFactory, dbt_manifest: Path, postgres_server
) -> Iterator[Parity]:
    """A copy of the DuckDB line's days (the history day and the compared one), with `_after_the_line`, built by dbt;
    every raw table copied into a fresh PostgreSQL database through the store, and the same build there."""
    duck, _ = lines
    home = tmp_path_factory.mktemp("parity") / "home"
    shutil.copytree(duck.home, home, ignore=shutil.ignore_patterns("dagster_home", "dbt_target"))
    paths = Paths.under(home)
    _after_the_line(paths)
    duckdb_run = invoke(["build"], paths.warehouse, paths.home / "dbt_target")
    assert duckdb_run.success, duckdb_run.describe_failure()
    manifest = json.loads(dbt_manifest.read_text())
    models = sorted(f"{n['schema']}.{n['alias']}" for n in manifest["nodes"].values() if n["resource_type"] == "model")
    with fresh_database(postgres_server) as url:
        with duckdb.connect(str(paths.warehouse), read_only=True) as source, connect_postgres(url) as target:
            copied = copy_raw(source, target)
        assert copied["sends"] > 0 and copied["content_pieces"] > 0
        postgres_run = invoke(["build"], paths.warehouse, paths.home / "dbt_target_postgres", warehouse_url=url)
        yield Parity(paths.warehouse, url, duckdb_run, postgres_run, models)


# ---- reading and comparing ----


def family(data_type: str) -> str:
    """What a column type is as Python reads it, on either engine (information_schema.columns.data_type)."""
    upper = data_type.upper()
    if upper.startswith(("STRUCT(", "MAP(")) or upper in ("JSON", "JSONB"):
        return "json"
    if upper.endswith("[]") or upper == "ARRAY":
        return "list"
    families = {
        "integer": {"SMALLINT", "INTEGER", "BIGINT", "HUGEINT"},
        "float": {"DOUBLE", "DOUBLE PRECISION"},
        "text": {"VARCHAR", "TEXT", "CHARACTER VARYING"},
        "boolean": {"BOOLEAN"},
        "date": {"DATE"},
        "timestamp": {"TIMESTAMP", "TIMESTAMP WITHOUT TIME ZONE"},
    }
    for name, types in families.items():
        if upper in types:
            return name
    raise AssertionError(f"no family for the column type {data_type!r}: add it to `family` if both engines agree on it")


def columns(con: Any, relation: str) -> list[tuple[str, str]]:
    """(name, type family) of each column of `relation`, in order, on a DuckDB or psycopg connection."""
    schema, name = relation.split(".")
    marker = "?" if isinstance(con, duckdb.DuckDBPyConnection) else "%s"
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        f"WHERE table_schema = {marker} AND table_name = {marker} ORDER BY ordinal_position",
        [schema, name],
    ).fetchall()
    return [(column, family(data_type)) for column, data_type in rows]


def normal(value: Any) -> Any:
    """A value as comparable Python: lists as tuples, records (STRUCT or JSONB object) as sorted items."""
    if isinstance(value, list | tuple):
        return tuple(normal(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), normal(v)) for k, v in value.items()))
    return value


def _sort_key(row: tuple) -> tuple:
    # Floats rounded for ordering only (they are compared with a tolerance afterwards); nulls first.
    return tuple((0, "") if v is None else (1, format(v, ".6g") if isinstance(v, float) else repr(v)) for v in row)


def sorted_rows(con: Any, relation: str) -> tuple[list[str], list[tuple]]:
    cursor = con.execute(f"SELECT * FROM {relation}")
    names = [column[0] for column in cursor.description]
    return names, sorted((tuple(normal(v) for v in row) for row in cursor.fetchall()), key=_sort_key)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b  # True is not 1, nor a Decimal a float


def differences(duck: duckdb.DuckDBPyConnection, pg: psycopg.Connection, relation: str) -> list[str]:
    """What differs in `relation` between the engines: row counts, else the first differing values."""
    names, left = sorted_rows(duck, relation)
    _, right = sorted_rows(pg, relation)
    if len(left) != len(right):
        return [f"{relation}: {len(left)} rows on DuckDB, {len(right)} on PostgreSQL"]
    found = [
        f"{relation} row {i} {name}: DuckDB {a!r}, PostgreSQL {b!r}"
        for i, (row_l, row_r) in enumerate(zip(left, right, strict=True))
        for name, a, b in zip(names, row_l, row_r, strict=True)
        if not _same(a, b)
    ]
    return found[:SHOWN]


@pytest.fixture(scope="module")
def connections(parity: Parity) -> Iterator[tuple[duckdb.DuckDBPyConnection, psycopg.Connection]]:
    with (
        duckdb.connect(str(parity.duckdb_path), read_only=True) as duck,
        connect_postgres(parity.postgres_url, ensure_schema=False) as pg,
    ):
        yield duck, pg


# ---- the tests ----


def test_dbt_build_and_every_data_test_pass_on_postgres(parity: Parity) -> None:
    assert parity.postgres_run.success, parity.postgres_run.describe_failure()
    tests = {
        e["data"]["node_info"]["node_name"]: e["data"]["status"]
        for e in parity.postgres_run.results
        if e["info"]["name"] == "LogTestResult"
    }
    on_duckdb = [e for e in parity.duckdb_run.results if e["info"]["name"] == "LogTestResult"]
    assert len(tests) == len(on_duckdb) >= 70
    assert set(tests.values()) == {"pass"}, {name: status for name, status in tests.items() if status != "pass"}


def test_every_model_has_the_same_columns_and_types_on_both(parity: Parity, connections) -> None:
    duck, pg = connections
    assert len(parity.models) >= 30
    for relation in parity.models:
        assert columns(duck, relation), f"{relation} is not on DuckDB"
        assert columns(pg, relation) == columns(duck, relation), relation


def test_every_model_has_the_same_rows_on_both(parity: Parity, connections) -> None:
    duck, pg = connections
    found = [line for relation in parity.models for line in differences(duck, pg, relation)]
    assert not found, "\n".join(found)
    # Not vacuous: every mart and intermediate model has rows to compare, the maturity-dependent ones included.
    empty = [
        r for r in parity.models if not r.startswith("staging.") and duck.execute(f"SELECT count(*) FROM {r}").fetchone()[0] == 0
    ]
    assert not empty, empty
    (mature,) = duck.execute("SELECT sum(mature_sends) FROM marts.model_stage_quality").fetchone()
    assert mature > 0


def test_the_comparison_catches_a_changed_row(connections) -> None:
    duck, pg = connections
    first_row = "ctid = (SELECT min(ctid) FROM {})"
    assert differences(duck, pg, "marts.daily_kpis") == []
    with pg.transaction(force_rollback=True):
        pg.execute(f"UPDATE marts.daily_kpis SET sends = sends + 1 WHERE {first_row.format('marts.daily_kpis')}")
        (found,) = differences(duck, pg, "marts.daily_kpis")
        assert found.startswith("marts.daily_kpis row ") and " sends: " in found
    with pg.transaction(force_rollback=True):
        pg.execute(f"DELETE FROM marts.gate_violations WHERE {first_row.format('marts.gate_violations')}")
        (found,) = differences(duck, pg, "marts.gate_violations")
        assert found.startswith("marts.gate_violations: ") and found.endswith(" on PostgreSQL")
    with pg.transaction(force_rollback=True):  # floats: a change within the tolerance passes, a larger one not
        pg.execute("UPDATE marts.arm_results SET wilson_low = wilson_low * (1 + 1e-12)")
        assert differences(duck, pg, "marts.arm_results") == []
        pg.execute("UPDATE marts.arm_results SET wilson_low = wilson_low * (1 + 1e-7) + 1e-11")
        assert differences(duck, pg, "marts.arm_results")


def test_the_raw_copy_refuses_a_warehouse_that_has_raw_rows(connections) -> None:
    duck, pg = connections
    (before,) = pg.execute("SELECT count(*) FROM raw.sends").fetchone()
    with pytest.raises(CopyTargetNotEmptyError, match=r"raw\.leads, .*raw\.sends"):
        copy_raw(duck, pg)
    assert pg.execute("SELECT count(*) FROM raw.sends").fetchone() == (before,)


def test_the_password_reaches_dbt_only_through_the_environment(parity: Parity, tmp_path: Path) -> None:
    """The test cluster trusts loopback, so any password connects: what matters is where dbt writes it."""
    secret = "parity-S3cret-7f3a"
    url = parity.postgres_url.replace("://factory@", f"://factory:{secret}@")
    run = invoke(["run", "--select", "stg_leads"], parity.duckdb_path, tmp_path / "dbt_target", warehouse_url=url)
    assert run.success, run.describe_failure()
    assert "DBT_ENV_SECRET_FACTORY_PG_PASSWORD" not in os.environ and "FACTORY_PG_HOST" not in os.environ
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "dbt.log" for p in files)
    assert [p for p in files if secret.encode() in p.read_bytes()] == []


def test_the_postgres_target_comes_from_the_url_and_duckdb_stays_the_default(tmp_path: Path) -> None:
    target = target_for(tmp_path / "unused.duckdb", "postgresql://ann:s3cret@db.example:6543/factory?sslmode=require")
    assert (target.name, target.database, target.args) == ("postgres", "factory", ["--target", "postgres"])
    assert target.environ == {
        "FACTORY_PG_HOST": "db.example",
        "FACTORY_PG_PORT": "6543",
        "FACTORY_PG_USER": "ann",
        "FACTORY_PG_DATABASE": "factory",
        "FACTORY_PG_SSLMODE": "require",
        "DBT_ENV_SECRET_FACTORY_PG_PASSWORD": "s3cret",
    }
    assert "s3cret" not in repr(target)
    defaults = target_for(tmp_path / "unused.duckdb", "postgresql:///warehouse").environ
    assert (defaults["FACTORY_PG_HOST"], defaults["FACTORY_PG_PORT"], defaults["FACTORY_PG_USER"]) == (
        "localhost",
        "5432",
        getpass.getuser(),
    )
    with pytest.raises(DbtError) as caught:
        target_for(tmp_path / "unused.duckdb", "host=db password=s3cret user")
    assert "s3cret" not in str(caught.value) and caught.value.__cause__ is None and caught.value.__suppress_context__
    local = target_for(tmp_path / "w.duckdb")
    assert (local.name, local.database, local.args) == ("local", "w", [])
    assert local.environ == {"FACTORY_WAREHOUSE": str((tmp_path / "w.duckdb").resolve())}
