"""The warehouse layer against real DuckDB files: schema, transactions, partitions, locks, file register."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from helpers_db import CAMPAIGN, DAY, LEADS, OTHER_CAMPAIGN, SPEC, add_leads, count, query, run_for

from factory_dagster.controls.incidents import record_incident
from factory_dagster.warehouse.contracts import RAW_TABLES
from factory_dagster.warehouse.file_registry import file_sha256, register_file, registered_hashes
from factory_dagster.warehouse.store import (
    connect,
    ensure_raw_schema,
    fetch_one,
    hold,
    insert_rows,
    replace_partition,
    transaction,
)


@pytest.fixture
def con(tmp_path: Path):
    with connect(tmp_path / "warehouse.duckdb") as connection:
        yield connection


def routing_rows(day: date, campaign_id: str, model: str, source: str = "spec") -> pd.DataFrame:
    stages = ("plan", "draft", "escalate")
    return run_for(day, campaign_id=campaign_id).stamp(
        pd.DataFrame(
            {"stage": stages, "model": [model] * len(stages), "fallbacks": [[]] * len(stages), "mode": "online", "source": source}
        ),
        "recorded_at",
    )


# --- connect -----------------------------------------------------------------------------------


def test_connect_creates_the_file_its_folder_and_every_raw_table(tmp_path: Path) -> None:
    path = tmp_path / "data" / "nested" / "warehouse.duckdb"
    with connect(path) as con:
        tables = {r[0] for r in query(con, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'")}
    assert path.is_file()
    assert tables == set(RAW_TABLES)

    # Opening again keeps what is there (the schema is created only where missing).
    with connect(path) as con:
        add_leads(con, LEADS[:2])
    with connect(path, read_only=True) as con:
        assert count(con, "leads") == 2


def test_connect_closes_the_connection_on_exit(tmp_path: Path) -> None:
    with connect(tmp_path / "w.duckdb") as con:
        pass
    with pytest.raises(duckdb.ConnectionException):
        con.execute("SELECT 1")


def test_connect_does_not_wait_on_errors_other_than_a_lock(tmp_path: Path) -> None:
    not_a_database = tmp_path / "notes.duckdb"
    not_a_database.write_text("this is a text file, not a DuckDB database\n" * 200)
    started = time.monotonic()
    with pytest.raises(duckdb.Error):
        with connect(not_a_database, wait_s=30):
            pass
    assert time.monotonic() - started < 5


_HOLD_LOCK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE IF NOT EXISTS held (x INTEGER)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def test_connect_waits_for_a_lock_held_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    hold_s = 1.5
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path), str(hold_s)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        locked_at = time.monotonic()

        # With almost no patience, the lock error surfaces as DuckDB's IOException.
        with pytest.raises(duckdb.IOException, match="(?i)lock"):
            with connect(path, wait_s=0.1):
                pass

        # With enough patience, connect retries until the other process lets go.
        with connect(path, wait_s=20) as con:
            waited = time.monotonic() - locked_at
            assert count(con, "kill_switch") == 0  # the raw schema was created once we got in
            assert query(con, "SELECT count(*) FROM held") == [(0,)]  # the other process's work is there
        assert waited >= hold_s - 0.3
        assert holder.wait(timeout=10) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


_TRY_OPEN = """
import sys, duckdb
try:
    duckdb.connect(sys.argv[1]).close()
    print("opened")
except duckdb.IOException as exc:
    print("locked" if "lock" in str(exc).lower() else exc)
"""


def _other_process_opens(path: Path) -> str:
    return subprocess.run([sys.executable, "-c", _TRY_OPEN, str(path)], capture_output=True, text=True, check=True).stdout.strip()


def test_hold_hands_out_cursors_of_one_open_warehouse_and_releases_it(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with hold(path):
        with connect(path) as first, transaction(first):
            record_incident(first, run_for(DAY), "test", "info", "written through a cursor")
        with connect(path, read_only=True) as second:  # the held instance serves reads too
            assert count(second, "incidents") == 1
        with hold(path):  # re-entrant: the inner block does not close the outer one's file
            pass
        with connect(path) as third:
            assert count(third, "incidents") == 1
        assert _other_process_opens(path) == "locked"  # held for the whole block
    assert _other_process_opens(path) == "opened"  # released at its end
    with connect(path, read_only=True) as fresh:
        assert count(fresh, "incidents") == 1


# --- transaction -------------------------------------------------------------------------------


def test_transaction_commits_on_success(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with connect(path) as con:
        with transaction(con):
            add_leads(con, LEADS[:3])
            record_incident(con, run_for(), "lead_file_rejected", "warning", "inbox/leads_bad.csv: the file is empty")
    with connect(path, read_only=True) as con:
        assert count(con, "leads") == 3
        assert count(con, "incidents") == 1


def test_transaction_rolls_back_everything_on_an_error(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with connect(path) as con:
        add_leads(con, LEADS[:1])  # committed before the transaction
        with pytest.raises(RuntimeError, match="delivery failed"):
            with transaction(con):
                add_leads(con, LEADS[1:4])
                record_incident(con, run_for(), "sends_held", "critical", "kill switch engaged")
                raise RuntimeError("delivery failed half way")
        # The connection is usable afterwards, and nothing of the failed unit is visible.
        assert count(con, "leads") == 1
        assert count(con, "incidents") == 0
    with connect(path, read_only=True) as con:  # nor was it written to the file
        assert query(con, "SELECT lead_id FROM raw.leads") == [(LEADS[0].lead_id,)]
        assert count(con, "incidents") == 0


def test_transaction_rolls_back_when_a_later_statement_violates_a_constraint(con) -> None:
    with pytest.raises(duckdb.ConstraintException):
        with transaction(con):
            add_leads(con, LEADS[:2])
            add_leads(con, LEADS[1:3])  # LEADS[1] again: primary key violation
    assert count(con, "leads") == 0
    with transaction(con):  # and the next unit of work starts cleanly
        add_leads(con, LEADS[1:3])
    assert count(con, "leads") == 2


# --- insert_rows / replace_partition -----------------------------------------------------------


def test_insert_rows_matches_columns_by_name_and_ignores_an_empty_frame(con) -> None:
    frame = routing_rows(DAY, CAMPAIGN, "offline-cheap")
    reordered = frame[list(reversed(frame.columns))]
    assert insert_rows(con, "routing", reordered) == 3
    assert query(con, "SELECT DISTINCT model, source, campaign_id FROM raw.routing") == [("offline-cheap", "spec", CAMPAIGN)]
    assert insert_rows(con, "routing", frame.head(0)) == 0
    assert count(con, "routing") == 3


def test_replace_partition_only_touches_its_day_and_campaign(con) -> None:
    yesterday = DAY - timedelta(days=1)
    insert_rows(con, "routing", routing_rows(DAY, CAMPAIGN, "offline-cheap"))
    insert_rows(con, "routing", routing_rows(yesterday, CAMPAIGN, "offline-cheap"))
    insert_rows(con, "routing", routing_rows(DAY, OTHER_CAMPAIGN, "offline-cheap"))

    with transaction(con):
        written = replace_partition(con, "routing", DAY, routing_rows(DAY, CAMPAIGN, "offline-premium").head(2), CAMPAIGN)
    assert written == 2

    rows = query(
        con,
        "SELECT partition_day, campaign_id, model, count(*) FROM raw.routing GROUP BY ALL ORDER BY partition_day, campaign_id",
    )
    assert sorted(rows) == sorted(
        [
            (yesterday, CAMPAIGN, "offline-cheap", 3),
            (DAY, CAMPAIGN, "offline-premium", 2),
            (DAY, OTHER_CAMPAIGN, "offline-cheap", 3),
        ]
    )

    # Replacing with nothing empties that partition only.
    assert replace_partition(con, "routing", DAY, routing_rows(DAY, CAMPAIGN, "x").head(0), CAMPAIGN) == 0
    assert count(con, "routing", "partition_day = ? AND campaign_id = ?", [DAY, CAMPAIGN]) == 0
    assert count(con, "routing") == 6


def test_replace_partition_inside_a_failed_transaction_keeps_the_old_rows(con) -> None:
    insert_rows(con, "routing", routing_rows(DAY, CAMPAIGN, "offline-cheap"))
    bad = routing_rows(DAY, CAMPAIGN, "offline-premium").assign(stage=None)  # violates NOT NULL
    with pytest.raises(duckdb.ConstraintException):
        with transaction(con):
            replace_partition(con, "routing", DAY, bad, CAMPAIGN)
    assert query(con, "SELECT DISTINCT model FROM raw.routing") == [("offline-cheap",)]
    assert count(con, "routing") == 3


# --- fetch_one ---------------------------------------------------------------------------------


def test_fetch_one_returns_the_first_row_or_none(con) -> None:
    add_leads(con, LEADS)
    first = fetch_one(con, "SELECT email FROM raw.leads ORDER BY email")
    assert first == (min(lead.email for lead in LEADS),)
    assert fetch_one(con, "SELECT email FROM raw.leads WHERE company_size > ?", [10**6]) is None
    assert fetch_one(con, "SELECT $n + 1", {"n": 41}) == (42,)


def test_fetch_one_consumes_the_result_so_register_works_right_after(con) -> None:
    # A result far larger than one fetch chunk: only full consumption leaves the connection free.
    assert fetch_one(con, "SELECT range AS n FROM range(200000) ORDER BY n") == (0,)
    con.register("_after", pd.DataFrame({"n": [1, 2, 3]}))
    assert query(con, "SELECT sum(n) FROM _after") == [(6,)]
    con.unregister("_after")

    # ... which is why the line cannot use a plain fetchone here (the premise of fetch_one).
    con.execute("SELECT range AS n FROM range(200000)").fetchone()
    with pytest.raises(duckdb.Error, match="(?i)unfinished result"):
        con.register("_refused", pd.DataFrame({"n": [1]}))


def test_insert_rows_works_right_after_fetch_one(con) -> None:
    # insert_rows registers a frame: the sequence every stage runs (read a guard, then write).
    add_leads(con, LEADS[:1])
    assert fetch_one(con, "SELECT count(*) FROM raw.leads")[0] == 1
    add_leads(con, LEADS[1:])
    assert count(con, "leads") == len(LEADS)


# --- file register -----------------------------------------------------------------------------


def test_file_register_records_imported_and_rejected_files(con, tmp_path: Path) -> None:
    good = tmp_path / "leads_2026-03-02.csv"
    good.write_text("email,first_name\nanna.berg@northwind-labs.example,Anna\n", encoding="utf-8")
    bad = tmp_path / "leads_broken.csv"
    bad.write_text("", encoding="utf-8")
    good_sha, bad_sha = file_sha256(good), file_sha256(bad)
    assert good_sha == hashlib.sha256(good.read_bytes()).hexdigest()
    assert bad_sha == hashlib.sha256(b"").hexdigest()

    run = run_for()
    register_file(con, run, "leads", good, good_sha, (1, 1, 0))
    register_file(con, run, "leads", bad, bad_sha, error=f"{bad}: the file is empty")

    assert registered_hashes(con, "leads") == {good_sha, bad_sha}
    rows = query(
        con,
        """SELECT file_path, kind, partition_day, run_id, campaign_id, rows_total, rows_accepted, rows_quarantined, status, error
           FROM raw.intake_files ORDER BY file_path""",
    )
    assert rows == [
        (str(good), "leads", DAY, run.run_id, SPEC.campaign_id, 1, 1, 0, "imported", None),
        (str(bad), "leads", DAY, run.run_id, SPEC.campaign_id, 0, 0, 0, "rejected", f"{bad}: the file is empty"),
    ]
    # The same content cannot be registered twice, whatever its name.
    with pytest.raises(duckdb.ConstraintException):
        register_file(con, run, "leads", tmp_path / "renamed.csv", good_sha, (1, 1, 0))


def test_connect_adds_columns_a_newer_contract_introduced(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    old.execute("CREATE SCHEMA raw")
    old.execute(
        "CREATE TABLE raw.routing (partition_day DATE NOT NULL, run_id VARCHAR, campaign_id VARCHAR, stage VARCHAR, model VARCHAR, source VARCHAR, recorded_at TIMESTAMP)"
    )
    old.execute("INSERT INTO raw.routing VALUES ('2026-01-01', 'r', 'c', 'draft', 'm', 'spec', now()::TIMESTAMP)")
    old.close()
    with connect(path) as con:
        columns = dict(
            query(
                con,
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = 'routing'",
            )
        )
        assert columns["fallbacks"] == "VARCHAR[]" and columns["mode"] == "VARCHAR"
        assert count(con, "routing") == 1  # the old row is kept
        tables = {r[0] for r in query(con, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'")}
    assert tables == set(RAW_TABLES)


def test_a_warehouse_from_before_the_drafts_stage_and_cost_gets_them_from_the_calls_once(
    tmp_path: Path, engine_url: str | None
) -> None:
    """drafts.stage and cost_usd are copied from each draft's raw.llm_calls row when a newer version first adds them
    (a draft whose call is missing keeps nulls), on both engines; once: a later connection fills nothing."""
    with connect(tmp_path / "warehouse.duckdb", url=engine_url) as con:
        for column in ("stage", "cost_usd"):
            con.execute(f"ALTER TABLE raw.drafts DROP COLUMN {column}")  # as a version from before wrote it
        con.execute(
            """INSERT INTO raw.llm_calls (call_id, run_id, partition_day, campaign_id, stage, provider, model, prompt_version,
                                          tokens_in, tokens_out, cost_usd, latency_ms, status, mode, retries, reasks,
                                          cache_hit, fallback_used, created_at)
               VALUES ('k1', 'r', DATE '2026-01-01', 'c', 'draft', 'offline', 'cheap', 'p', 1, 1, 0.25, 0, 'ok', 'online',
                       0, 0, false, false, TIMESTAMP '2026-01-01 09:00:00'),
                      ('k2', 'r', DATE '2026-01-01', 'c', 'repair', 'offline', 'cheap', 'p', 1, 1, 0.5, 0, 'ok', 'online',
                       0, 0, false, false, TIMESTAMP '2026-01-01 09:00:00')"""
        )
        con.execute(
            """INSERT INTO raw.drafts (draft_id, partition_day, run_id, campaign_id, lead_id, arm_id, candidate_index,
                                       attempt, model, prompt_version, llm_call_id, created_at)
               VALUES ('d1', DATE '2026-01-01', 'r', 'c', 'l', 'a', 0, 0, 'cheap', 'p', 'k1', TIMESTAMP '2026-01-01 09:00:00'),
                      ('d2', DATE '2026-01-01', 'r', 'c', 'l', 'a', 0, 1, 'cheap', 'p', 'k2', TIMESTAMP '2026-01-01 09:00:00'),
                      ('d3', DATE '2026-01-01', 'r', 'c', 'l', 'a', 0, 2, 'cheap', 'p', 'gone', TIMESTAMP '2026-01-01 09:00:00')"""
        )
        ensure_raw_schema(con)  # what a newer version's first connection does
        filled = "SELECT draft_id, stage, cost_usd FROM raw.drafts ORDER BY draft_id"
        assert query(con, filled) == [("d1", "draft", 0.25), ("d2", "repair", 0.5), ("d3", None, None)]
        con.execute("UPDATE raw.drafts SET stage = NULL WHERE draft_id = 'd1'")
        ensure_raw_schema(con)
        assert query(con, filled)[0] == ("d1", None, 0.25)
