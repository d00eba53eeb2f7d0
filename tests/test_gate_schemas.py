"""Pandera schemas of stored plans and drafts: real rows pass, each kind of bad row is reported with its reason."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import duckdb
import pandas as pd
import pytest
from helpers_logic import DAY, example_spec, gateway, make_leads, offline_plan, registry, work_frame

from factory_dagster.drafting.draft import draft_candidates, draft_request, draft_row
from factory_dagster.gates.pipeline import run_gates
from factory_dagster.gates.schemas import (
    draft_failures,
    draft_schema,
    failures_markdown,
    message_failures,
    plan_failures,
    plan_schema,
    subject_bound,
)
from factory_dagster.intake.validation import FAILURE_CASE_COLUMNS
from factory_dagster.models.gateway import CallResult
from factory_dagster.planning.plan import PLAN_PROMPT_VERSION
from factory_dagster.run_context import RunContext
from factory_dagster.warehouse.store import ensure_raw_schema, insert_rows


@cache
def _line() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(plan, every draft of a gate run with repairs and escalations plus one unparseable answer, messages)."""
    spec = example_spec()
    plan = offline_plan(spec)
    gw = gateway(registry(cheap=0.6, premium=0.0))
    work = work_frame(spec, make_leads(30, spec), plan)
    candidates, deferred = draft_candidates(gw, spec, work)
    assert deferred == []
    out = run_gates(gw, spec, work, candidates).frames()
    # An answer that is not a draft is still stored (it was paid for), with the reason instead of subject and body.
    lead = next(work.itertuples())
    request = draft_request("draft", lead.prompt_version, {"task": "draft"}, lead, 0, 0)
    unparsed = draft_row(gw, lead, request, CallResult("call_unparsed", "Sorry, I cannot help.", None, "m", "invalid", 0.0), 9, 0)
    unparsed["draft_id"] = "drf_unparsed"
    unparsed["attempt"] = 0
    drafts = pd.concat([candidates, out["drafts"], pd.DataFrame([unparsed])], ignore_index=True)
    return plan, drafts, out["messages"]


@pytest.fixture
def plan() -> pd.DataFrame:
    return _line()[0].copy()


@pytest.fixture
def drafts() -> pd.DataFrame:
    return _line()[1].copy()


def _stored(table: str, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows as an asset check reads them back from the warehouse (INTEGER columns, VARCHAR[] arrays)."""
    con = duckdb.connect()
    ensure_raw_schema(con)
    insert_rows(con, table, RunContext("run-test", DAY, example_spec().campaign_id).stamp(rows))
    return con.execute(f"SELECT * FROM raw.{table}").df()


def _only(failures: pd.DataFrame, check: str, index: object) -> pd.DataFrame:
    """The failures are all of one check on one row; returns them."""
    assert not failures.empty
    assert list(failures.columns) == list(FAILURE_CASE_COLUMNS)
    assert set(failures["check"]) == {check}, failures[["column", "check", "failure_case", "index"]].to_string()
    assert set(failures["index"]) == {index}
    return failures


# --- drafts -------------------------------------------------------------------------------------


def test_real_drafts_pass(drafts: pd.DataFrame) -> None:
    spec = example_spec()
    assert set(drafts.attempt) == {0, 1, 2}  # candidates, repairs and escalations
    assert drafts.parse_error.notna().sum() == 1
    assert draft_failures(drafts, spec).empty
    assert list(draft_failures(drafts, spec).columns) == list(FAILURE_CASE_COLUMNS)
    stored = _stored("drafts", drafts)
    assert str(stored.candidate_index.dtype) == "int32"
    assert draft_failures(stored, spec).empty
    assert draft_failures(drafts.iloc[0:0], spec).empty  # a day whose drafting the budget deferred entirely
    assert set(draft_schema(spec).columns) >= {"draft_id", "lead_id", "candidate_index", "attempt", "llm_call_id"}


@pytest.mark.parametrize(
    ("column", "value", "check"),
    [
        ("lead_id", "", "non-empty"),
        ("arm_id", "   ", "non-empty"),
        ("model", "", "non-empty"),
        ("prompt_version", "", "non-empty"),
        ("llm_call_id", "", "the model call is recorded"),
        ("llm_call_id", None, "not_nullable"),
        ("candidate_index", -1, "from 0 to 2 (spec.drafting.candidates = 3)"),
        ("candidate_index", 3, "from 0 to 2 (spec.drafting.candidates = 3)"),
        ("attempt", -1, "from 0 to 2 (max_repair_attempts + 1 escalation)"),
        ("attempt", 3, "from 0 to 2 (max_repair_attempts + 1 escalation)"),
        ("subject", "x" * 501, "at most 500 characters"),
        ("parse_error", "", "states the reason"),
    ],
)
def test_bad_draft_column_is_reported(drafts: pd.DataFrame, column: str, value: object, check: str) -> None:
    broken = drafts.copy()
    if value is None:
        broken[column] = broken[column].astype(object)
    row = 4 if column != "parse_error" else int(drafts.index[drafts.parse_error.notna()][0])
    broken.at[row, column] = value
    failures = _only(draft_failures(broken, example_spec()), check, row)
    assert set(failures["column"]) == {column}
    case = failures["failure_case"].iloc[0]
    assert pd.isna(case) if value is None else case == value
    assert check in failures_markdown(failures)


def test_draft_ids_must_be_unique(drafts: pd.DataFrame) -> None:
    broken = drafts.copy()
    broken.at[5, "draft_id"] = broken.at[4, "draft_id"]
    failures = draft_failures(broken, example_spec())
    assert set(failures["check"]) == {"field_uniqueness"} and set(failures["column"]) == {"draft_id"}
    assert set(failures["index"]) == {4, 5}


def test_integer_columns_must_be_integers(drafts: pd.DataFrame) -> None:
    broken = drafts.assign(attempt=drafts.attempt.astype(float))
    failures = draft_failures(broken, example_spec())
    assert set(failures["check"]) == {"whole numbers (an integer column)"} and set(failures["column"]) == {"attempt"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"subject": None}, "subject missing, and no parse_error saying why"),
        ({"body": None}, "body missing, and no parse_error saying why"),
        ({"subject": None, "body": None}, "subject and body missing, and no parse_error saying why"),
        ({"parse_error": "not a draft: Field required at body"}, "subject and body and also a parse_error"),
    ],
)
def test_draft_needs_an_answer_or_its_parse_error(drafts: pd.DataFrame, change: dict, reason: str) -> None:
    broken = drafts.copy()
    for column, value in change.items():
        broken.at[7, column] = value
    failures = _only(draft_failures(broken, example_spec()), "subject and body, or a parse_error", 7)
    assert len(failures) == 1  # one line for the row, not one per cell
    assert failures["column"].iloc[0] == "subject, body, parse_error"
    assert failures["failure_case"].iloc[0].startswith(reason)
    assert reason in failures_markdown(failures)


def test_subject_bound_is_generous() -> None:
    spec = example_spec()
    assert subject_bound(spec) >= 5 * spec.limits.max_subject_chars


def test_draft_schema_follows_the_spec(drafts: pd.DataFrame) -> None:
    spec = example_spec()
    fewer = spec.model_copy(update={"drafting": spec.drafting.model_copy(update={"candidates": 2, "max_repair_attempts": 0})})
    failures = draft_failures(drafts, fewer)
    assert set(failures["column"]) == {"candidate_index", "attempt"}
    assert set(failures.loc[failures.column == "candidate_index", "failure_case"]) == {2}
    assert set(failures.loc[failures.column == "attempt", "failure_case"]) == {2}


# --- plans --------------------------------------------------------------------------------------


def test_real_plan_passes(plan: pd.DataFrame) -> None:
    spec = example_spec()
    assert len(plan) == len(spec.segments) * len(spec.angles)
    assert plan_failures(plan, spec).empty
    stored = _stored(
        "plans", plan.assign(spec_version=spec.spec_version, model="offline-premium", prompt_version=PLAN_PROMPT_VERSION)
    )
    assert not isinstance(stored.claims.iloc[0], list)  # DuckDB gives arrays back
    assert plan_failures(stored, spec).empty
    assert set(plan_schema(spec).columns) == {"segment", "angle", "hook", "claims"}


def _set(row: int, column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(plan: pd.DataFrame) -> pd.DataFrame:
        plan[column] = plan[column].astype(object)
        plan.at[row, column] = value
        return plan

    return change


@pytest.mark.parametrize(
    ("change", "check", "column", "reason"),
    [
        (_set(0, "segment", "smb"), "one of the spec's segments", "segment", "smb"),
        (_set(1, "angle", "price_cut"), "one of the spec's angles", "angle", "price_cut"),
        (_set(2, "hook", ""), "non-empty hook", "hook", ""),
        (_set(2, "hook", "  "), "non-empty hook", "hook", "  "),
        (_set(3, "claims", []), "a non-empty list of claims", "claims", "[]"),
        (_set(3, "claims", None), "not_nullable", "claims", "None"),
        (
            _set(4, "claims", ["Brightwave flags unmatched transactions the day they happen.", "Save 50% this month."]),
            "only the angle's own claims",
            "angle, claims",
            "does not allow: 'Save 50% this month.'",
        ),
        (
            # A real claim, but of another angle.
            _set(4, "claims", ["Most teams are set up within 2 weeks."]),
            "only the angle's own claims",
            "angle, claims",
            "does not allow: 'Most teams are set up within 2 weeks.'",
        ),
    ],
)
def test_bad_plan_row_is_reported(plan: pd.DataFrame, change, check: str, column: str, reason: str) -> None:
    broken = change(plan)
    failures = plan_failures(broken, example_spec())
    assert check in set(failures["check"]), failures.to_string()
    mine = failures[failures["check"] == check]
    assert set(mine["column"]) == {column}
    assert len(mine) == 1
    case = mine["failure_case"].iloc[0]
    assert pd.isna(case) if reason == "None" else reason in str(case)
    assert check in failures_markdown(failures)


def test_unknown_segment_is_reported_once_and_row(plan: pd.DataFrame) -> None:
    broken = plan.copy()
    broken.at[0, "segment"] = "smb"
    failures = plan_failures(broken, example_spec())
    assert set(failures["check"]) == {"one of the spec's segments"}
    assert set(failures["index"]) == {0}


def test_claim_of_another_angle_names_the_angle(plan: pd.DataFrame) -> None:
    broken = plan.copy()
    row = int(plan.index[plan.angle == "fewer_errors"][0])
    broken.at[row, "claims"] = ["Teams using Brightwave close the month up to 4 days faster."]
    failures = _only(plan_failures(broken, example_spec()), "only the angle's own claims", row)
    assert failures["failure_case"].iloc[0].startswith("angle 'fewer_errors' does not allow: 'Teams using Brightwave")


def test_one_row_per_segment_and_angle(plan: pd.DataFrame) -> None:
    broken = pd.concat([plan, plan.iloc[[2]]], ignore_index=True)
    failures = plan_failures(broken, example_spec())
    assert set(failures["check"]) == {"one row per (segment, angle)"}
    assert set(failures["index"]) == {2, len(plan)}
    segment, angle = plan.at[2, "segment"], plan.at[2, "angle"]
    assert set(failures["failure_case"]) == {f"more than one row for segment {segment!r}, angle {angle!r}"}


def test_every_segment_must_be_covered(plan: pd.DataFrame) -> None:
    spec = example_spec()
    missing = spec.segments[-1].name
    failures = plan_failures(plan[plan.segment != missing].reset_index(drop=True), spec)
    assert set(failures["check"]) == {"every segment covered"}
    assert failures["failure_case"].tolist() == [f"no row for segment(s): {missing}"]
    assert failures["column"].tolist() == ["segment"]
    everything = plan_failures(plan.iloc[0:0], spec)  # an empty plan covers nothing
    assert everything["failure_case"].tolist() == ["no row for segment(s): " + ", ".join(s.name for s in spec.segments)]
    assert "no row for segment(s)" in failures_markdown(everything)


def test_missing_columns_are_reported(plan: pd.DataFrame) -> None:
    failures = plan_failures(plan.drop(columns=["hook"]), example_spec())
    assert "column_in_dataframe" in set(failures["check"])
    assert "hook" in set(failures["failure_case"])


# --- messages and the markdown helper -----------------------------------------------------------


def test_message_failures_keep_the_failure_case_shape() -> None:
    spec = example_spec()
    messages = _line()[2]
    assert message_failures(messages, spec).empty
    assert list(message_failures(pd.DataFrame(), spec).columns) == list(FAILURE_CASE_COLUMNS)
    broken = messages.copy()
    broken.at[0, "subject"] = "x" * 100
    failures = message_failures(broken, spec)
    assert list(failures.columns) == list(FAILURE_CASE_COLUMNS)
    assert set(failures["column"]) == {"subject"} and set(failures["index"]) == {0}


def test_failures_markdown_is_a_short_readable_table(drafts: pd.DataFrame) -> None:
    assert failures_markdown(pd.DataFrame()) == "none"
    broken = drafts.copy()
    broken["lead_id"] = ""
    broken.at[3, "subject"] = "line one\nline | two " + "word " * 100
    broken.at[6, "body"] = None
    failures = draft_failures(broken, example_spec())
    text = failures_markdown(failures, limit=5)
    lines = text.splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == ["row", "column", "check", "failing value"]
    assert len([line for line in lines if line.startswith("|")]) == 2 + 5
    assert f"and {len(failures) - 5} more failure case(s), {len(failures)} in all" in text
    assert all(len(line) < 250 for line in lines)
    full = failures_markdown(failures, limit=len(failures))
    assert "more failure case" not in full
    assert "body missing, and no parse_error saying why" in full
    assert "line one line \\| two word" in full  # one line, and a pipe in a value does not break the table
