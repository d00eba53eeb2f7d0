"""The `scale` benchmark's replication SQL on a tiny warehouse: copies keep every key consistent and unique.

Guards the benchmark from rotting when a raw contract changes: a new key column the replication does not
suffix would make the copies collide (or point at rows of another copy).
"""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import pytest

from benchmarks.scale import EMAIL_COLUMNS, ID_COLUMNS, REPLICATED, benchmark_spec, copies_for, replicate
from factory_dagster.campaign.spec import load_spec
from factory_dagster.warehouse.store import ensure_raw_schema

DAY = date(2026, 1, 1)


def _value(name: str, data_type: str) -> str:
    """A SQL literal for one column of the single seed row: the same ids in every table, so they join."""
    if name in ID_COLUMNS:
        return f"'{name}-1'"
    if name in EMAIL_COLUMNS:
        return "'ada@example.example'"
    if data_type == "DATE":
        return f"DATE '{DAY}'"
    if data_type.startswith("TIMESTAMP"):
        return f"TIMESTAMP '{DAY} 08:00:00'"
    if data_type.endswith("[]"):
        return "[]"
    if data_type.startswith("MAP"):
        return "MAP {}"
    return {"BOOLEAN": "true", "INTEGER": "1", "DOUBLE": "0.5", "BIGINT": "1"}.get(data_type, "'x'")


@pytest.fixture
def warehouse(tmp_path):
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    ensure_raw_schema(con)
    for table in REPLICATED:
        columns = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = ? "
            "ORDER BY ordinal_position",
            [table],
        ).fetchall()
        con.execute(f"INSERT INTO raw.{table} VALUES ({', '.join(_value(n, t) for n, t in columns)})")
    yield con
    con.close()


def test_every_key_of_a_replicated_table_is_suffixed(warehouse):
    """Each PRIMARY KEY / UNIQUE constraint of a replicated table has a column the copies make distinct."""
    constraints = warehouse.execute(
        """SELECT table_name, constraint_column_names FROM duckdb_constraints()
           WHERE schema_name = 'raw' AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')"""
    ).fetchall()
    keyed = [(table, columns) for table, columns in constraints if table in REPLICATED]
    assert keyed, "the replicated tables have keys"
    for table, columns in keyed:
        assert set(columns) & (ID_COLUMNS | EMAIL_COLUMNS), f"raw.{table} key {columns} would collide across copies"


def test_copies_multiply_rows_with_consistent_ids_and_shifted_days(warehouse):
    counts = replicate(warehouse, copies=3, period_days=7, spread=2)
    assert counts == dict.fromkeys(REPLICATED, 3)
    # Every id column holds the seed's id and one suffixed id per copy, the same set in every table.
    for table in REPLICATED:
        for (column,) in warehouse.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = ?", [table]
        ).fetchall():
            if column in ID_COLUMNS:
                ids = {v for (v,) in warehouse.execute(f'SELECT "{column}" FROM raw.{table}').fetchall()}
                assert ids == {f"{column}-1", f"{column}-1~1", f"{column}-1~2"}, (table, column)
    orphans = warehouse.execute(
        "SELECT count(*) FROM raw.events e LEFT JOIN raw.sends s USING (send_id) WHERE s.send_id IS NULL"
    ).fetchone()[0]
    assert orphans == 0
    # A copy's rows keep their day across tables: event k joins the send of copy k on the same day.
    pairs = warehouse.execute(
        "SELECT e.partition_day, s.partition_day, e.occurred_at FROM raw.events e JOIN raw.sends s USING (send_id) ORDER BY 1"
    ).fetchall()
    # spread=2: copy 1 shifts by 7 days, copy 2 by (2 mod 2) x 7 = 0 days.
    assert [p[0] for p in pairs] == [DAY, DAY, DAY + timedelta(days=7)]
    assert all(event_day == send_day and occurred.date() == event_day for event_day, send_day, occurred in pairs)
    emails = warehouse.execute("SELECT email FROM raw.leads ORDER BY 1").fetchall()
    assert len(set(emails)) == 3


def test_copies_for_rounds_up_and_refuses_an_empty_seed():
    assert copies_for(449, 10_000_000) == 22_272  # 449 x 22,272 = 10,000,128 >= 10M
    assert copies_for(10, 10) == 1
    with pytest.raises(ValueError, match="no events"):
        copies_for(0)


def test_benchmark_spec_raises_only_the_caps(tmp_path):
    spec = load_spec(benchmark_spec(tmp_path, 100_000))
    assert spec.limits.daily_send_cap == 100_000
    assert spec.limits.daily_budget_usd >= 1_000
    assert spec.limits.max_words == 140 and spec.campaign_id == "brightwave-close"
