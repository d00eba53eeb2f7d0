"""The store's raw contracts and write primitives on a real PostgreSQL, side by side with DuckDB.

Each test writes the same frames through the same `store` functions to a DuckDB file and to a fresh database of a
throwaway PostgreSQL cluster (tests/postgres_server.py), and reads both back: the two warehouses must agree.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import psycopg
import pytest

from factory_dagster.settings import Paths
from factory_dagster.warehouse import pg_server, postgres, store
from factory_dagster.warehouse.contracts import RAW_TABLES
from factory_dagster.warehouse.store import insert_rows, replace_partition, transaction

DAY = date(2026, 3, 2)
NEXT_DAY = date(2026, 3, 3)

# How each DuckDB type of the contracts must show in PostgreSQL's information_schema (data_type, or udt_name of arrays).
EXPECTED_TYPES = {
    "VARCHAR": "text",
    "VARCHAR[]": "_text",
    "DOUBLE": "double precision",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "BOOLEAN": "boolean",
    "DATE": "date",
    "TIMESTAMP": "timestamp without time zone",
}


def expected_type(duckdb_type: str) -> str:
    return "jsonb" if duckdb_type.startswith(("MAP(", "STRUCT(")) else EXPECTED_TYPES[duckdb_type]


@contextmanager
def both(tmp_path: Path, dsn: str) -> Iterator[tuple[duckdb.DuckDBPyConnection, psycopg.Connection]]:
    with store.connect(tmp_path / "warehouse.duckdb") as duck, postgres.connect_postgres(dsn) as pg:
        # DuckDB turns a zone-aware frame column into its session's time zone (the machine's), the PostgreSQL store
        # always into UTC; the line writes naive UTC, so only the zone-aware column of these tests depends on this.
        duck.execute("SET TimeZone = 'UTC'")
        yield duck, pg


def rows_of(con: duckdb.DuckDBPyConnection | psycopg.Connection, table: str, order_by: str) -> list[tuple]:
    return [tuple(row) for row in con.execute(f"SELECT * FROM raw.{table} ORDER BY {order_by}").fetchall()]


def count(con: duckdb.DuckDBPyConnection | psycopg.Connection, table: str) -> int:
    return con.execute(f"SELECT count(*) FROM raw.{table}").fetchall()[0][0]


# ---- the contracts ----


def _columns(con, type_column: str) -> dict[str, list[tuple]]:
    found: dict[str, list[tuple]] = {}
    for table, column, data_type, nullable in con.execute(
        f"""SELECT table_name, column_name, {type_column}, is_nullable FROM information_schema.columns
            WHERE table_schema = 'raw' ORDER BY table_name, ordinal_position"""
    ).fetchall():
        found.setdefault(table, []).append((column, data_type, nullable))
    return found


def _keys(con) -> set[tuple]:
    """(table, PRIMARY KEY or UNIQUE, its columns in order) of every key in `raw`."""
    rows = con.execute(
        """SELECT c.table_name, c.constraint_type, c.constraint_name, k.column_name, k.ordinal_position
           FROM information_schema.table_constraints c
           JOIN information_schema.key_column_usage k
             ON k.constraint_name = c.constraint_name AND k.table_schema = c.table_schema AND k.table_name = c.table_name
           WHERE c.table_schema = 'raw' AND c.constraint_type IN ('PRIMARY KEY', 'UNIQUE')"""
    ).fetchall()
    keys: dict[tuple, list[tuple]] = {}
    for table, kind, name, column, position in rows:
        keys.setdefault((table, kind, name), []).append((position, column))
    return {(table, kind, tuple(c for _, c in sorted(cols))) for (table, kind, _), cols in keys.items()}


def test_every_raw_table_has_the_same_columns_types_and_keys_on_both(tmp_path: Path, postgres_dsn: str) -> None:
    with both(tmp_path, postgres_dsn) as (duck, pg):
        store.ensure_raw_schema(pg)  # a second time: idempotent
        duck_columns = _columns(duck, "data_type")
        pg_columns = _columns(pg, "CASE WHEN data_type = 'ARRAY' THEN udt_name ELSE data_type END")
        assert set(pg_columns) == set(duck_columns) == set(RAW_TABLES)
        for table, columns in duck_columns.items():
            assert pg_columns[table] == [(name, expected_type(kind), nullable) for name, kind, nullable in columns], table
        duck_keys, pg_keys = _keys(duck), _keys(pg)
        assert pg_keys == duck_keys
        assert ("messages", "UNIQUE", ("send_id",)) in pg_keys
        assert ("intake_files", "PRIMARY KEY", ("kind", "campaign_id", "file_sha256")) in pg_keys


def test_ensure_raw_schema_adds_a_column_a_newer_contract_introduced(postgres_dsn: str) -> None:
    with postgres.connect_postgres(postgres_dsn) as pg:
        pg.execute("ALTER TABLE raw.leads DROP COLUMN note")
        pg.execute("DROP TABLE raw.suppression")
        postgres.connect_postgres(postgres_dsn).close()  # a new process connecting migrates the warehouse
        nullable = pg.execute(
            "SELECT is_nullable FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = 'leads' AND column_name = 'note'"
        ).fetchall()
        assert nullable == [("YES",)]
        assert count(pg, "suppression") == 0


def test_a_contract_type_without_a_postgres_mapping_raises_naming_table_and_column() -> None:
    contract = "widget_id VARCHAR NOT NULL PRIMARY KEY, shape GEOMETRY NOT NULL, tags VARCHAR[]"
    with pytest.raises(postgres.ContractTypeError, match=r"raw\.widgets\.shape: the contract's type 'GEOMETRY'"):
        postgres.postgres_ddl("widgets", contract)
    with pytest.raises(postgres.ContractTypeError, match=r"raw\.widgets\.counts: .*'HUGEINT\[\]'"):
        postgres.postgres_ddl("widgets", "widget_id VARCHAR, counts HUGEINT[]")
    ddl = postgres.postgres_ddl(
        "widgets", "widget_id VARCHAR NOT NULL PRIMARY KEY, seen DATE DEFAULT '2026-01-01', tags VARCHAR[]"
    )
    assert (
        '"widget_id" TEXT NOT NULL PRIMARY KEY' in ddl and "\"seen\" DATE DEFAULT '2026-01-01'" in ddl and '"tags" TEXT[]' in ddl
    )


# ---- writes ----


def _gate_results() -> pd.DataFrame:
    """Lists (one empty), booleans, doubles, and timestamps both naive UTC and zone-aware (Paris, UTC+1 in March)."""
    return pd.DataFrame(
        {
            "draft_id": ["d1", "d2", "d3"],
            "partition_day": [DAY, DAY, NEXT_DAY],
            "run_id": "run-1",
            "campaign_id": "camp-a",
            "lead_id": ["l1", "l2", "l3"],
            "arm_id": "arm-1",
            "attempt": [1, 2, 1],
            "model": "offline-cheap",
            "prompt_version": "draft-v1",
            "passed": [True, False, np.True_],
            "violation_codes": [[], ["over_length", "no_cta"], np.array(["banned_phrase"], dtype=object)],
            "violation_details": [[], ["142 words > 120", "no call to action"], ["'synergy'"]],
            "agreement": [1.0, 0.5, np.float64(0.25)],
            "selected": [True, False, False],
            "created_at": pd.to_datetime(
                ["2026-03-02 09:00:00.000000", "2026-03-02 10:30:00.123456", "2026-03-03 00:15:00.000000"]
            ),
        }
    )


def _allocations() -> pd.DataFrame:
    """Nulls of every kind: NaN in an INTEGER column (pandas made it float), None, NaN doubles, missing columns."""
    return pd.DataFrame(
        {
            "partition_day": pd.to_datetime([DAY, DAY]),  # datetime64 into a DATE column
            "run_id": "run-1",
            "campaign_id": "camp-a",
            "policy_version": "ts-v1",
            "segment": ["general", "enterprise_finance"],
            "arm_id": ["a1", "a2"],
            "angle": "close_speed",
            "prompt_version": "draft-v1",
            "model": "offline-cheap",
            "sends": [10, 0],
            "replies": [1, 0],
            "posterior_mean": [0.1, 0.05],
            "p_best": [0.7, 0.3],
            "share": [0.6, 0.4],
            "reason": "thompson",
            "created_at": pd.to_datetime(["2026-03-02 08:00", "2026-03-02 08:00"]).tz_localize("Europe/Paris"),
            "positive_replies": [3.0, np.nan],
            "holdout": [None, True],
            "experiment_id": [None, "exp-1"],
            "angle_share": [np.nan, 0.5],
        }
    )


def _audits() -> pd.DataFrame:
    """A MAP column (JSONB on PostgreSQL)."""
    return pd.DataFrame(
        {
            "audit_id": ["a1", "a2"],
            "partition_day": DAY,
            "run_id": "run-1",
            "campaign_id": "camp-a",
            "message_id": ["m1", "m2"],
            "lead_id": ["l1", "l2"],
            "model": "offline-premium",
            "prompt_version": "audit-v1",
            "llm_call_id": [None, "c2"],
            "status": "audited",
            "scores": [{"tone": 4, "clarity": 5}, {}],
            "passed": [True, False],
            "reasons": ["fine", "vague"],
            "created_at": datetime(2026, 3, 2, 12, 0),
        }
    )


def _experiment_events() -> pd.DataFrame:
    """A nullable DATE with NaT and a nullable run_id (a person acting from the CLI)."""
    return pd.DataFrame(
        {
            "event_id": ["e1", "e2"],
            "experiment_id": "exp-1",
            "campaign_id": "camp-a",
            "run_id": ["run-1", None],
            "partition_day": [pd.Timestamp(DAY), pd.NaT],
            "from_state": ["proposed", "approved"],
            "to_state": ["approved", "running"],
            "actor": ["policy", "ana@example.com"],
            "reason": ["auto", "go"],
            "evidence_json": "{}",
            "occurred_at": pd.to_datetime(["2026-03-02 07:00", "2026-03-02 07:05"]),
        }
    )


FRAMES = {
    "gate_results": (_gate_results, "draft_id"),
    "allocations": (_allocations, "arm_id"),
    "audits": (_audits, "audit_id"),
    "experiment_events": (_experiment_events, "event_id"),
}


def test_insert_rows_round_trips_lists_nulls_timestamps_and_dates_identically(tmp_path: Path, postgres_dsn: str) -> None:
    with both(tmp_path, postgres_dsn) as (duck, pg):
        for table, (frame, key) in FRAMES.items():
            assert insert_rows(duck, table, frame()) == insert_rows(pg, table, frame()) == len(frame())
            assert rows_of(pg, table, key) == rows_of(duck, table, key), table
        gate = dict(
            zip(
                [d[0] for d in pg.execute("SELECT * FROM raw.gate_results").description],
                rows_of(pg, "gate_results", "draft_id")[1],
            )
        )
        assert gate["violation_codes"] == ["over_length", "no_cta"] and gate["created_at"] == datetime(
            2026, 3, 2, 10, 30, 0, 123456
        )
        # Paris 08:00 in March is 07:00 UTC; NaN in an INTEGER column is NULL; the columns the frame lacks are NULL too.
        assert pg.execute("SELECT created_at, positive_replies, routing_arm FROM raw.allocations ORDER BY arm_id").fetchall() == [
            (datetime(2026, 3, 2, 7, 0), 3, None),
            (datetime(2026, 3, 2, 7, 0), None, None),
        ]
        assert pg.execute("SELECT scores -> 'clarity' FROM raw.audits WHERE audit_id = 'a1'").fetchone() == (5,)


def test_a_frame_with_a_column_the_contract_lacks_or_a_fractional_integer_is_refused(tmp_path: Path, postgres_dsn: str) -> None:
    frame = _experiment_events().assign(colour="red")
    with both(tmp_path, postgres_dsn) as (duck, pg):
        with pytest.raises(duckdb.BinderException):
            insert_rows(duck, "experiment_events", frame)
        with pytest.raises(ValueError, match=r"raw\.experiment_events has no column 'colour'"):
            insert_rows(pg, "experiment_events", frame)
        with pytest.raises(
            ValueError, match=r"raw\.allocations\.positive_replies is INTEGER: row 1 of the frame has the non-integer value 2\.5"
        ):
            insert_rows(pg, "allocations", _allocations().assign(positive_replies=[3.0, 2.5]))
        assert count(pg, "experiment_events") == count(pg, "allocations") == count(duck, "experiment_events") == 0


def _suppression(emails: list[str], reason: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"email": emails, "reason": reason, "source": "test", "partition_day": DAY, "added_at": datetime(2026, 3, 2, 9)}
    )


def test_skip_existing_leaves_out_colliding_rows_and_writes_nothing_when_all_collide(tmp_path: Path, postgres_dsn: str) -> None:
    with both(tmp_path, postgres_dsn) as (duck, pg):
        for con in (duck, pg):
            assert insert_rows(con, "suppression", _suppression(["a@x.com", "b@x.com"], "unsubscribed")) == 2
            assert insert_rows(con, "suppression", _suppression(["a@x.com", "b@x.com"], "bounced"), skip_existing=True) == 0
            # one new, one already there, and one repeated inside the frame: the first of the frame's rows wins
            frame = _suppression(["c@x.com", "a@x.com", "c@x.com"], "complaint").assign(source=["first", "again", "second"])
            assert insert_rows(con, "suppression", frame, skip_existing=True) == 1
            with pytest.raises((duckdb.ConstraintException, psycopg.errors.UniqueViolation)):
                insert_rows(con, "suppression", _suppression(["d@x.com", "a@x.com"], "bounced"))
        expected = [
            ("a@x.com", "unsubscribed", "test", DAY, datetime(2026, 3, 2, 9)),
            ("b@x.com", "unsubscribed", "test", DAY, datetime(2026, 3, 2, 9)),
            ("c@x.com", "complaint", "first", DAY, datetime(2026, 3, 2, 9)),
        ]
        assert rows_of(duck, "suppression", "email") == rows_of(pg, "suppression", "email") == expected


def _routing(day: date, campaign: str, stages: list[str], run_id: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "partition_day": day,
            "run_id": run_id,
            "campaign_id": campaign,
            "stage": stages,
            "model": "offline-cheap",
            "fallbacks": [["offline-premium"]] * len(stages),
            "mode": "offline",
            "source": "spec",
            "recorded_at": datetime(2026, 3, 2, 6),
        }
    )


def test_replace_partition_replaces_exactly_one_day_of_one_campaign(tmp_path: Path, postgres_dsn: str) -> None:
    with both(tmp_path, postgres_dsn) as (duck, pg):
        for con in (duck, pg):
            for day in (DAY, NEXT_DAY):
                for campaign in ("camp-a", "camp-b"):
                    insert_rows(con, "routing", _routing(day, campaign, ["draft", "plan", "gate"], "run-1"))
            with transaction(con):
                assert replace_partition(con, "routing", DAY, _routing(DAY, "camp-a", ["draft", "audit"], "run-2"), "camp-a") == 2
        order = "partition_day, campaign_id, stage"
        assert rows_of(duck, "routing", order) == rows_of(pg, "routing", order)
        partitions = pg.execute(
            "SELECT partition_day, campaign_id, string_agg(stage || '@' || run_id, ',' ORDER BY stage) FROM raw.routing GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        assert partitions == [
            (DAY, "camp-a", "audit@run-2,draft@run-2"),
            (DAY, "camp-b", "draft@run-1,gate@run-1,plan@run-1"),
            (NEXT_DAY, "camp-a", "draft@run-1,gate@run-1,plan@run-1"),
            (NEXT_DAY, "camp-b", "draft@run-1,gate@run-1,plan@run-1"),
        ]


def test_a_failed_insert_inside_a_transaction_leaves_nothing(tmp_path: Path, postgres_dsn: str) -> None:
    missing_reason = _suppression(["z@x.com"], "bounced").assign(reason=[None])  # NOT NULL broken
    with both(tmp_path, postgres_dsn) as (duck, pg):
        for con in (duck, pg):
            insert_rows(con, "routing", _routing(DAY, "camp-a", ["draft"], "run-1"))
            with pytest.raises((duckdb.ConstraintException, psycopg.errors.NotNullViolation)), transaction(con):
                assert insert_rows(con, "experiment_events", _experiment_events()) == 2
                replace_partition(con, "routing", DAY, _routing(DAY, "camp-a", ["plan"], "run-2"), "camp-a")
                insert_rows(con, "suppression", missing_reason)
            assert count(con, "experiment_events") == count(con, "suppression") == 0
            assert con.execute("SELECT stage, run_id FROM raw.routing").fetchall() == [("draft", "run-1")]
            # the connection is usable afterwards, and a skip_existing insert in a failed block leaves nothing either
            with pytest.raises(RuntimeError), transaction(con):
                insert_rows(con, "suppression", _suppression(["y@x.com"], "bounced"), skip_existing=True)
                raise RuntimeError("the stage failed after writing")
            assert count(con, "suppression") == 0


# ---- connections, settings and the server ----


def test_a_password_in_the_warehouse_url_is_never_shown() -> None:
    port = pg_server.free_port()  # nothing listens there
    url = f"postgresql://factory:s3cret-pw@127.0.0.1:{port}/factory?sslmode=disable"
    with pytest.raises(postgres.WarehouseConnectionError) as caught:
        postgres.connect_postgres(url, connect_timeout_s=2)
    message = str(caught.value)
    assert "s3cret-pw" not in message and f"postgresql://factory:***@127.0.0.1:{port}/factory" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert (
        postgres.mask_dsn("host=db user=factory password='p w' dbname=factory")
        == "host=db user=factory password=*** dbname=factory"
    )
    assert (
        postgres.mask_dsn("postgresql://u@h/db?password=abc&sslmode=require")
        == "postgresql://u@h/db?password=%2A%2A%2A&sslmode=require"
    )


def test_factory_warehouse_url_is_read_once_and_kept_out_of_the_repr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACTORY_HOME", str(tmp_path))
    assert Paths.from_env().warehouse_url is None
    monkeypatch.setenv("FACTORY_WAREHOUSE_URL", "postgresql://factory:s3cret-pw@127.0.0.1:5432/factory")
    paths = Paths.from_env()
    assert paths.warehouse_url == "postgresql://factory:s3cret-pw@127.0.0.1:5432/factory"
    assert "s3cret-pw" not in repr(paths) and paths.warehouse == tmp_path.resolve() / "warehouse.duckdb"


def test_the_server_runs_as_a_non_root_user_on_loopback_only(postgres_server: pg_server.PostgresServer) -> None:
    pid = int((postgres_server.data_dir / "postmaster.pid").read_text().splitlines()[0])
    owner = os.stat(f"/proc/{pid}").st_uid
    assert owner != 0
    if os.geteuid() == 0:
        assert pwd.getpwuid(owner).pw_name == pg_server.SERVER_USER
    with psycopg.connect(postgres_server.dsn()) as con:
        assert con.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert con.execute("SHOW fsync").fetchone() == ("off",)


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user: only root can, and only root needs one")
def test_workers_creating_the_server_user_at_once_all_get_the_one_that_exists(tmp_path: Path) -> None:
    name = f"factory-t{os.getpid() % 100000}"
    # Interpreters of their own, as xdist's workers are. A pool forked from this multi-threaded process hung once in
    # make test until the test's timeout (a fork copies locks other threads hold; a new interpreter has none). Each
    # waits, imported, for the same go before it asks, so that their `useradd`s overlap: without the lock in
    # pg_server.system_user they come back with two uids.
    ask = (
        "import sys, time; from pathlib import Path; from factory_dagster.warehouse.pg_server import system_user\n"
        "Path(sys.argv[3]).touch()\n"
        "while not Path(sys.argv[2]).exists(): time.sleep(0.001)\n"
        "print(system_user(sys.argv[1]).pw_uid)"
    )
    go = tmp_path / "go"
    try:
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", ask, name, str(go), str(tmp_path / f"ready-{n}")],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(8)
        ]
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ready-*"))) < len(workers):  # every one imported and waiting
            assert time.monotonic() < deadline and all(w.poll() is None for w in workers), "an interpreter did not start"
            time.sleep(0.01)
        go.touch()
        answers = [worker.communicate(timeout=60) for worker in workers]
        assert [worker.returncode for worker in workers] == [0] * 8, [err for _, err in answers]
        assert {int(out) for out, _ in answers} == {pwd.getpwnam(name).pw_uid}
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)
        subprocess.run(["groupdel", name], capture_output=True, check=False)


def test_a_missing_postgresql_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(pg_server.PostgresServerError, match=r"apt-get install postgresql"):
        pg_server.find_bin_dir([tmp_path, tmp_path / "nothing"])


def test_factory_postgres_starts_reports_and_stops_a_development_cluster(capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    pg_server.register(parser.add_subparsers(dest="command"))
    folder = Path(tempfile.mkdtemp(prefix="factory-pg-cli-"))
    folder.chmod(0o755)  # mkdtemp's 0700 would keep the server user out (the command says so; see pg_server)
    port = pg_server.free_port()
    paths = Paths.under(folder)
    try:

        def run(*argv: str) -> int:
            args = parser.parse_args(["postgres", *argv])
            return args.run(args, paths)

        assert run("start", "--dir", str(folder / "pg"), "--port", str(port)) == 0
        url = f"postgresql://factory@127.0.0.1:{port}/factory"
        assert f"FACTORY_WAREHOUSE_URL={url}" in capsys.readouterr().out
        with postgres.connect_postgres(url) as con:  # the database exists and takes the contracts
            assert insert_rows(con, "suppression", _suppression(["a@x.com"], "bounced")) == 1
        assert run("status", "--dir", str(folder / "pg")) == 0
        assert run("stop", "--dir", str(folder / "pg")) == 0
        assert run("status", "--dir", str(folder / "pg")) == 1
        assert run("start", "--dir", str(folder / "pg"), "--port", str(port)) == 0  # again: the data stayed
        with postgres.connect_postgres(url) as con:
            assert count(con, "suppression") == 1
    finally:
        server = pg_server.running(folder / "pg")
        if server:
            pg_server.stop(server)
        shutil.rmtree(folder, ignore_errors=True)
