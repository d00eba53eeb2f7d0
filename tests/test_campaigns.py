"""Many campaigns on one line: each spec in the campaigns folder is a campaign x day partition of its own.

One module fixture runs two days of four campaigns in one warehouse: the example campaign, a second valid one
whose lead files name the same people (and people of its own), one whose spec is invalid and one whose budget
is spent at once. The tests read what that left.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from helpers_line import START, query

from factory_dagster.campaign.registry import CampaignFolderError, campaign_specs
from factory_dagster.campaign.runs import execute_campaign_day
from factory_dagster.campaign.schedule import CAMPAIGN_TAG
from factory_dagster.content.cli import DEFAULT_CONTENT_SPEC
from factory_dagster.definitions import build_definitions
from factory_dagster.demo import _failure_message
from factory_dagster.intake.sample_leads import write_sample_file
from factory_dagster.partitions import CAMPAIGNS
from factory_dagster.settings import DEFAULT_SPEC_PATH, PROJECT_ROOT, Paths
from factory_dagster.warehouse.store import connect

DAYS = 2
LEADS = 16
SECOND = PROJECT_ROOT / "campaigns" / "brightwave_spend.yaml"
KEYS = ("brightwave_close", "broken", "spend", "spent")


def _campaigns_folder(folder: Path) -> Path:
    """The example campaign (the default), the second example, a broken spec and the content spec (not a campaign)."""
    folder.mkdir()
    shutil.copy(DEFAULT_SPEC_PATH, folder / "brightwave_close.yaml")
    shutil.copy(SECOND, folder / "spend.yaml")
    broken = yaml.safe_load(SECOND.read_text())
    broken["campaign_id"] = "broken-campaign"
    broken["limits"]["daily_budget_usd"] = "lots"
    (folder / "broken.yaml").write_text(yaml.safe_dump(broken))
    spent = yaml.safe_load(SECOND.read_text())
    spent["campaign_id"] = "spent-campaign"
    spent["limits"]["daily_budget_usd"] = 0.0005  # spent by the plan's first calls
    (folder / "spent.yaml").write_text(yaml.safe_dump(spent))
    shutil.copy(DEFAULT_CONTENT_SPEC, folder / "content.yaml")
    return folder


@pytest.fixture(scope="module")
def line(tmp_path_factory, dbt_manifest):
    home = tmp_path_factory.mktemp("factory")
    folder = _campaigns_folder(home / "campaigns")
    paths = Paths.under(home, spec=folder / "brightwave_close.yaml")
    defs = build_definitions(paths)
    instance = dg.DagsterInstance.ephemeral()
    results = {}
    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        for key in KEYS:
            # The same people are leads of every campaign (one export dropped in each campaign's inbox); the second
            # campaign also has people of its own (another seed).
            write_sample_file(paths.campaign_inboxes(key)[0], day, n=LEADS)
            if key != "brightwave_close":
                own = write_sample_file(home / "own" / key, day, n=LEADS, seed=8)
                own.replace(paths.campaign_inboxes(key)[0] / f"own_{own.name}")
            results[key, day] = execute_campaign_day(defs, instance, key, day)
    return paths, defs, instance, results


def test_the_registry_lists_every_outreach_spec_by_file_name_and_leaves_out_content_specs(line) -> None:
    paths = line[0]
    assert list(campaign_specs(paths.campaigns)) == list(KEYS)
    with pytest.raises(CampaignFolderError, match="no campaign 'nope'"):
        paths.campaign_spec("nope")


def test_a_campaign_with_an_invalid_spec_fails_naming_file_and_field_and_the_others_complete_their_days(line) -> None:
    paths, _, _, results = line
    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        assert results["brightwave_close", day].success, _failure_message(results["brightwave_close", day])
        assert results["spend", day].success, _failure_message(results["spend", day])
        failed = results["broken", day]
        assert not failed.success
        message = _failure_message(failed)
        assert "broken.yaml" in message and "daily_budget_usd" in message, message
    sent = query(paths, "SELECT campaign_id, count(*) AS n FROM raw.sends GROUP BY 1 ORDER BY 1")
    assert list(sent["campaign_id"]) == ["brightwave-close", "brightwave-spend"]
    assert (sent["n"] > 0).all()
    # The broken campaign wrote nothing: its run stopped at its first step.
    assert query(paths, "SELECT count(*) AS n FROM raw.leads WHERE campaign_id = 'broken-campaign'")["n"][0] == 0


def test_a_person_is_a_lead_of_each_campaign_and_is_emailed_by_one_within_the_contact_gap(line) -> None:
    paths = line[0]
    both = query(
        paths,
        """SELECT lead_id FROM raw.leads WHERE campaign_id IN ('brightwave-close', 'brightwave-spend')
           GROUP BY lead_id HAVING count(DISTINCT campaign_id) = 2""",
    )
    accepted = dict(query(paths, "SELECT campaign_id, count(*) AS n FROM raw.leads GROUP BY 1").itertuples(index=False))
    assert len(both) == accepted["brightwave-close"] > 0  # every person of the first is a lead of the second too
    assert accepted["brightwave-spend"] > len(both)  # which also has people of its own
    twice = query(
        paths,
        "SELECT lower(to_email) AS email FROM raw.sends GROUP BY 1 HAVING count(DISTINCT campaign_id) > 1",
    )
    assert twice.empty, "nobody is e-mailed by two campaigns within the contact gap"
    held = query(
        paths,
        """SELECT count(*) AS n FROM raw.messages m WHERE m.campaign_id = 'brightwave-spend'
           AND m.send_id NOT IN (SELECT send_id FROM raw.sends)""",
    )
    assert held["n"][0] > 0  # the second campaign's messages to the first's recipients wait for the gap


def test_each_campaign_has_its_own_budget_ledger_and_loop(line) -> None:
    paths = line[0]
    costs = query(paths, "SELECT campaign_id, count(*) AS calls FROM raw.llm_calls GROUP BY 1")
    assert {"brightwave-close", "brightwave-spend"} <= set(costs["campaign_id"])
    proposals = query(paths, "SELECT DISTINCT campaign_id FROM raw.experiments")
    assert {"brightwave-close", "brightwave-spend"} <= set(proposals["campaign_id"])
    plans = query(paths, "SELECT campaign_id, list(DISTINCT segment ORDER BY segment) AS segments FROM raw.plans GROUP BY 1")
    segments = dict(plans.itertuples(index=False))
    assert list(segments["brightwave-spend"]) == ["finance_controllers", "general", "operations_buyers"]
    assert "enterprise_finance" in list(segments["brightwave-close"])


def test_the_ui_shows_each_campaigns_runs_apart(line) -> None:
    _, _, instance, _ = line
    assert set(instance.get_dynamic_partitions(CAMPAIGNS.name)) == set(KEYS)
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition/campaign": "spend"}))
    assert len(runs) == DAYS and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)


def test_the_daily_schedule_asks_for_one_run_per_campaign_and_registers_new_ones(line) -> None:
    defs = line[1]
    schedule = defs.resolve_schedule_def("daily_line_schedule")
    with dg.instance_for_test() as instance:
        at = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime(2026, 3, 9, 6, 0, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        )
        requests = schedule.evaluate_tick(at).run_requests
        assert set(instance.get_dynamic_partitions(CAMPAIGNS.name)) == set(KEYS)
    assert sorted(r.partition_key for r in requests) == [f"{k}|2026-03-09" for k in KEYS]
    assert {r.tags[CAMPAIGN_TAG] for r in requests} == set(KEYS)
    assert len({r.run_key for r in requests}) == len(KEYS)


def test_an_older_warehouse_keyed_by_lead_alone_is_re_keyed_with_every_row_kept(tmp_path) -> None:
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA raw")
        con.execute(
            """CREATE TABLE raw.leads (lead_id VARCHAR NOT NULL PRIMARY KEY, partition_day DATE NOT NULL, run_id VARCHAR NOT NULL,
               campaign_id VARCHAR NOT NULL, source_file VARCHAR NOT NULL, source_row INTEGER NOT NULL, email VARCHAR NOT NULL,
               first_name VARCHAR NOT NULL, last_name VARCHAR, company VARCHAR NOT NULL, industry VARCHAR NOT NULL,
               company_size INTEGER NOT NULL, role VARCHAR NOT NULL, seniority VARCHAR NOT NULL, region VARCHAR NOT NULL,
               note VARCHAR, segment VARCHAR NOT NULL, imported_at TIMESTAMP NOT NULL)"""
        )
        con.execute(
            "INSERT INTO raw.leads VALUES ('lead_1', DATE '2026-03-02', 'r', 'brightwave-close', 'f.csv', 1, 'a@x.example', 'A', NULL,"
            " 'X', 'Software', 50, 'CFO', 'C-level', 'EU', NULL, 'general', TIMESTAMP '2026-03-02 06:00:00')"
        )
    with connect(path) as con:
        keys = con.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = 'leads' AND constraint_type = 'PRIMARY KEY'"
        ).fetchall()
        assert keys == [(["campaign_id", "lead_id"],)]
        assert con.execute("SELECT lead_id, email FROM raw.leads").fetchall() == [("lead_1", "a@x.example")]
        # The same person can now be a lead of a second campaign.
        con.execute("INSERT INTO raw.leads SELECT * REPLACE ('brightwave-spend' AS campaign_id) FROM raw.leads")
        assert con.execute("SELECT count(*) FROM raw.leads").fetchall() == [(2,)]


def test_a_campaign_whose_budget_is_spent_sends_nothing_past_it_and_the_others_complete(line) -> None:
    paths, _, _, results = line
    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        assert results["brightwave_close", day].success and results["spend", day].success
    spent = query(
        paths,
        """SELECT (SELECT coalesce(sum(cost_usd), 0) FROM raw.llm_calls WHERE campaign_id = 'spent-campaign') AS usd,
                  (SELECT count(*) FROM raw.sends WHERE campaign_id = 'spent-campaign') AS sends,
                  (SELECT count(*) FROM raw.leads WHERE campaign_id = 'spent-campaign') AS leads""",
    ).iloc[0]
    assert spent["usd"] <= 0.0005 and spent["sends"] == 0
    assert spent["leads"] > 0  # its leads are in, waiting for a day with budget: none dropped


def test_outcomes_from_the_shared_inboxes_are_stored_under_the_campaign_of_their_send(line) -> None:
    paths = line[0]
    # The first campaign's run imports the day's webhook events and replies for every campaign's sends.
    events = query(
        paths,
        """SELECT e.campaign_id, bool_and(e.campaign_id = s.campaign_id) AS own, count(*) AS n
           FROM raw.events e JOIN raw.sends s USING (send_id) GROUP BY 1 ORDER BY 1""",
    )
    assert list(events["campaign_id"]) == ["brightwave-close", "brightwave-spend"]
    assert events["own"].all() and (events["n"] > 0).all()
    unknown = query(paths, "SELECT count(*) AS n FROM raw.events_quarantine WHERE reason_code = 'unknown_send_id'")
    assert unknown["n"][0] == 0
