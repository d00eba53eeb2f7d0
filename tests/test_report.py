"""`factory report`: the warehouse read into frames, the plots, the page and the command, on a tiny real
DuckDB file whose marts are built here with known rows, and on its copy in PostgreSQL (the end-to-end run on a real line warehouse,
opened in headless Chromium, is in test_line_integration.py)."""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from postgres_server import fresh_database
from scipy.stats import binomtest
from warehouse_copy import copy_warehouse
from warehouse_engines import ENGINES

from factory_dagster.report.cli import register
from factory_dagster.report.data import OUTCOME_WINDOW_DAYS, ReportData, ReportInputError, load_report_data
from factory_dagster.report.figures import MIN_EVENTS, key_figures, lift_with_interval, summary_markdown, wilson_interval
from factory_dagster.report.plots import HOLDOUT_BAND, MAX_ARMS, PLOTS, traffic_shares
from factory_dagster.report.write import write_report
from factory_dagster.settings import Paths
from factory_dagster.warehouse import postgres
from factory_dagster.warehouse.store import connect

CAMPAIGN = "alpha"
OTHER = "beta"
FIRST = date(2026, 3, 1)
DAYS = 10
LATEST_EVENT = FIRST + timedelta(days=DAYS)  # sends of the first 4 days are mature (>= 7 days old)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE_ARM = "<script>alert('arm')</script>|v1|$\\frac{$ & co"  # HTML and a broken mathtext formula


def _assignments(campaign: str, days: int, leads_per_day: int, first: date = FIRST) -> pd.DataFrame:
    """Leads per day over three arms (one with a hostile name), every tenth held out; the n-th lead's send
    gets a positive reply when n % 7 == 0, a delivery unless n % 11 == 0."""
    rows = []
    for d in range(days):
        day = first + timedelta(days=d)
        for i in range(leads_per_day):
            n = d * leads_per_day + i
            arm = ["close_speed|v1|cheap", "team_time|v1|cheap", HOSTILE_ARM][n % 3]
            rows.append(
                {
                    "partition_day": day,
                    "run_id": f"run-{day}",
                    "campaign_id": campaign,
                    "spec_version": "s1",
                    "lead_id": f"{campaign}-lead-{n}",
                    "segment": "general",
                    "arm_id": arm,
                    "angle": arm.split("|")[0],
                    "prompt_version": "v1",
                    "model": "cheap",
                    "propensity": 1 / 3,
                    "policy_version": "loop-v2",
                    "reason": "test",
                    "assigned_at": datetime(day.year, day.month, day.day, 6),
                    "holdout": i % 10 == 0,
                    "positive_reply": n % 7 == 0,
                    "delivered": n % 11 != 0,
                    "days_since_send": (LATEST_EVENT - day).days,
                }
            )
    return pd.DataFrame(rows)


def _build_marts(con, leads: pd.DataFrame) -> None:
    """The marts and the intermediate view the report reads, as tables holding the fixture's figures."""
    con.execute("CREATE SCHEMA IF NOT EXISTS marts; CREATE SCHEMA IF NOT EXISTS intermediate")
    contract = [c for c in leads.columns if c not in {"positive_reply", "delivered", "days_since_send"}]
    con.register("leads_frame", leads)
    con.execute(f"INSERT INTO raw.assignments BY NAME SELECT {', '.join(contract)} FROM leads_frame")
    con.execute(
        """CREATE TABLE intermediate.int_send_outcomes AS
           SELECT campaign_id, lead_id, partition_day, delivered, positive_reply, days_since_send FROM leads_frame"""
    )
    con.execute(
        """CREATE TABLE marts.daily_kpis AS
           SELECT campaign_id, partition_day AS day, count(*) + 1 AS leads_in, count(*) AS sends,
                  count(*) FILTER (WHERE positive_reply) + 1 AS replies, count(*) FILTER (WHERE positive_reply) AS positive_replies,
                  0 AS booked, 0 AS bounces, 1 AS unsubscribes, 0 AS complaints, 0.25 AS cost_usd
           FROM leads_frame GROUP BY ALL"""
    )
    con.unregister("leads_frame")
    con.execute(
        """CREATE TABLE marts.experiment_results AS SELECT * FROM (VALUES
             ('exp_1', 'alpha', 'prompt_version', 'running', 'v1', 'control', 1000, 120, DATE '2026-03-10', 120,
              0.010, 0.004, 0.020, NULL, 'continue', DATE '2026-03-02', NULL),
             ('exp_1', 'alpha', 'prompt_version', 'running', 'v2 <b>bold</b>', 'challenger', 1000, 40, DATE '2026-03-10', 40,
              0.015, 0.003, 0.040, 0.71, 'continue', DATE '2026-03-02', NULL),
             ('exp_2', 'alpha', 'routing', 'rolled_back', 'cheap', 'control', 500, 0, NULL, NULL,
              NULL, NULL, NULL, NULL, NULL, DATE '2026-03-01', DATE '2026-03-02'))
           AS t(experiment_id, campaign_id, kind, state, arm, role, planned_sample_size, mature_sends, look_day,
                look_mature_sends, posterior_mean, interval_low, interval_high, p_better, decision, started_day, concluded_day)"""
    )
    con.execute(
        """CREATE TABLE marts.llm_costs AS
           SELECT campaign_id, day, stage, model, 10 AS calls, cost AS cost_usd
           FROM (SELECT DISTINCT campaign_id, day FROM marts.daily_kpis),
                (VALUES ('draft', 'cheap', 0.20), ('audit', 'premium', 0.05)) AS t(stage, model, cost)"""
    )
    con.execute(
        """CREATE TABLE marts.model_stage_quality AS SELECT * FROM (VALUES
             ('alpha', 'draft', 'cheap', 300, 290, 2.0, 120, 6), ('alpha', 'repair', 'cheap', 10, 9, 0.01, 4, 0))
           AS t(campaign_id, stage, model, leads, accepted, cost_usd, mature_sends, positive_replies)"""
    )
    con.execute(
        """CREATE TABLE marts.gate_metrics AS
           SELECT campaign_id, day, 100 AS drafts, 80 AS passed FROM (SELECT DISTINCT campaign_id, day FROM marts.daily_kpis)"""
    )
    con.execute(
        """CREATE TABLE marts.gate_violations AS
           SELECT campaign_id, day, code AS violation_code, n AS drafts_flagged, n AS violations
           FROM (SELECT DISTINCT campaign_id, day FROM marts.daily_kpis),
                (VALUES ('too_long', 12), ('missing_cta', 8)) AS t(code, n)"""
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "warehouse.duckdb"
    leads = pd.concat([_assignments(CAMPAIGN, DAYS, 30), _assignments(OTHER, 2, 10, FIRST + timedelta(days=DAYS - 2))])
    with connect(path) as con:
        _build_marts(con, leads)
    return path


@pytest.fixture(scope="module", params=ENGINES)
def warehouse(request: pytest.FixtureRequest, built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paths]:
    """The data folder of the built warehouse: the DuckDB file, or its rows and marts copied into a fresh PostgreSQL
    database, named by the settings of another data folder that has no DuckDB file (as FACTORY_WAREHOUSE_URL would)."""
    if request.param == "duckdb":
        yield Paths.under(built.parent)
        return
    base = Paths.under(tmp_path_factory.mktemp("report_postgres"))
    with fresh_database(request.getfixturevalue("postgres_server")) as dsn:
        with connect(built, read_only=True) as source, postgres.connect_postgres(dsn) as target:
            copy_warehouse(source, target)
        yield Paths(base.home, base.warehouse, base.leads_inbox, base.spec, dsn)
        assert not base.warehouse.exists()  # the report read PostgreSQL, and never created the file


def load(paths: Paths, campaign: str | None = None, days: int | None = None) -> ReportData:
    return load_report_data(paths.warehouse, campaign, days, url=paths.warehouse_url)


def _expected(campaign: str = CAMPAIGN, days: int | None = None) -> pd.DataFrame:
    leads = (
        _assignments(CAMPAIGN, DAYS, 30) if campaign == CAMPAIGN else _assignments(OTHER, 2, 10, FIRST + timedelta(days=DAYS - 2))
    )
    if days is not None:
        leads = leads[leads.partition_day > leads.partition_day.max() - timedelta(days=days)]
    return leads


def test_key_figures_add_up_what_the_warehouse_holds(warehouse: Paths) -> None:
    figures = key_figures(load(warehouse, CAMPAIGN))
    leads = _expected()
    mature = leads[leads.days_since_send >= OUTCOME_WINDOW_DAYS]
    loop, holdout = mature[~mature.holdout], mature[mature.holdout]
    assert figures["campaigns"] == [CAMPAIGN]
    assert (figures["first_day"], figures["last_day"], figures["days"]) == (
        FIRST.isoformat(),
        (FIRST + timedelta(DAYS - 1)).isoformat(),
        DAYS,
    )
    assert figures["sends"] == len(leads) and figures["delivered"] == int(leads.delivered.sum())
    assert figures["positive_replies"] == int(leads.positive_reply.sum())
    assert figures["cost_per_positive_reply_usd"] == pytest.approx(0.25 * DAYS / leads.positive_reply.sum())
    assert (figures["loop_mature_sends"], figures["loop_positive_replies"]) == (len(loop), int(loop.positive_reply.sum()))
    assert (figures["holdout_mature_sends"], figures["holdout_positive_replies"]) == (
        len(holdout),
        int(holdout.positive_reply.sum()),
    )
    assert figures["experiments"] == 2 and figures["experiments_running"] == 1
    assert figures["gate_rejection_rate"] == pytest.approx(0.2) and figures["top_gate_reason"] == "too_long"
    assert figures["top_arm_last_day"] in set(leads.arm_id) and figures["arms_last_day"] == 3
    markdown = summary_markdown(figures)
    assert markdown.startswith("| figure | value |") and f"{len(leads):,}" in markdown
    assert "\\|v1\\|" in markdown  # a pipe inside an arm name does not break the table


def test_days_keeps_the_last_n_days_and_campaign_keeps_one(warehouse: Paths) -> None:
    data = load(warehouse, CAMPAIGN, days=3)
    assert data.since == FIRST + timedelta(DAYS - 3) and data.until == FIRST + timedelta(DAYS - 1)
    assert list(data.funnel.day.dt.date) == [FIRST + timedelta(d) for d in range(DAYS - 3, DAYS)]
    assert key_figures(data)["sends"] == len(_expected(days=3))
    # The last 3 days hold no mature send: the comparison has nothing yet, rather than old sends.
    assert data.holdout.empty
    # An experiment concluded before the window is left out.
    assert set(data.experiments.experiment_id) == {"exp_1"}
    both = key_figures(load(warehouse))
    assert both["campaigns"] == [CAMPAIGN, OTHER]
    assert both["sends"] == len(_expected()) + len(_expected(OTHER))
    assert key_figures(load(warehouse, OTHER))["sends"] == len(_expected(OTHER))


def test_an_unknown_campaign_or_a_bad_days_value_is_refused_by_name(warehouse: Paths) -> None:
    with pytest.raises(ReportInputError, match=r"'gamma' is not in the warehouse; it holds: alpha, beta"):
        load(warehouse, "gamma")
    with pytest.raises(ReportInputError, match="at least 1"):
        load(warehouse, days=0)


def test_wilson_interval_matches_scipy() -> None:
    for hits, trials in [(0, 62), (1, 62), (12, 1150), (30, 40)]:
        expected = binomtest(hits, trials).proportion_ci(method="wilson")
        low, high = wilson_interval(hits, trials)
        assert (low, high) == (pytest.approx(expected.low, abs=1e-9), pytest.approx(expected.high, abs=1e-9))
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_lift_interval_is_the_delta_method_on_the_log_ratio_and_waits_for_enough_replies() -> None:
    lift, low, high = lift_with_interval(50, 1000, 10, 400)  # 5.0% against 2.5%
    assert lift == pytest.approx(1.0)
    # By hand: se = sqrt(0.95/50 + 0.975/10) = 0.341321; exp(ln 2 ∓ 1.959964 × se) − 1.
    assert (low, high) == (pytest.approx(0.02444, abs=1e-4), pytest.approx(2.90454, abs=1e-4))
    assert math.log1p(low) + math.log1p(high) == pytest.approx(2 * math.log1p(lift))
    assert lift_with_interval(50, 1000, MIN_EVENTS - 1, 400)[1:] == (None, None)
    assert lift_with_interval(50, 1000, 0, 400) == (None, None, None)


def test_traffic_shares_sum_to_one_and_fold_small_arms_into_other() -> None:
    day = pd.Timestamp("2026-03-01")
    arms = [f"arm{i}" for i in range(MAX_ARMS + 3)]
    traffic = pd.DataFrame({"day": day, "arm": [*arms, HOLDOUT_BAND], "leads": [*range(20, 20 - len(arms), -1), 5]})
    shares = traffic_shares(traffic)
    assert list(shares.columns) == [*arms[:MAX_ARMS], "other arms", HOLDOUT_BAND]
    assert shares.sum(axis=1).iloc[0] == pytest.approx(1.0)
    assert shares["other arms"].iloc[0] == pytest.approx(sum(range(20 - MAX_ARMS - 2, 20 - MAX_ARMS + 1)) / traffic.leads.sum())


def _pngs_are_real(paths: list[Path]) -> None:
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
        width = int.from_bytes(path.read_bytes()[16:20], "big")
        assert width > 400, path


def test_the_page_shows_every_plot_with_its_caption_and_escapes_warehouse_text(warehouse: Paths, tmp_path: Path) -> None:
    result = write_report(warehouse.warehouse, tmp_path / "out", campaign=CAMPAIGN, url=warehouse.warehouse_url)
    page = result.index.read_text(encoding="utf-8")
    assert len(result.images) == len(PLOTS) and all(p.parent == result.index.parent for p in result.images)
    _pngs_are_real(result.images)
    sources = re.findall(r'<img src="([^"]+)" alt="([^"]+)"', page)
    assert [src for src, _ in sources] == [p.name for p in result.images]
    assert page.count("<figcaption") == len(PLOTS)
    # The hostile arm and experiment names are shown, escaped; the only script is the page's own.
    assert "&lt;script&gt;alert(&#x27;arm&#x27;)&lt;/script&gt;" in page and "alert('arm')" not in page
    assert "v2 &lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold" not in page
    assert page.count("<script") == 1
    # Self-contained: no URL leaves the folder.
    assert not re.search(r"(src|href)=\"(https?:|//)", page) and "http://" not in page and "https://" not in page
    # The figures behind each plot are in its caption.
    figures = result.figures
    assert f"{figures['sends']:,} sends" in page and "P(better) 0.71" in page and "too_long 120" in page
    assert (result.index.parent / "key_figures.json").exists() and (result.index.parent / "summary.md").read_text().startswith(
        "| figure"
    )


def test_a_fresh_warehouse_gives_no_data_yet_plots_not_an_error(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.duckdb"
    with connect(fresh):  # the raw schema only: what the line leaves before its first dbt build
        pass
    result = write_report(fresh, tmp_path / "fresh_out")
    _pngs_are_real(result.images)
    page = result.index.read_text(encoding="utf-8")
    assert page.count('class="nodata"') == len(PLOTS)
    assert result.figures["sends"] == 0 and result.figures["loop_lift"] is None and result.figures["campaigns"] == []
    missing = write_report(tmp_path / "nowhere.duckdb", tmp_path / "missing_out")
    assert "does not exist yet" in missing.index.read_text(encoding="utf-8")
    assert not (tmp_path / "nowhere.duckdb").exists()  # reading never creates the warehouse


def test_every_plot_draws_a_no_data_card_on_empty_frames(tmp_path: Path) -> None:
    data = ReportData(tmp_path / "w.duckdb", True, [], None, None)
    figures = key_figures(data)
    plots = [draw(data, figures, tmp_path) for draw in PLOTS]
    assert [p.has_data for p in plots] == [False] * len(PLOTS)
    assert all(p.caption for p in plots)
    _pngs_are_real([tmp_path / p.filename for p in plots])


def _command(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="factory")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["report", *argv])


def test_the_command_writes_into_the_data_folder_and_prints_the_page(warehouse: Paths, capsys) -> None:
    paths = warehouse
    args = _command("--campaign", OTHER, "--days", "1")
    assert args.run(args, paths) == 0
    index = Path(capsys.readouterr().out.strip())
    assert index == paths.home / "reports" / "index.html" and index.exists()
    assert json.loads((index.parent / "key_figures.json").read_text())["sends"] == len(_expected(OTHER, days=1))
    assert _command("--out", "/somewhere/else").out == Path("/somewhere/else")
    args = _command("--campaign", "gamma")
    assert args.run(args, paths) == 2
    assert "'gamma' is not in the warehouse" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _command("--days", "0")
    assert "at least 1 day" in capsys.readouterr().err


def test_the_content_lines_spend_rows_are_not_a_campaign_of_the_report(tmp_path) -> None:
    import duckdb

    from factory_dagster.report.data import warehouse_campaigns

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE SCHEMA marts")
    con.execute(
        "CREATE TABLE marts.daily_kpis AS SELECT * FROM (VALUES ('outreach', 180, 170, 1.2), ('content', 0, 0, 0.3))"
        " AS t(campaign_id, leads_in, sends, cost_usd)"
    )
    assert warehouse_campaigns(con) == ["outreach"]
