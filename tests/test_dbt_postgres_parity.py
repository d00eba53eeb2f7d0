"""The dbt project builds the same models on PostgreSQL as on DuckDB (issue 13: one setting moves the warehouse).

A few real days of the line fill a DuckDB warehouse: the outreach line (with outcomes arriving for a week after its
last day), the content line with its editor, and a person's review edits. dbt builds it; every raw table is then copied
into a fresh PostgreSQL database through the store (`warehouse/pg_copy.py`), the same `dbt build` runs there (target
`postgres`), and every model of the project (staging, intermediate and marts) must hold the same rows on both.

How rows are compared (`differences`):
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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import psycopg
import pytest
from helpers_db import LEADS, SPEC, add_leads
from helpers_line import START
from helpers_review import HOOK, add_valid_message, valid_body
from postgres_server import fresh_database

from factory_dagster.campaign.runs import execute_campaign_day
from factory_dagster.content.demo import review_as_operator, run_content_day
from factory_dagster.definitions import build_definitions
from factory_dagster.demo import QUIET_RUN_CONFIG, run_days
from factory_dagster.feedback.assets import outcome_events
from factory_dagster.learning.dbt_runner import DbtError, DbtRun, invoke, target_for
from factory_dagster.review.actions import approve, edit, hold
from factory_dagster.settings import Paths
from factory_dagster.warehouse.pg_copy import CopyTargetNotEmptyError, copy_raw
from factory_dagster.warehouse.postgres import connect_postgres
from factory_dagster.warehouse.store import connect

DAYS = 2
LEADS_PER_DAY = 30
CONTENT_DAYS = 1  # every content model has rows after one day; the outreach line needs two for its experiments
OUTCOME_WINDOW_DAYS = 7  # dbt var outcome_window_days: a send is mature once this many days have passed
REL_TOL, ABS_TOL = 1e-9, 1e-12
SHOWN = 5  # differences listed per relation


@dataclass(frozen=True)
class Parity:
    """Both warehouses after the same build: the DuckDB file, the PostgreSQL URL and each build's result."""

    duckdb_path: Path
    postgres_url: str
    duckdb_run: DbtRun
    postgres_run: DbtRun
    models: list[str]  # schema.name of every model the project builds


def _line_days(paths: Paths) -> None:
    """The outreach line for DAYS days, outcomes for a week after, the content line, and review edits."""
    defs = build_definitions(paths)
    instance = dg.DagsterInstance.ephemeral()
    results = run_days(defs, instance, paths, START, DAYS, LEADS_PER_DAY, progress=lambda _: None)
    assert [r.success for r in results] == [True] * DAYS, [r.error for r in results]
    # Outcomes arrive over the week after a send; the last send matures when an event occurs OUTCOME_WINDOW_DAYS
    # later. A CRM export booking a meeting that day comes in through the events inbox with the market's own events.
    last_day = START + timedelta(days=DAYS - 1 + OUTCOME_WINDOW_DAYS)
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
def parity(tmp_path_factory: pytest.TempPathFactory, dbt_manifest: Path, postgres_server) -> Iterator[Parity]:
    paths = Paths.under(tmp_path_factory.mktemp("parity"))
    _line_days(paths)
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
