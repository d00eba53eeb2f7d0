"""Days of the line under pressure, each on its own temporary warehouse: a spent budget, colleagues in
one export, a failed audit, an invalid spec, and the DuckDB pool. Apart from test_line_integration's
shared three-day line, so that the two files run on different test workers."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pandas as pd
from helpers_line import START, query, run_day

from factory_dagster.campaign.spec import load_spec
from factory_dagster.definitions import build_definitions
from factory_dagster.settings import DEFAULT_SPEC_PATH, Paths
from factory_dagster.warehouse.store import connect


def test_a_spent_budget_defers_leads_to_the_next_day_never_drops_them(tmp_path, dbt_manifest):
    spec_text = DEFAULT_SPEC_PATH.read_text()
    tight = tmp_path / "tight.yaml"
    # $0.22: the audit keeps its worst case (about $0.20 offline) in reserve; the rest runs out in drafting.
    tight.write_text(spec_text.replace("daily_budget_usd: 2.00", "daily_budget_usd: 0.22"), encoding="utf-8")
    paths = Paths.under(tmp_path / "home", spec=tight)
    instance = dg.DagsterInstance.ephemeral()
    first, second = START, START + timedelta(days=1)
    from factory_dagster.intake.sample_leads import write_sample_file

    write_sample_file(paths.leads_inbox, first, n=120)
    assert run_day(build_definitions(paths), instance, first).success
    cost = query(paths, "SELECT sum(cost_usd) AS usd FROM raw.llm_calls WHERE partition_day = ?", [first]).usd[0]
    assert cost <= 0.22
    incident = query(paths, "SELECT detail FROM raw.incidents WHERE kind = 'budget_reached' AND partition_day = ?", [first])
    assert len(incident) >= 1 and "wait for the next day" in incident.detail[0]
    waiting = query(
        paths,
        """SELECT lead_id FROM raw.assignments WHERE lead_id NOT IN (SELECT lead_id FROM raw.messages)
           AND lead_id NOT IN (SELECT lead_id FROM raw.messages_quarantine)""",
    )
    assert len(waiting) > 0
    # The next day, with the budget restored, the deferred leads come first.
    paths_next = Paths.under(tmp_path / "home")
    assert run_day(build_definitions(paths_next), instance, second).success
    done = query(
        paths,
        """SELECT lead_id FROM raw.messages WHERE partition_day = ?
           UNION ALL SELECT lead_id FROM raw.messages_quarantine WHERE partition_day = ?""",
        [second, second],
    )
    assert set(waiting.lead_id) <= set(done.lead_id)


def test_colleagues_in_one_export_get_differently_worded_messages(tmp_path, dbt_manifest):
    """A CRM export with eight people at one company: none of them gets a colleague's text with the names swapped.

    Those the gate cannot word apart from a colleague's message today wait a day; by the second day everyone has a
    message or a quarantine verdict.
    """
    from factory_dagster.intake.sample_leads import write_sample_file

    paths = Paths.under(tmp_path / "home")
    instance = dg.DagsterInstance.ephemeral()
    defs = build_definitions(paths)
    names = ["Anna", "Ben", "Carla", "Dario", "Elif", "Femi", "Greta", "Hugo"]
    team = pd.DataFrame(
        {
            "email": [f"{n.lower()}@kestrel-analytics.example" for n in names],
            "first_name": names,
            "last_name": "Lind",
            "company": "Kestrel Analytics AB",
            "industry": "Software",
            "company_size": 400,
            "role": "Finance Director",
            "seniority": "Director",
            "region": "Nordics",
            "note": "",
        }
    )
    paths.leads_inbox.mkdir(parents=True, exist_ok=True)
    team.to_csv(paths.leads_inbox / "crm_team_export.csv", index=False)
    for offset in range(2):
        write_sample_file(paths.leads_inbox, START + timedelta(days=offset), n=30)
        assert run_day(defs, instance, START + timedelta(days=offset)).success
    messages = query(
        paths,
        """SELECT m.partition_day, l.first_name, m.body FROM raw.messages m JOIN raw.leads l USING (lead_id)
           WHERE l.company = 'Kestrel Analytics AB'""",
    )
    quarantined = query(
        paths,
        "SELECT q.lead_id FROM raw.messages_quarantine q JOIN raw.leads l USING (lead_id) WHERE l.company = 'Kestrel Analytics AB'",
    )
    assert len(messages) + len(quarantined) == len(names)
    for _, day in messages.groupby("partition_day"):
        own = [r.body.replace(r.first_name, "") for r in day.itertuples()]
        assert len(set(own)) == len(own), own
    checked = query(
        paths,
        """SELECT count(*) AS n FROM raw.gate_results g JOIN raw.leads l USING (lead_id)
           WHERE l.company = 'Kestrel Analytics AB' AND list_contains(g.violation_codes, 'near_duplicate')""",
    ).n[0]
    assert checked > 0, "eight colleagues on a handful of arms: some drafts repeat a colleague's and are caught"


def test_a_failed_audit_holds_the_day_until_a_person_releases_it(tmp_path, dbt_manifest):
    from factory_dagster.controls.holds import release_day
    from factory_dagster.intake.sample_leads import write_sample_file

    harsh = tmp_path / "harsh.yaml"
    harsh.write_text(
        DEFAULT_SPEC_PATH.read_text()
        .replace("pass_score: 3", "pass_score: 5")
        .replace("max_failure_rate: 0.2", "max_failure_rate: 0.0"),
        encoding="utf-8",
    )
    paths = Paths.under(tmp_path / "home", spec=harsh)
    instance = dg.DagsterInstance.ephemeral()
    write_sample_file(paths.leads_inbox, START, n=60)
    result = run_day(build_definitions(paths), instance, START)
    assert not result.success  # the blocking audit check stops the send step
    assert query(paths, "SELECT count(*) AS n FROM raw.sends").n[0] == 0
    incident = query(paths, "SELECT detail FROM raw.incidents WHERE kind = 'audit_hold'")
    assert "held" in incident.detail[0]
    held = query(paths, "SELECT count(*) AS n FROM raw.messages WHERE partition_day = ?", [START]).n[0]
    assert held > 0
    # The next day sends nothing from the held day; once released, its messages go out.
    lenient = Paths.under(tmp_path / "home")
    assert run_day(build_definitions(lenient), instance, START + timedelta(days=1)).success
    assert query(paths, "SELECT count(*) AS n FROM raw.sends WHERE message_day = ?", [START]).n[0] == 0
    with connect(paths.warehouse) as con:
        assert release_day(con, START, load_spec(DEFAULT_SPEC_PATH).campaign_id, "test-operator", "read the sample: fine")
    assert run_day(build_definitions(lenient), instance, START + timedelta(days=2)).success
    assert query(paths, "SELECT count(*) AS n FROM raw.sends WHERE message_day = ?", [START]).n[0] == held


def test_an_invalid_spec_fails_the_run_naming_file_and_field(tmp_path, dbt_manifest):
    spec = tmp_path / "broken.yaml"
    spec.write_text(DEFAULT_SPEC_PATH.read_text().replace("max_words: 140", "max_words: lots"), encoding="utf-8")
    defs = build_definitions(Paths.under(tmp_path / "home", spec=spec))
    result = run_day(defs, dg.DagsterInstance.ephemeral(), START)
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    message = failures[0].step_failure_data.user_failure_data.description
    assert str(spec) in message and "limits.max_words" in message


def test_every_step_of_the_daily_line_and_its_checks_is_in_the_duckdb_pool(tmp_path):
    """DuckDB allows one writer: every step that opens the warehouse, checks included, queues in one pool."""
    from factory_dagster.resources import POOL

    defs = build_definitions(Paths.under(tmp_path))
    for name in ("daily_line", "refresh_marts", "warehouse_integrity", "kill_switch"):
        job = defs.resolve_job_def(name)
        assert {node.definition.pool for node in job.graph.nodes} == {POOL}, name
