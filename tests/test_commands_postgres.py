"""The `factory` commands with FACTORY_WAREHOUSE_URL set: `factory demo` runs its days, its summary and its report
from the PostgreSQL warehouse, and the operators' commands (experiments, versions, holds, kill switch, content,
report) read and write there. No DuckDB file is created: a command that still opened the file would find it empty
or missing, and its figures would not match the rows PostgreSQL holds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from factory_dagster.cli import main
from factory_dagster.settings import Paths
from factory_dagster.warehouse.pg_connection import PgConnection
from factory_dagster.warehouse.store import open_warehouse

DAYS = ("2026-01-01", "2026-01-02")
CAMPAIGN = "brightwave_close"  # one campaign: the second would only add its own run to the same code paths


def summary_rows(out: str) -> dict[str, list[str]]:
    """The demo's per-day table: day -> its cells (leads in, accepted, ..., sends, replies, reply rate, cost)."""
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if re.match(r"\s*2026-01-0\d\s", line)}


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_dsn: str, dbt_manifest) -> tuple[Paths, str]:
    """Two days of `factory demo` on a fresh PostgreSQL database, as a user with FACTORY_WAREHOUSE_URL would run it."""
    home = tmp_path / "home"
    monkeypatch.setenv("FACTORY_HOME", str(home))
    monkeypatch.setenv("FACTORY_WAREHOUSE_URL", postgres_dsn)
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))  # restored afterwards: the demo sets it for good
    return Paths.from_env(), postgres_dsn


def test_the_demo_its_summary_and_its_report_come_from_postgresql(
    demo: tuple[Paths, str], capsys: pytest.CaptureFixture[str]
) -> None:
    paths, dsn = demo
    argv = ["demo", "--days", str(len(DAYS)), "--start", DAYS[0], "--leads-per-day", "20", "--campaigns", CAMPAIGN]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert not paths.warehouse.exists()  # every step and every summary line used PostgreSQL
    assert f"warehouse: {dsn}" in out  # no password in the test server's URL: masking leaves it as it is
    with open_warehouse(paths, read_only=True) as con:
        assert isinstance(con, PgConnection)
        sends = dict(con.execute("SELECT partition_day::VARCHAR, count(*) FROM raw.sends GROUP BY 1").fetchall())
        kpis = dict(
            con.execute("SELECT day::VARCHAR, sends FROM marts.daily_kpis WHERE campaign_id = 'brightwave-close'").fetchall()
        )
        pieces, variants = con.execute("SELECT count(DISTINCT piece_id), count(*) FROM raw.content_pieces").fetchone()
        experiment = con.execute("SELECT experiment_id FROM raw.experiments WHERE campaign_id = 'brightwave-close'").fetchone()[0]
    # The summary table prints PostgreSQL's marts, and they count PostgreSQL's raw sends.
    table = summary_rows(out)
    assert sorted(table) == list(DAYS) and all(sends[day] > 0 for day in DAYS)
    assert {day: int(cells[7]) for day, cells in table.items()} == sends == kpis
    assert f"content line (brightwave-content): {pieces} pieces, {variants} variants" in out and variants > 0
    assert f"decision step, {DAYS[-1]}: {experiment}" in out  # the loop's lines read the marts there too
    # The report the demo wrote (the loop_report asset) and `factory report` read the same PostgreSQL rows.
    demo_figures = json.loads((paths.home / "reports" / "key_figures.json").read_text())
    assert demo_figures["sends"] == sum(sends.values()) and demo_figures["days"] == len(DAYS)
    assert main(["report", "--out", str(paths.home / "again")]) == 0
    assert json.loads((paths.home / "again" / "key_figures.json").read_text()) == demo_figures
    assert dsn in (paths.home / "again" / "index.html").read_text()
    # The operators' commands work on the same warehouse.
    capsys.readouterr()
    assert main(["experiments", "list"]) == 0
    assert experiment in capsys.readouterr().out
    assert main(["versions"]) == 0
    assert "v0" in capsys.readouterr().out
    assert main(["holds", "list"]) == 0
    assert "no days are held" in capsys.readouterr().out
    assert main(["kill-switch", "on", "--reason", "pause the test", "--actor", "ops"]) == 0
    assert main(["kill-switch", "status"]) == 0
    assert "ENGAGED (ops: pause the test)" in capsys.readouterr().out
    assert main(["content", "list", "--all"]) == 0
    assert f"\n{variants} variants\n" in capsys.readouterr().out
    assert not paths.warehouse.exists()
