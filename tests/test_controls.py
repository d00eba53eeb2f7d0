"""Operator controls and the marts the line's decisions read: kill switch, incidents, halt reasons."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from helpers_db import CAMPAIGN, DAY, OTHER_CAMPAIGN, count, query, run_for

from factory_dagster.cli import main
from factory_dagster.controls.incidents import record_incident
from factory_dagster.controls.kill_switch import KillSwitchState, kill_switch_state, set_kill_switch
from factory_dagster.learning.marts import halt_reason, segment_angle_performance, segment_arm_performance
from factory_dagster.warehouse.store import connect


@pytest.fixture
def con(engine_con):
    """The warehouse, once on DuckDB and once on PostgreSQL (tests/warehouse_engines.py)."""
    return engine_con


# --- kill switch -------------------------------------------------------------------------------


def test_the_kill_switch_is_off_until_someone_engages_it(con) -> None:
    state = kill_switch_state(con)
    assert state == KillSwitchState(False, "default", "never engaged")
    assert count(con, "kill_switch") == 0  # reading does not write


def test_the_latest_change_of_the_kill_switch_wins(con, tmp_path: Path) -> None:
    engaged = set_kill_switch(con, True, "anomaly-guard", "complaint spike: 0.42% over 7 days")
    assert engaged == KillSwitchState(True, "anomaly-guard", "complaint spike: 0.42% over 7 days")
    assert kill_switch_state(con) == engaged

    released = set_kill_switch(con, False, "maya@brightwave-ledger.example", "bad list removed, complaints explained")
    assert kill_switch_state(con) == released

    set_kill_switch(con, True, "maya@brightwave-ledger.example", "pausing over the holiday")
    assert kill_switch_state(con) == KillSwitchState(True, "maya@brightwave-ledger.example", "pausing over the holiday")

    # The history is kept, in order.
    assert query(con, "SELECT engaged, actor FROM raw.kill_switch ORDER BY changed_at") == [
        (True, "anomaly-guard"),
        (False, "maya@brightwave-ledger.example"),
        (True, "maya@brightwave-ledger.example"),
    ]


def test_a_campaigns_switch_stops_that_campaign_and_the_switch_for_every_campaign_stops_all(con) -> None:
    own = set_kill_switch(con, True, "anomaly_guard", "complaint spike", CAMPAIGN)
    assert kill_switch_state(con, CAMPAIGN) == own and own.scope == CAMPAIGN
    assert kill_switch_state(con, OTHER_CAMPAIGN).engaged is False  # one campaign's trouble does not stop the others
    assert kill_switch_state(con).engaged is False
    every = set_kill_switch(con, True, "maya", "pausing everything for the audit")
    assert kill_switch_state(con, OTHER_CAMPAIGN) == every and every.scope == "every campaign"
    set_kill_switch(con, False, "maya", "audit done")
    assert kill_switch_state(con, CAMPAIGN) == own  # its own switch is still on until a person releases it
    released = set_kill_switch(con, False, "maya", "spike explained", CAMPAIGN)
    assert kill_switch_state(con, CAMPAIGN) == released and not released.engaged


def test_an_older_warehouses_switch_history_stays_the_switch_for_every_campaign(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as old:  # the table as it was before campaigns had switches of their own
        old.execute("CREATE SCHEMA raw")
        old.execute("CREATE TABLE raw.kill_switch (changed_at TIMESTAMP, engaged BOOLEAN, actor VARCHAR, reason VARCHAR)")
        old.execute("INSERT INTO raw.kill_switch VALUES (now(), true, 'ops', 'engaged before the upgrade')")
    with connect(path) as con:
        assert kill_switch_state(con, CAMPAIGN) == KillSwitchState(True, "ops", "engaged before the upgrade")


def test_the_kill_switch_state_survives_reopening_the_warehouse(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with connect(path) as con:
        set_kill_switch(con, True, "ops", "incident INC-1042 under investigation")
    with connect(path, read_only=True) as con:
        assert kill_switch_state(con).engaged is True
        assert kill_switch_state(con).reason == "incident INC-1042 under investigation"


def test_many_quick_toggles_always_read_back_the_last_one(con) -> None:
    for i in range(60):
        set_kill_switch(con, i % 2 == 0, "ops", f"toggle {i}")
        assert kill_switch_state(con) == KillSwitchState(i % 2 == 0, "ops", f"toggle {i}")


@pytest.mark.parametrize("reason", ["", "   ", "\n\t"])
def test_a_kill_switch_change_without_a_reason_is_refused(con, reason: str) -> None:
    set_kill_switch(con, True, "anomaly-guard", "bounce spike")
    with pytest.raises(ValueError, match="reason"):
        set_kill_switch(con, False, "ops", reason)
    assert count(con, "kill_switch") == 1
    assert kill_switch_state(con).engaged is True


# --- incidents ---------------------------------------------------------------------------------


def test_record_incident_writes_the_run_ids_and_is_idempotent(con) -> None:
    run = run_for()
    detail = "/srv/factory/inbox/leads/crm.csv: missing required column(s) 'company_size'"

    first = record_incident(con, run, "lead_file_rejected", "warning", detail)
    second = record_incident(con, run, "lead_file_rejected", "warning", detail)

    assert first == second and first.startswith("inc_")
    assert query(con, "SELECT incident_id, partition_day, run_id, campaign_id, kind, severity, detail FROM raw.incidents") == [
        (first, DAY, run.run_id, CAMPAIGN, "lead_file_rejected", "warning", detail)
    ]


def test_different_incidents_are_all_kept(con) -> None:
    run = run_for()
    ids = {
        record_incident(con, run, "sends_held", "critical", "kill switch engaged by ops: maintenance"),
        record_incident(con, run, "sends_held", "critical", "model spend $2.0500 exceeded the daily budget $2.00"),
        record_incident(con, run, "send_cap_reached", "info", "kill switch engaged by ops: maintenance"),
        record_incident(
            con, run_for(run_id="run-2026-03-02-retry"), "sends_held", "critical", "kill switch engaged by ops: maintenance"
        ),
        record_incident(
            con,
            run_for(DAY + timedelta(days=1), run_id=run.run_id),
            "sends_held",
            "critical",
            "kill switch engaged by ops: maintenance",
        ),
    }
    assert len(ids) == 5
    assert count(con, "incidents") == 5


# --- marts readers -----------------------------------------------------------------------------


def test_mart_readers_answer_nothing_learned_before_dbt_has_built(con) -> None:
    assert query(con, "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'marts'") == [(0,)]

    performance = segment_arm_performance(con, CAMPAIGN, DAY)
    assert performance.empty
    assert list(performance.columns) == ["segment", "arm_id", "angle", "sends", "replies", "positive_replies", "unsubscribes"]
    assert segment_angle_performance(con, CAMPAIGN, DAY).empty
    assert halt_reason(con, CAMPAIGN, DAY) is None

    con.execute("CREATE SCHEMA intermediate")  # the schema alone (a partial build) is not enough either
    con.execute("CREATE SCHEMA marts")
    assert segment_arm_performance(con, CAMPAIGN, DAY).empty
    assert halt_reason(con, CAMPAIGN, DAY) is None


def test_mart_readers_work_on_a_read_only_warehouse_without_marts(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with connect(path):
        pass
    with connect(path, read_only=True) as con:
        assert segment_arm_performance(con, CAMPAIGN, DAY).empty
        assert halt_reason(con, CAMPAIGN, DAY) is None


def create_anomalies(con) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS marts")
    con.execute(
        """CREATE TABLE marts.anomalies (
               campaign_id VARCHAR, day DATE, sends_7d BIGINT, bounces_7d BIGINT, complaints_7d BIGINT,
               bounce_rate_7d DOUBLE PRECISION, complaint_rate_7d DOUBLE PRECISION,
               complaint_spike BOOLEAN, bounce_spike BOOLEAN, halt_sending BOOLEAN)"""
    )


def test_halt_reason_names_the_spike_and_the_rates(con) -> None:
    create_anomalies(con)
    yesterday = DAY - timedelta(days=1)
    con.execute(
        """INSERT INTO marts.anomalies VALUES
           (?, ?, 950, 12, 4, 12 / 950.0, 4 / 950.0, true, false, true),
           (?, ?, 820, 9, 1, 9 / 820.0, 1 / 820.0, false, false, false),
           (?, ?, 400, 40, 0, 0.1, 0.0, false, true, true)""",
        [CAMPAIGN, DAY, CAMPAIGN, yesterday, OTHER_CAMPAIGN, DAY],
    )

    reason = halt_reason(con, CAMPAIGN, DAY)

    assert reason == "complaint spike over the last 7 days: complaint rate 0.421%, bounce rate 1.263% on 950 sends"
    assert halt_reason(con, CAMPAIGN, yesterday) is None  # a day that does not halt
    assert halt_reason(con, CAMPAIGN, DAY - timedelta(days=5)) is None  # a day with no row
    assert halt_reason(con, OTHER_CAMPAIGN, DAY).startswith("bounce spike over the last 7 days")


def test_halt_reason_names_both_spikes(con) -> None:
    create_anomalies(con)
    con.execute("INSERT INTO marts.anomalies VALUES (?, ?, 600, 30, 3, 0.05, 0.005, true, true, true)", [CAMPAIGN, DAY])
    reason = halt_reason(con, CAMPAIGN, DAY)
    assert reason.startswith("complaint and bounce spike")
    assert "complaint rate 0.500%" in reason and "bounce rate 5.000%" in reason and "600 sends" in reason


def test_segment_arm_performance_counts_only_sends_before_the_day(con) -> None:
    """Sends before the day, and only the replies imported by the day: a re-run of the day learns the same."""
    con.execute("CREATE SCHEMA intermediate")
    con.execute(
        """CREATE TABLE intermediate.int_send_outcomes AS SELECT * FROM (VALUES
             ('s1', 'lead_1', 'brightwave-close', DATE '2026-02-27', 'general', 'team_time|draft-v1|offline-cheap', 'team_time', DATE '2026-03-01', DATE '2026-03-01', NULL),
             ('s2', 'lead_2', 'brightwave-close', DATE '2026-02-28', 'general', 'team_time|draft-v1|offline-cheap', 'team_time', NULL, NULL, DATE '2026-03-01'),
             ('s3', 'lead_3', 'brightwave-close', DATE '2026-02-28', 'general', 'team_time|draft-v1|offline-cheap', 'team_time', DATE '2026-03-03', DATE '2026-03-03', NULL),
             ('s4', 'lead_4', 'brightwave-close', DATE '2026-02-28', 'general', 'team_time|draft-v2|offline-cheap', 'team_time', DATE '2026-03-02', NULL, DATE '2026-03-03'),
             ('s5', 'lead_5', 'brightwave-close', DATE '2026-03-02', 'general', 'team_time|draft-v2|offline-cheap', 'team_time', DATE '2026-03-02', DATE '2026-03-02', NULL),
             ('s6', 'lead_6', 'harbour-payroll', DATE '2026-02-28', 'general', 'team_time|draft-v1|offline-cheap', 'team_time', DATE '2026-03-01', DATE '2026-03-01', NULL)
           ) AS t(send_id, lead_id, campaign_id, partition_day, segment, arm_id, angle, first_reply_known_day,
                  first_positive_known_day, first_unsubscribe_known_day)"""
    )
    performance = segment_arm_performance(con, CAMPAIGN, DAY)  # DAY is 2026-03-02: its own sends do not count
    assert performance.to_dict("records") == [
        # The reply imported on 2026-03-03 was not known on 2026-03-02.
        {
            "segment": "general",
            "arm_id": "team_time|draft-v1|offline-cheap",
            "angle": "team_time",
            "sends": 3,
            "replies": 1,
            "positive_replies": 1,
            "unsubscribes": 1,
        },
        {
            "segment": "general",
            "arm_id": "team_time|draft-v2|offline-cheap",
            "angle": "team_time",
            "sends": 1,
            "replies": 1,
            "positive_replies": 0,
            "unsubscribes": 0,  # imported on 2026-03-03: not known on 2026-03-02
        },
    ]
    by_angle = segment_angle_performance(con, CAMPAIGN, DAY)
    assert by_angle.to_dict("records") == [{"segment": "general", "angle": "team_time", "sends": 4, "replies": 2}]


# --- send holds --------------------------------------------------------------------------------


def test_a_hold_is_kept_until_a_person_releases_it_with_a_reason(con) -> None:
    from factory_dagster.controls.holds import hold_day, open_holds, release_day

    run = run_for()
    hold_day(con, run, "4 of 9 audited messages failed")
    hold_day(con, run, "5 of 9 audited messages failed")  # a failing re-run refreshes the same hold
    assert open_holds(con, CAMPAIGN) == [(DAY, "5 of 9 audited messages failed")]
    with pytest.raises(ValueError):
        release_day(con, DAY, CAMPAIGN, "ann", " ")
    assert release_day(con, DAY, CAMPAIGN, "ann", "read them all, fine") is True
    assert release_day(con, DAY, CAMPAIGN, "ann", "again") is False
    assert open_holds(con, CAMPAIGN) == []


def test_the_cli_flips_one_campaigns_switch_or_every_campaigns(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FACTORY_HOME", str(tmp_path))
    assert main(["kill-switch", "on", "--campaign", OTHER_CAMPAIGN, "--reason", "list under review", "--actor", "maya"]) == 0
    assert f"kill switch for {OTHER_CAMPAIGN}: ENGAGED" in capsys.readouterr().out
    assert main(["kill-switch", "status"]) == 0  # what is in force for the spec's own campaign
    assert "kill switch for every campaign: off" in capsys.readouterr().out
    assert main(["kill-switch", "status", "--campaign", OTHER_CAMPAIGN]) == 0
    assert f"kill switch for {OTHER_CAMPAIGN}: ENGAGED (maya: list under review)" in capsys.readouterr().out
