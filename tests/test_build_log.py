"""Which dbt build a campaign's run reuses on the PostgreSQL warehouse (learning/build_log.py), on a real PostgreSQL."""

from __future__ import annotations

import time
from datetime import date

from factory_dagster.learning.build_log import covering_build, database_now, record_build
from factory_dagster.warehouse.store import connect

DAY = date(2026, 3, 2)


def test_a_build_that_started_after_the_request_covers_it_and_an_earlier_or_failed_one_does_not(postgres_dsn, tmp_path) -> None:
    with connect(tmp_path / "unused.duckdb", url=postgres_dsn) as con:
        before = database_now(con)
        time.sleep(0.01)
        first = record_build(con, "run-a", "campaign-a", DAY, database_now(con), success=True)
        assert covering_build(con, before) == first
        assert first.started_at <= first.finished_at
        asked = database_now(con)  # after the first build started: it cannot hold what was written since
        time.sleep(0.01)
        assert covering_build(con, asked) is None
        record_build(con, "run-b", "campaign-b", DAY, database_now(con), success=False)
        assert covering_build(con, asked) is None  # a failed build is never reused
        time.sleep(0.01)
        later = record_build(con, "run-c", "campaign-c", DAY, database_now(con), success=True)
        assert covering_build(con, before) == later  # the latest that covers
        assert not (tmp_path / "unused.duckdb").exists()
