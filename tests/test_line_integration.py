"""The whole daily line, materialized in-process through Dagster on a temporary DuckDB.

One module-scoped run of two days (observe → learn → intake → plan → assign →
draft → gate → send) backs most assertions; the re-run test runs the second day again, and one
more day, with the kill switch on and a broken lead file in the inbox, backs the kill-switch and
bad-input tests.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
from helpers_line import START, query, run_day

from factory_dagster.campaign.spec import load_spec
from factory_dagster.controls.kill_switch import set_kill_switch
from factory_dagster.definitions import build_definitions
from factory_dagster.demo import daily_summary, loop_lines, run_days
from factory_dagster.intake.reading import list_lead_files, read_lead_file
from factory_dagster.settings import DEFAULT_SPEC_PATH, Paths
from factory_dagster.warehouse.store import connect

DAYS = 2  # the second day sends what the daily cap deferred on the first
LEADS_PER_DAY = 200  # above the example spec's daily cap of 180, so the cap defers some


@pytest.fixture(scope="module")
def line(tmp_path_factory, dbt_manifest):
    paths = Paths.under(tmp_path_factory.mktemp("factory"))
    defs = build_definitions(paths)
    instance = dg.DagsterInstance.ephemeral()
    results = run_days(defs, instance, paths, START, DAYS, LEADS_PER_DAY, progress=lambda _: None)
    assert [r.success for r in results] == [True] * DAYS, [r.error for r in results]
    return paths, defs, instance


def test_every_input_lead_row_is_accepted_or_quarantined_exactly_once(line):
    paths, _, _ = line
    files = list_lead_files(paths.campaign_inboxes(paths.default_campaign)[0])  # where the demo drops them
    assert len(files) == DAYS
    stored = query(
        paths,
        """SELECT source_file, source_row, 'accepted' AS fate FROM raw.leads
           UNION ALL SELECT source_file, source_row, 'quarantined' FROM raw.leads_quarantine""",
    )
    assert not stored.duplicated(["source_file", "source_row"]).any()
    for path in files:
        rows = read_lead_file(path)
        mine = stored[stored.source_file == str(path)]
        assert sorted(mine.source_row) == sorted(rows.source_row), path
    quarantine = query(paths, "SELECT reason_code, reason FROM raw.leads_quarantine")
    assert len(quarantine) > 0 and (quarantine.reason.str.len() > 0).all()


def test_no_send_for_a_message_that_failed_a_gate(line):
    paths, _, _ = line
    sends = query(
        paths,
        """SELECT s.send_id, g.passed, g.selected, q.lead_id AS quarantined_lead
           FROM raw.sends s
           LEFT JOIN raw.messages m USING (message_id)
           LEFT JOIN raw.gate_results g ON g.draft_id = m.draft_id
           LEFT JOIN raw.messages_quarantine q ON q.lead_id = s.lead_id""",
    )
    assert len(sends) > 0
    assert sends.passed.fillna(False).all() and sends.selected.fillna(False).all()
    assert sends.quarantined_lead.isna().all()
    # The cheap model does make mistakes, and they were caught rather than sent.
    failed = query(paths, "SELECT count(*) AS n FROM raw.gate_results WHERE NOT passed").n[0]
    assert failed > 0


def test_sends_respect_the_daily_cap_and_defer_the_rest(line):
    paths, _, _ = line
    cap = load_spec(DEFAULT_SPEC_PATH).limits.daily_send_cap
    per_day = query(paths, "SELECT partition_day, count(*) AS n FROM raw.sends GROUP BY 1 ORDER BY 1")
    assert (per_day.n <= cap).all() and per_day.n.iloc[0] == cap
    deferred = query(paths, "SELECT count(*) AS n FROM raw.incidents WHERE kind = 'send_cap_reached'").n[0]
    assert deferred >= 1
    late = query(paths, "SELECT count(*) AS n FROM raw.sends WHERE message_day < partition_day").n[0]
    assert late > 0, "messages held back by the cap go out on a later day"


def test_every_model_call_and_decision_is_logged(line):
    paths, _, _ = line
    calls = query(paths, "SELECT stage, count(*) AS n, sum(cost_usd) AS cost FROM raw.llm_calls GROUP BY stage")
    assert {"plan", "draft"} <= set(calls.stage) and (calls.cost > 0).all()
    assignments = query(paths, "SELECT propensity, reason, policy_version FROM raw.assignments")
    assert assignments.propensity.between(0, 1).all() and (assignments.reason.str.len() > 20).all()
    shares = query(paths, "SELECT partition_day, segment, holdout, sum(share) AS total FROM raw.allocations GROUP BY 1, 2, 3")
    assert (shares.total - 1).abs().max() < 1e-9
    assert query(paths, "SELECT count(*) AS n FROM raw.prompt_versions").n[0] >= 2


def test_outcomes_come_back_and_reach_the_marts(line):
    paths, _, _ = line
    events = query(paths, "SELECT event_type, count(*) AS n FROM raw.events GROUP BY 1")
    assert {"delivered", "opened"} <= set(events.event_type)
    assert query(paths, "SELECT count(*) AS n FROM raw.events_quarantine").n[0] >= 0
    kpis = daily_summary(paths, START, START + timedelta(days=DAYS - 1))
    assert len(kpis) == DAYS
    # The demo's closing words on the loop come from the same warehouse.
    loop, *looks, version, lift = loop_lines(paths)
    assert all(line.startswith("decision step, ") and " planned mature sends per arm " in line for line in looks)
    assert loop.startswith("loop: ") and "experiments proposed" in loop and "running" in loop and "promoted" in loop
    assert version.startswith("loop version ") and "champions scaleup_finance_leaders " in version
    assert lift.startswith("loop lift: ")


def test_marts_agree_with_raw_counts(line):
    paths, _, _ = line
    kpis = query(paths, "SELECT * FROM marts.daily_kpis ORDER BY day")
    raw = query(
        paths,
        """SELECT d.day,
                  (SELECT count(*) FROM raw.leads WHERE partition_day = d.day) AS leads_accepted,
                  (SELECT count(*) FROM raw.leads_quarantine WHERE partition_day = d.day) AS leads_quarantined,
                  (SELECT count(*) FROM raw.drafts WHERE partition_day = d.day) AS drafts,
                  (SELECT count(*) FROM raw.sends WHERE partition_day = d.day) AS sends,
                  (SELECT coalesce(sum(cost_usd), 0) FROM raw.llm_calls WHERE partition_day = d.day) AS cost_usd
           FROM (SELECT DISTINCT partition_day AS day FROM raw.leads) d ORDER BY d.day""",
    )
    merged = raw.merge(kpis, on="day", suffixes=("_raw", "_mart"))
    assert len(merged) == DAYS
    for column in ("leads_accepted", "leads_quarantined", "drafts", "sends"):
        assert (merged[f"{column}_raw"] == merged[f"{column}_mart"]).all(), column
    assert (merged.cost_usd_raw - merged.cost_usd_mart).abs().max() < 1e-9
    performance = query(paths, "SELECT sum(sends) AS n FROM marts.segment_arm_performance").n[0]
    assert performance == query(paths, "SELECT count(*) AS n FROM raw.sends").n[0]


def test_dagster_records_the_runs_and_materializations(line):
    _, _, instance = line
    runs = instance.get_runs(dg.RunsFilter(job_name="daily_line"))
    assert len(runs) >= DAYS and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    for key in ("leads", "messages", "sends", "outcome_events", "experiment_decisions"):
        event = instance.get_latest_materialization_event(dg.AssetKey(key))
        assert event is not None, key


def test_each_asset_reports_its_own_model_usage_in_a_shared_run(line):
    paths, _, instance = line
    run = instance.get_runs(dg.RunsFilter(job_name="daily_line"), limit=1)[0]
    ledger = query(paths, "SELECT stage, count(*) AS n FROM raw.llm_calls WHERE run_id = ? GROUP BY stage", [run.run_id])
    calls = dict(zip(ledger.stage, ledger.n, strict=True))
    for asset, stages in (("campaign_plan", {"plan"}), ("drafts", {"draft"}), ("messages", {"repair", "escalate"})):
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        assert event.run_id == run.run_id
        reported = event.asset_materialization.metadata["llm_calls"].value
        assert reported == sum(calls.get(stage, 0) for stage in stages), asset


def test_rerunning_a_day_sends_nothing_twice_and_costs_nothing(line):
    paths, defs, instance = line
    before = query(paths, "SELECT count(*) AS n FROM raw.sends").n[0]
    emails_before = sorted(p.name for p in paths.outbox.rglob("*.eml"))
    result = run_day(defs, instance, START + timedelta(days=1))
    assert result.success
    # Every answer the re-run needed was cached by the first run: the ledger logs the hits, at no cost.
    rerun = query(paths, "SELECT stage, model, cache_hit, cost_usd FROM raw.llm_calls WHERE run_id = ?", [result.run_id])
    assert len(rerun) > 0 and rerun.cache_hit.all() and rerun.cost_usd.sum() == 0, rerun[~rerun.cache_hit].to_string()
    after = query(paths, "SELECT send_id FROM raw.sends")
    assert len(after) == before and after.send_id.is_unique
    assert sorted(p.name for p in paths.outbox.rglob("*.eml")) == emails_before
    assert query(paths, "SELECT count(*) - count(DISTINCT event_id) AS dupes FROM raw.events").dupes[0] == 0


@pytest.fixture(scope="module")
def held_day(line) -> tuple[date, Path, Path, dg.ExecuteInProcessResult]:
    """One more day with the kill switch on, and a lead file without the required columns beside the day's export."""
    from factory_dagster.intake.sample_leads import write_sample_file

    paths, defs, instance = line
    day = START + timedelta(days=DAYS)
    good = write_sample_file(paths.leads_inbox, day, n=50)
    bad = paths.leads_inbox / "crm_export_broken.csv"
    bad.write_text("email,first_name\nx@y.example,Ann\n", encoding="utf-8")
    with connect(paths.warehouse) as con:
        set_kill_switch(con, True, "test-operator", "checking the hold")
    try:
        return day, good, bad, run_day(defs, instance, day)
    finally:
        with connect(paths.warehouse) as con:
            set_kill_switch(con, False, "test-operator", "done")


def test_kill_switch_holds_every_send_and_says_why(line, held_day):
    paths, _, _ = line
    day, _, _, result = held_day
    assert result.success
    assert query(paths, "SELECT count(*) AS n FROM raw.sends WHERE partition_day = ?", [day]).n[0] == 0
    held = query(paths, "SELECT detail FROM raw.incidents WHERE kind = 'sends_held' AND partition_day = ?", [day])
    assert "test-operator" in held.detail[0] and "checking the hold" in held.detail[0]


def test_a_broken_lead_file_is_rejected_by_name_and_the_line_goes_on(line, held_day):
    paths, _, _ = line
    _, good, bad, result = held_day
    assert result.success
    rejected = query(paths, "SELECT status, error FROM raw.intake_files WHERE file_path = ?", [str(bad)])
    assert rejected.status[0] == "rejected"
    assert "crm_export_broken.csv" in rejected.error[0] and "company" in rejected.error[0]
    assert query(paths, "SELECT count(*) AS n FROM raw.incidents WHERE kind = 'lead_file_rejected'").n[0] == 1
    # The day's export beside it went through intake as any day's: each of its rows accepted or quarantined once.
    stored = query(
        paths,
        """SELECT source_row FROM raw.leads WHERE source_file = ?
           UNION ALL SELECT source_row FROM raw.leads_quarantine WHERE source_file = ?""",
        [str(good), str(good)],
    )
    assert sorted(stored.source_row) == sorted(read_lead_file(good).source_row)


def test_every_day_is_audited_by_the_premium_judge(line):
    paths, _, _ = line
    audits = query(paths, "SELECT partition_day, count(*) AS n, avg(passed::INT) AS pass_rate FROM raw.audits GROUP BY 1")
    assert len(audits) >= DAYS and (audits.n >= 5).all() and (audits.pass_rate > 0.8).all()
    calls = query(paths, "SELECT count(*) AS n FROM raw.llm_calls WHERE stage = 'audit'").n[0]
    assert calls >= audits.n.sum()


def test_the_consistency_check_runs_and_passes_every_day(line):
    _, _, instance = line
    records = instance.get_event_records(dg.EventRecordsFilter(dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=1000)
    days = {}
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.check_name == "messages_consistent_with_earlier":
            day = instance.get_run_by_id(record.event_log_entry.run_id).tags["dagster/partition/day"]
            days[day] = days.get(day, True) and evaluation.passed
    assert set(days) >= {(START + timedelta(days=d)).isoformat() for d in range(DAYS)}
    assert all(days.values()), days


def test_the_report_renders_from_the_line_and_opens_with_every_image_in_chromium(line, tmp_path):
    import json
    import shutil

    from helpers_report import chromium, images_loaded

    from factory_dagster.report.assets import loop_report
    from factory_dagster.report.plots import PLOTS
    from factory_dagster.resources import FactoryResource

    paths, _, instance = line
    chromium()  # fail first, and clearly, when it is missing
    result = dg.materialize([loop_report], resources={"factory": FactoryResource.from_paths(paths)}, instance=instance)
    metadata = result.asset_materializations_for_node("loop_report")[-1].metadata
    index = Path(metadata["index"].path)
    assert index == paths.home / "reports" / "index.html" and metadata["images"].value == len(PLOTS)
    sends = query(paths, "SELECT count(*) AS n FROM raw.sends").n[0]
    assert 0 < metadata["sends"].value <= sends and "| sends / delivered |" in metadata["key_figures"].md_str
    # The report's loop-vs-holdout sides are the mart's (mature sends only).
    figures = json.loads((index.parent / "key_figures.json").read_text())
    mart = query(
        paths,
        "SELECT coalesce(sum(loop_sends), 0) AS loop, coalesce(sum(holdout_sends), 0) AS holdout FROM marts.loop_lift WHERE segment IS NULL",
    )
    assert (figures["loop_mature_sends"], figures["holdout_mature_sends"]) == (mart.loop[0], mart.holdout[0])
    # The check can fail: a copy of the page with one image gone counts one fewer.
    broken = shutil.copytree(index.parent, tmp_path / "broken")
    (broken / "funnel.png").unlink()
    assert images_loaded(index, broken / "index.html") == [(len(PLOTS), len(PLOTS)), (len(PLOTS) - 1, len(PLOTS))]
