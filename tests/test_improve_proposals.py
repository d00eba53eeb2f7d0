"""The improve stage proposes: bounded, never twice, auto-approved by policy, prompts written by the premium model.

Proposals run on temporary warehouses with the real store, gateway, offline models and dbt (the
evidence warehouse is built by `dbt run` over hand-made raw rows); nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest
from helpers_db import CAMPAIGN, Lead, add_leads, add_message, add_plan, add_send, run_for, stamp
from helpers_logic import example_spec, gateway, registry
from warehouse_copy import copy_warehouse

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.drafting.draft import draft_brief, draft_candidates, draft_request
from factory_dagster.drafting.work import unsent_work
from factory_dagster.improve.evidence import Evidence, days_to_planned_sample, gate_catches
from factory_dagster.improve.experiments import AUTO_APPROVER, Experiment, propose
from factory_dagster.improve.hooks import hook_problems, hook_version_id
from factory_dagster.improve.metrics import GUARDRAIL_RULES, PRIMARY_METRIC
from factory_dagster.improve.proposal_assets import READS
from factory_dagster.improve.proposals import (
    SPEC_AUTHOR,
    open_proposals_table,
    parse_prompt_answer,
    propose_day,
)
from factory_dagster.improve.stats import Guardrail
from factory_dagster.improve.store import decide_by_person, experiment_events, list_experiments, load_experiment
from factory_dagster.learning.dbt_runner import invoke
from factory_dagster.models.ledger import write_ledger
from factory_dagster.models.prompts import (
    DRAFT_PROMPT_MAX_CHARS,
    JSON_RULE,
    PROMPTS,
    PromptTemplate,
    content_version,
    draft_prompt_problems,
    prompt,
    remember,
)
from factory_dagster.warehouse import postgres
from factory_dagster.warehouse.pg_connection import PgConnection
from factory_dagster.warehouse.store import connect, insert_rows

DAY = date(2026, 3, 2)
SEND_DAYS = (DAY, DAY + timedelta(days=1))
PROPOSAL_DAY = DAY + timedelta(days=12)
SEGMENTS = [s.name for s in example_spec().segments]


def spec_with(**improve: object) -> CampaignSpec:
    """The offline example spec with other `improve` limits (and `prompt_versions` when given)."""
    spec = example_spec()
    versions = improve.pop("prompt_versions", None)
    updated = spec.model_copy(update={"improve": spec.improve.model_copy(update=improve)})
    if versions is not None:
        updated = updated.model_copy(update={"drafting": spec.drafting.model_copy(update={"prompt_versions": versions})})
    return updated


class Target(NamedTuple):
    """A test's warehouse: the DuckDB file, or a PostgreSQL database (`url`) holding a copy of it."""

    path: Path
    url: str | None = None


def _open(target: Path | Target):
    target = target if isinstance(target, Target) else Target(target)
    return connect(target.path, url=target.url)


def warehouse_of(target: Path | Target):
    return lambda: _open(target)


def propose_on(path: Path | Target, spec: CampaignSpec, day: date, premium: float = 0.0, **kwargs: object):
    gw = gateway(registry(premium=premium), run_id=f"run-{day}", day=day)
    return propose_day(warehouse_of(path), spec, gw, **kwargs), gw


def rows(path: Path | Target, sql: str, params: list | None = None) -> pd.DataFrame:
    with _open(path) as con:
        return con.execute(sql, params or []).df()


def routing_canary(spec: CampaignSpec, at: datetime, challenger: str = "offline-nano", share: float = 0.05) -> Experiment:
    return propose(
        campaign_id=spec.campaign_id,
        kind="routing",
        hypothesis=f"{challenger} drafts as well as offline-cheap for less",
        control="offline-cheap",
        challengers=[challenger],
        target_segments=SEGMENTS,
        primary_metric=PRIMARY_METRIC,
        base_rate=0.02,
        mde=0.3,
        guardrails=(Guardrail("unsubscribe_rate", 0.5, 0.004, relative=True),),
        max_traffic_share=share,
        motivating_figures={"stage": "draft"},
        proposed_by="test canaries",
        at=at,
    )


# ---------------------------------------------------------------- prompt versions: content addressing and checks

WRITTEN = (
    "You write one cold B2B email that opens with one short question about the reader's own close. "
    + PROMPTS["draft-v1"].system.split("problem. ", 1)[1]
)


def test_a_written_prompt_is_named_by_its_content() -> None:
    name = content_version("draft", WRITTEN)
    assert name == content_version("draft", WRITTEN) == "draft-" + hashlib.sha256(WRITTEN.encode()).hexdigest()[:8]
    assert content_version("draft", WRITTEN + " ") != name
    assert remember(PromptTemplate(name, "draft", WRITTEN)) == prompt(name)
    with pytest.raises(ValueError, match="does not match its text"):
        remember(PromptTemplate(name, "draft", WRITTEN.replace("question", "statement")))
    with pytest.raises(ValueError, match="hand-written"):
        remember(PromptTemplate("draft-v1", "draft", WRITTEN))


def test_a_draft_prompt_must_keep_the_rules_and_the_length_bound() -> None:
    for version in ("draft-v1", "draft-v2"):  # the hand-written ones meet the bar they set
        assert draft_prompt_problems(PROMPTS[version].system) == []
    assert draft_prompt_problems(WRITTEN, parent=PROMPTS["draft-v1"].system) == []
    cases = {
        "verbatim": WRITTEN.replace(JSON_RULE, "Answer in JSON."),
        "end with": WRITTEN + " Be brief.",
        "over the limit": "Be warm. " * (DRAFT_PROMPT_MAX_CHARS // 9) + WRITTEN,
        "guidance": WRITTEN.split("Follow the brief")[0][:20] + " Follow the brief" + WRITTEN.split("Follow the brief")[1],
        "angle brackets": "Wrap the body in <b> tags. " + WRITTEN,
        "unchanged": PROMPTS["draft-v1"].system,
    }
    for expected, text in cases.items():
        problems = draft_prompt_problems(text, parent=PROMPTS["draft-v1"].system)
        assert any(expected in p for p in problems), (expected, problems)


def test_a_junk_answer_is_not_a_prompt() -> None:
    parent = PROMPTS["draft-v1"].system
    for junk in ("Sure! Here is a better prompt: be nice.", '{"prompt": 3}', '{"prompt": "Be nice.", "rationale": "x"}'):
        answer, problems = parse_prompt_answer(junk, parent)
        assert problems, junk
    answer, problems = parse_prompt_answer(json.dumps({"prompt": WRITTEN, "rationale": "questions"}), parent)
    assert problems == [] and answer is not None and answer.prompt == WRITTEN


def test_gate_catches_rank_codes_by_share_of_first_drafts() -> None:
    stats = pd.DataFrame(
        [
            ("draft-v1", None, 34, 40),
            ("draft-v1", "banned_phrase", 2, 40),
            ("draft-v1", "too_long", 5, 40),
            ("draft-v2", None, 10, 10),
        ],
        columns=["prompt_version", "violation_code", "drafts_flagged", "drafts"],
    )
    catches, first_pass = gate_catches(stats, "draft-v1")
    assert [c["code"] for c in catches] == ["too_long", "banned_phrase"] and catches[0]["share_of_drafts"] == 0.125
    assert first_pass == 0.85
    assert gate_catches(stats, "draft-x")[1] == pytest.approx(44 / 50)  # a version without drafts: all of them
    assert gate_catches(stats.iloc[0:0], "draft-v1") == ([], None)


# ---------------------------------------------------------------- proposing on a fresh warehouse (no marts yet)


def test_the_spec_version_is_proposed_once_and_auto_approved(tmp_path: Path) -> None:
    path, spec = tmp_path / "w.duckdb", spec_with()
    report, gw = propose_on(path, spec, DAY)
    assert [e.challengers for e in report.proposed] == [("draft-v2",)]
    experiment = report.proposed[0]
    assert (experiment.kind, experiment.control, experiment.target_segments) == ("prompt_version", "draft-v1", tuple(SEGMENTS))
    assert experiment.primary_metric == PRIMARY_METRIC and experiment.max_traffic_share == spec.improve.challenger_share
    assert {g.metric for g in experiment.guardrails} == {r.metric for r in GUARDRAIL_RULES} and all(
        g.relative for g in experiment.guardrails
    )
    # Nothing known yet: the base rate is the spec's prior for positive replies, and the sample follows from it.
    assert experiment.base_rate == pytest.approx(spec.allocation.prior_positive_rate)
    assert experiment.planned_sample_size > 1000 and experiment.proposed_by == SPEC_AUTHOR
    assert report.auto_approved == [experiment.experiment_id]
    with connect(path) as con:
        assert load_experiment(con, experiment.experiment_id).state == "approved"
        events = experiment_events(con, experiment.experiment_id)
    assert [(e["from_state"], e["to_state"], e["actor"]) for e in events] == [("proposed", "approved", AUTO_APPROVER)]
    assert any("every segment has a prompt experiment waiting" in n for n in report.notes), report.notes
    assert gw.ledger().empty  # nothing to write for, no model call
    assert "draft-v1 → draft-v2" in open_proposals_table(report.open_experiments)
    # No lead assigned yet: how long the design takes is unknown, and said so.
    assert experiment.motivating_figures["days_to_planned_sample"] is None
    assert experiment.motivating_figures["max_days"] == experiment.stopping_rule.max_days

    again, _ = propose_on(path, spec, DAY)  # a re-run of the day
    assert again.proposed == [] and any("already proposed" in n for n in again.notes)
    tomorrow, _ = propose_on(path, spec, DAY + timedelta(days=1))
    assert tomorrow.proposed == []  # tried (approved, waiting to start): never proposed twice
    assert len(rows(path, "SELECT * FROM raw.experiments")) == 1


def test_a_share_over_the_policy_waits_and_a_rejected_design_is_not_proposed_again(tmp_path: Path) -> None:
    path, spec = tmp_path / "w.duckdb", spec_with(challenger_share=0.3)
    report, _ = propose_on(path, spec, DAY)
    (experiment,) = report.proposed
    assert report.auto_approved == [] and "over the auto-approved 20%" in report.waiting[experiment.experiment_id]
    with connect(path) as con:
        decide_by_person(con, experiment.experiment_id, "reject", "maya", "too much traffic", "test", datetime(2026, 3, 2, 10))
    later, _ = propose_on(path, spec, DAY + timedelta(days=3))
    assert later.proposed == []
    assert any("duplicates" in n and experiment.experiment_id in n and "rejected" in n for n in later.notes), later.notes


def test_proposals_are_bounded_by_the_open_limit(tmp_path: Path) -> None:
    path, spec = tmp_path / "w.duckdb", spec_with(max_open_proposals=2)
    canaries = lambda evidence, spec, at: [routing_canary(spec, at), routing_canary(spec, at, "offline-premium")]  # noqa: E731
    report, _ = propose_on(path, spec, DAY, canaries=canaries)
    assert [e.kind for e in report.proposed] == ["prompt_version", "routing"]
    assert any("limit of open experiments" in n for n in report.notes)
    full, _ = propose_on(path, spec, DAY + timedelta(days=1), canaries=canaries)
    assert full.proposed == [] and any("the limit is 2" in n for n in full.notes), full.notes
    with connect(path) as con:
        assert len(list_experiments(con, CAMPAIGN)) == 2


def test_a_routing_proposal_is_never_auto_approved(tmp_path: Path) -> None:
    path, spec = tmp_path / "w.duckdb", spec_with(prompt_versions=["draft-v1"])
    report, _ = propose_on(path, spec, DAY, canaries=lambda evidence, spec, at: [routing_canary(spec, at, share=0.01)])
    (canary,) = report.proposed
    assert canary.kind == "routing" and report.auto_approved == []
    assert report.waiting[canary.experiment_id] == "routing experiments always need a person"
    assert any("too little to write a prompt from: 0 mature sends" in n for n in report.notes), report.notes
    with connect(path) as con:
        assert load_experiment(con, canary.experiment_id).state == "proposed"
        assert experiment_events(con, canary.experiment_id) == []


# ---------------------------------------------------------------- the premium model writes a challenger


def _leads() -> list[Lead]:
    """120 leads in two segments (general and operations_heavy)."""
    return [
        Lead(
            f"person{i}@firm{i}.example",
            "Anna",
            "Berg",
            f"Firm {i} Ltd",
            "Manufacturing" if i % 2 else "Professional Services",
            45,
            "CFO",
            "Manager",
            "Nordics",
        )
        for i in range(120)
    ]


def _event(send_id: str, kind: str, day: date) -> dict:
    return {
        "event_id": f"evt_{send_id}_{kind}",
        "send_id": send_id,
        "event_type": kind,
        "occurred_at": datetime.combine(day, datetime.min.time()) + timedelta(hours=10),
        "source_file": "/srv/factory/inbox/events/events.csv",
        "source_row": 2,
    }


def _populate(con) -> None:
    """Sends on two days; the 24 positively answered ones opened with a question, the others did not;
    first drafts of draft-v1 that the gates caught too long more than anything else."""
    leads = _leads()
    events, drafts, gates = [], [], []
    for i, lead in enumerate(leads):
        day = SEND_DAYS[i % 2]
        add_leads(con, [lead], day)
        message = add_message(con, lead, day, angle=("close_speed", "team_time")[i % 3 == 0])
        add_send(con, message, day)
        send = message["send_id"]
        events.append(_event(send, "delivered", day + timedelta(days=1)))
        if i % 5 == 0:
            events.append(_event(send, "positive_reply", day + timedelta(days=2)))
            question = f"Hi Anna,\n\nHow long does month-end take at {lead.company}? Teams close faster with us.\n\nBye"
            con.execute("UPDATE raw.messages SET body = ? WHERE message_id = ?", [question, message["message_id"]])
        elif i % 7 == 0:
            events.append(_event(send, "replied", day + timedelta(days=3)))
        for k in range(2):
            draft_id = f"drf_{i}_{k}"
            base = {"draft_id": draft_id, "lead_id": lead.lead_id, "arm_id": message["arm_id"], "attempt": 0}
            base |= {"model": "offline-cheap", "prompt_version": "draft-v1"}
            drafts.append(base | {"candidate_index": k, "llm_call_id": f"call_{i}_{k}", "subject": "s", "body": "b"})
            codes = ["too_long"] if (i + k) % 6 == 0 else ["banned_phrase"] if (i + k) % 17 == 0 else []
            gates.append(base | {"passed": not codes, "violation_codes": codes, "violation_details": codes, "agreement": 1.0})
            gates[-1]["selected"] = k == 0
    events.append(_event(events[0]["send_id"], "opened", DAY + timedelta(days=9)))  # the latest event: sends are mature
    run = run_for(DAY + timedelta(days=10))
    insert_rows(con, "events", stamp(events, run, "imported_at"))
    insert_rows(con, "drafts", stamp(drafts, run_for(DAY)))
    insert_rows(con, "gate_results", stamp(gates, run_for(DAY)))


@pytest.fixture(scope="module")
def evidence_warehouse(tmp_path_factory: pytest.TempPathFactory, dbt_manifest) -> Path:
    """A warehouse with mature, answered sends and gate results, and the marts dbt builds from them."""
    root = tmp_path_factory.mktemp("evidence")
    path = root / "warehouse.duckdb"
    with connect(path) as con:
        _populate(con)
    run = invoke(["run", "--select", "+int_send_outcomes +gate_metrics +gate_violations"], path, root / "dbt_target")
    assert run.success, run.describe_failure()
    return path


@pytest.fixture
def evidence(evidence_warehouse: Path, tmp_path: Path, engine_url: str | None) -> Target:
    """A private copy of the evidence warehouse; on PostgreSQL its rows, dbt's views as tables (tests/warehouse_copy.py)."""
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(evidence_warehouse, copy)
    if engine_url:
        with connect(copy, read_only=True) as source, postgres.connect_postgres(engine_url) as target:
            copy_warehouse(source, target)
    return Target(copy, engine_url)


def test_the_premium_model_writes_a_challenger_from_the_marts(evidence: Target) -> None:
    spec = spec_with(prompt_versions=["draft-v1"])
    report, gw = propose_on(evidence, spec, PROPOSAL_DAY)
    written = report.written
    assert written is not None, report.notes
    name = written.template.version
    assert name == content_version("draft", written.template.system) and written.parent == "draft-v1"
    assert draft_prompt_problems(written.template.system, PROMPTS["draft-v1"].system) == []
    experiment, hook = report.proposed  # the written prompt, and a written hook (see the hook tests)
    assert (experiment.kind, hook.kind) == ("prompt_version", "hook")
    assert (experiment.control, experiment.challengers) == ("draft-v1", (name,))
    assert set(experiment.target_segments) == set(SEGMENTS) and report.auto_approved == [experiment.experiment_id]
    assert experiment.proposed_by == "offline-premium (improve-v1)"
    figures = experiment.motivating_figures
    assert figures["messages"]["mature_sends"] == 120 and figures["messages"]["positive"] == 24
    assert figures["messages"]["positive_messages"]["question_opening_share"] == 1.0
    assert figures["messages"]["other_messages"]["question_opening_share"] == 0.0
    assert figures["gate_catches"][0]["code"] == "too_long" and figures["first_pass_rate"] < 1
    # What the figures say is in the prompt: open with a question, and the gates' top catch.
    assert "opens with one short question" in written.template.system and "word limits" in written.template.system
    # Base rates from the segments' own mature sends (shrunk to the prior), guardrails from theirs.
    assert experiment.base_rate > spec.allocation.prior_positive_rate
    stored = rows(evidence, "SELECT * FROM raw.prompt_versions WHERE prompt_version = ?", [name])
    assert stored.to_dict("records")[0] | {"first_seen_at": None} == {
        "prompt_version": name,
        "stage": "draft",
        "template_sha256": written.template.sha256,
        "template": written.template.system,
        "first_seen_at": None,
        "parent": "draft-v1",
        "campaign_id": CAMPAIGN,
        "origin": "written by offline-premium (improve-v1)",
    }
    calls = rows(evidence, "SELECT stage, prompt_version, status FROM raw.llm_calls ORDER BY prompt_version DESC")
    assert calls.to_dict("records") == [
        {"stage": "improve", "prompt_version": "improve-v1", "status": "ok"},
        {"stage": "improve", "prompt_version": "hook-v1", "status": "ok"},
    ]
    assert gw.ledger().cost_usd.sum() > 0


def test_the_proposals_read_no_dbt_relation_their_asset_does_not_declare(
    evidence_warehouse: Path, tmp_path: Path, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`experiment_proposals` names the dbt relations it reads as its deps (the UI's lineage, and the keys Dagster looks
    up for the provenance of each materialization), not the whole build. Every query of a day's proposals is recorded
    on PostgreSQL, where each passes through the store's connection: what it reads must be among those deps."""
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(evidence_warehouse, copy)
    with connect(copy, read_only=True) as source, postgres.connect_postgres(postgres_dsn) as target:
        copy_warehouse(source, target)
    queries: list[str] = []
    execute = PgConnection.execute

    def recording(self: PgConnection, sql: str, params: object = None) -> object:
        queries.append(sql)
        return execute(self, sql, params)

    monkeypatch.setattr(PgConnection, "execute", recording)
    report, _ = propose_on(Target(copy, postgres_dsn), spec_with(prompt_versions=["draft-v1"]), PROPOSAL_DAY)
    assert report.proposed, report.notes
    read = {found for sql in queries for found in re.findall(r"\b(marts|intermediate|staging)\.(\w+)", sql)}
    declared = {tuple(key.path) for key in READS}
    assert read <= declared, read - declared
    assert {("intermediate", "int_send_outcomes"), ("marts", "gate_metrics"), ("marts", "gate_violations")} <= read


def test_a_junk_premium_answer_makes_no_proposal_and_no_crash(evidence: Target) -> None:
    spec = spec_with(prompt_versions=["draft-v1"])
    # It always drops a required rule from a prompt, and adds a figure the claims do not have to a hook.
    report, gw = propose_on(evidence, spec, PROPOSAL_DAY, premium=1.0)
    assert report.written is None and report.hook is None and report.proposed == []
    assert any("unusable" in n and "does not keep the rule" in n for n in report.notes), report.notes
    assert any("no hook challenger" in n and "numbers not in the angle's claims: 3" in n for n in report.notes), report.notes
    assert len(gw.ledger()) == 4  # both attempts of each were paid for, and ledgered
    assert len(rows(evidence, "SELECT * FROM raw.llm_calls WHERE stage = 'improve'")) == 4
    assert rows(evidence, "SELECT count(*) AS n FROM raw.prompt_versions WHERE parent IS NOT NULL").n[0] == 0
    assert rows(evidence, "SELECT count(*) AS n FROM raw.hook_versions").n[0] == 0


def test_the_premium_model_rewords_a_hook_within_the_claims(evidence: Target) -> None:
    spec = spec_with(prompt_versions=["draft-v1"], max_open_proposals=2)
    report, _ = propose_on(evidence, spec, PROPOSAL_DAY)
    hook = report.hook
    assert hook is not None, report.notes
    (experiment,) = [e for e in report.proposed if e.kind == "hook"]
    # The angle with the most mature sends, against the plan's hook (no champion hook yet), in every segment.
    assert experiment.motivating_figures["angle"] == hook.task.angle == "close_speed"
    assert (experiment.control, experiment.challengers) == ("plan", (hook.hook_version,))
    assert hook.hook_version == hook_version_id(hook.text) and hook_problems(hook.text, spec, "close_speed") == []
    assert set(experiment.target_segments) == set(SEGMENTS) and experiment.layer == "hook"
    # Hooks are not in the example spec's auto-approve policy: a person decides.
    assert experiment.experiment_id in report.waiting and experiment.state == "proposed"
    assert experiment.proposed_by == "offline-premium (hook-v1)"
    # The angle reaches only its own leads: the days to the planned sample count only them.
    share = experiment.motivating_figures["angle_share_of_sends"]
    assert 0 < share < 1 and experiment.base_rate > 0
    stored = rows(evidence, "SELECT * FROM raw.hook_versions").to_dict("records")
    assert [(r["hook_version"], r["angle"], r["text"], r["parent"]) for r in stored] == [
        (hook.hook_version, "close_speed", hook.text, "plan")
    ]


def test_a_hook_may_reword_an_angle_but_never_add_a_claim() -> None:
    spec = example_spec()
    ok = "What would your team do with the hours close speed takes every month?"
    assert hook_problems(ok, spec, "close_speed") == []
    # The angle's own figure is allowed; a figure, an offer or a link of its own is not.
    assert hook_problems("Some teams close up to 4 days faster than they did last year.", spec, "close_speed") == []
    assert "numbers not in the angle's claims: 40" in " ".join(
        hook_problems("Teams close 40% faster with us.", spec, "close_speed")
    )
    assert "offer words" in " ".join(hook_problems("Try it free for a month, your close will thank you.", spec, "team_time"))
    assert "link" in " ".join(hook_problems("See how at brightwave.io before your next close.", spec, "team_time"))
    assert "banned phrase" in " ".join(hook_problems("A revolutionary way to run the month-end close.", spec, "team_time"))
    assert "4" in " ".join(hook_problems("Teams close up to 4 days faster.", spec, "team_time"))  # another angle's figure
    assert hook_problems("Too short.", spec, "team_time") == ["is 10 characters, fewer than 20"]
    assert "repeats a hook in use" in hook_problems(ok, spec, "close_speed", in_use=[ok.upper()])
    assert hook_problems(ok, spec, "unknown") == ["angle 'unknown' is not in the spec"]


def test_one_hook_experiment_per_segment_is_open_at_a_time(evidence: Target) -> None:
    spec = spec_with(prompt_versions=["draft-v1"], max_open_proposals=5)
    first, _ = propose_on(evidence, spec, PROPOSAL_DAY)
    assert first.hook is not None
    second, _ = propose_on(evidence, spec, PROPOSAL_DAY + timedelta(days=1))
    assert second.hook is None
    assert "premium hook writing: every segment has a hook experiment open" in second.notes


def test_drafting_renders_a_stored_prompt_version(tmp_path: Path) -> None:
    text = WRITTEN.replace("own close", "own month-end, in eight words or fewer")
    name = content_version("draft", text)
    assert name not in PROMPTS
    path, spec = tmp_path / "w.duckdb", example_spec()
    lead = _leads()[0]
    with connect(path) as con:
        row = {"prompt_version": name, "stage": "draft", "template": text, "parent": "draft-v1", "campaign_id": CAMPAIGN}
        row |= {
            "template_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "first_seen_at": datetime(2026, 3, 1),
            "origin": "test",
        }
        insert_rows(con, "prompt_versions", pd.DataFrame([row]))
        add_leads(con, [lead], DAY)
        add_message(con, lead, DAY, prompt_version=name)  # its assignment names the written version
        con.execute("DELETE FROM raw.messages")  # only the assignment: the lead waits for a draft
        add_plan(con, lead.segment, "close_speed", "Closing faster starts with the bank feed.", DAY)
        work = unsent_work(con, DAY, CAMPAIGN)
    assert list(work.prompt_version) == [name]
    lead_row = next(work.itertuples())
    request = draft_request(
        "draft", name, draft_brief(spec, "close_speed", lead_row.hook, list(lead_row.claims), name), lead_row, 0, 0
    )
    assert request.messages[0] == {"role": "system", "content": text}
    gw = gateway(registry(cheap=0.0))
    candidates, deferred = draft_candidates(gw, spec, work)
    assert deferred == [] and set(candidates.prompt_version) == {name} and candidates.parse_error.isna().all()
    # The offline drafter follows the written prompt: it opens with a question.
    assert all(body.split("\n\n")[1].split("?")[0].count(".") == 0 for body in candidates.body)
    with connect(path) as con:
        write_ledger(con, gw)  # the ledger registers the stored version like a hand-written one
        assert con.execute("SELECT count(*) FROM raw.prompt_versions WHERE prompt_version = ?", [name]).fetchone()[0] == 1


def test_the_dagster_asset_proposes_and_shows_the_open_proposals(tmp_path: Path) -> None:
    """The asset through Dagster, with the shipped spec and registry (offline stand-ins: no API key)."""
    import dagster as dg

    from factory_dagster.campaign.runs import register_campaigns
    from factory_dagster.improve.proposal_assets import experiment_proposals
    from factory_dagster.partitions import line_key
    from factory_dagster.resources import FactoryResource
    from factory_dagster.settings import Paths

    paths = Paths.under(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    register_campaigns(instance, [paths.default_campaign])
    result = dg.materialize(
        [experiment_proposals],
        resources={"factory": FactoryResource.from_paths(paths)},
        partition_key=line_key(paths.default_campaign, DAY),
        selection=[experiment_proposals],
        instance=instance,
    )
    assert result.success
    metadata = result.asset_materializations_for_node("experiment_proposals")[0].metadata
    assert metadata["proposed"].value == 1 and metadata["auto_approved"].value == 1
    table = metadata["open_experiments"].value
    assert "| id " in table and "draft-v1 → draft-v2" in table and "approved" in table
    assert metadata["written_prompt"].value == "none"


def test_routing_canaries_are_proposed_for_the_model_that_drafts_today() -> None:
    from factory_dagster.improve.canaries import QUALITY_COLUMNS
    from factory_dagster.improve.proposals import routing_canaries
    from factory_dagster.models.registry import load_registry

    spec = example_spec()  # drafts with offline-cheap
    figures = [CAMPAIGN, "draft", "offline-cheap", 600, 0.97, 0.15, 0.02, 0.01, 40, 0.02, 400, 0.02, 0.004, 0.001, 0.01, 0.0009]
    quality = pd.DataFrame([figures], columns=list(QUALITY_COLUMNS))
    canaries = routing_canaries(load_registry(), {})
    evidence = Evidence(PROPOSAL_DAY, {}, {}, (), pd.DataFrame(), pd.DataFrame(), quality)
    (canary,) = canaries(evidence, spec, datetime(2026, 3, 14))
    assert (canary.kind, canary.control, canary.challengers) == ("routing", "offline-cheap", ("offline-nano",))
    # Once the loop moved the draft stage, the canary is about that model (no figures for it yet: none).
    moved = replace(evidence, routing={"draft": "offline-nano"})
    assert canaries(moved, spec, datetime(2026, 3, 14)) == []
    assert canaries(replace(evidence, quality=None), spec, datetime(2026, 3, 14)) == []  # before the mart exists


def test_days_to_the_planned_sample_follow_the_recent_volume_and_the_share() -> None:
    experiment = routing_canary(spec_with(), datetime(2026, 3, 2))
    share, planned = experiment.max_traffic_share, experiment.planned_sample_size
    volume = {segment: 50.0 for segment in experiment.target_segments}
    per_challenger = 50.0 * len(experiment.target_segments) * share
    assert days_to_planned_sample(experiment, volume, 7) == math.ceil(planned / per_challenger) + 7
    assert days_to_planned_sample(experiment, {}, 7) is None
    # Twice the volume, about half the days.
    doubled = days_to_planned_sample(experiment, {k: 2 * v for k, v in volume.items()}, 7)
    assert doubled == math.ceil(planned / (2 * per_challenger)) + 7
