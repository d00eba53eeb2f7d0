"""Which plan the day runs on when the planner's answers cannot be used.

A bad planning model must not stop the line: drafting only needs *a* valid plan. So the
day's plan comes, in this order, from

1. `model`: the planner's answer, when it passes every plan check;
2. `last_accepted`: the latest plan a planner wrote and the checks accepted on an earlier
   day, for the same campaign and spec version (same segments, angles and claims, so it is
   still valid); an earlier spec-only plan does not count, it is no better than step 3;
3. `spec_only`: a plan built from the spec alone, every segment × angle with the angle's
   hypothesis as its hook and exactly the angle's claims.

A fallback is never silent: `PlanChoice.incident` says which one was used and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb
import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.controls.incidents import record_incident
from factory_dagster.planning.plan import PLAN_PROMPT_VERSION, plan_problems
from factory_dagster.run_context import RunContext
from factory_dagster.warehouse.store import fetch_one, replace_partition

MODEL, LAST_ACCEPTED, SPEC_ONLY = "model", "last_accepted", "spec_only"
# What `raw.plans.model` and `.prompt_version` say for a plan no model wrote.
SPEC_ONLY_MODEL = "none (built from the spec)"
SPEC_ONLY_PROMPT_VERSION = "spec-only"
PLAN_COLUMNS = ["segment", "angle", "hook", "claims", "model", "prompt_version"]
_MAX_PROBLEMS_CHARS = 600


@dataclass(frozen=True)
class PlanChoice:
    """The day's plan rows (`PLAN_COLUMNS`), where they came from, and the incident text of a fallback."""

    rows: pd.DataFrame
    source: str  # MODEL | LAST_ACCEPTED | SPEC_ONLY
    incident: str | None  # None when the planner's own plan is used


def spec_only_plan(spec: CampaignSpec) -> pd.DataFrame:
    """Every segment × angle of the spec, the angle's hypothesis as the hook and only its own claims."""
    rows = [
        {
            "segment": segment.name,
            "angle": angle.name,
            "hook": angle.hypothesis,
            "claims": list(angle.claims),
            "model": SPEC_ONLY_MODEL,
            "prompt_version": SPEC_ONLY_PROMPT_VERSION,
        }
        for segment in spec.segments
        for angle in spec.angles
    ]
    return pd.DataFrame(rows, columns=PLAN_COLUMNS)


@dataclass(frozen=True)
class EarlierPlan:
    day: date
    rows: pd.DataFrame  # PLAN_COLUMNS


def last_accepted_plan(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date) -> EarlierPlan | None:
    """The latest model-written plan stored before `day` for this campaign and spec version (None if none)."""
    found = fetch_one(
        con,
        """SELECT max(partition_day) FROM raw.plans
           WHERE campaign_id = ? AND spec_version = ? AND partition_day < ? AND model <> ?""",
        [spec.campaign_id, spec.spec_version, day, SPEC_ONLY_MODEL],
    )
    if found is None or found[0] is None:
        return None
    rows = con.execute(
        f"""SELECT {", ".join(PLAN_COLUMNS)} FROM raw.plans
            WHERE campaign_id = ? AND spec_version = ? AND partition_day = ? ORDER BY segment, angle""",
        [spec.campaign_id, spec.spec_version, found[0]],
    ).df()
    rows["claims"] = rows["claims"].map(list)  # DuckDB hands lists back as arrays
    return EarlierPlan(found[0], rows)


def choose_plan(
    spec: CampaignSpec,
    planned: pd.DataFrame | None,
    planner: str,
    prompt_version: str,
    problems: list[str],
    earlier: EarlierPlan | None,
) -> PlanChoice:
    """The day's plan: the planner's if it has no problems, else the last accepted one, else the spec's own.

    `planned` is the planner's last parsed plan (None when no answer parsed) and `problems` what
    was wrong with its answers; `earlier` is `last_accepted_plan` (None when there is none).
    """
    if planned is not None and not problems:
        return PlanChoice(planned.assign(model=planner, prompt_version=prompt_version)[PLAN_COLUMNS], MODEL, None)
    why = _clip("; ".join(problems) or "no answer")
    version = spec.spec_version
    if earlier is not None and not plan_problems(earlier.rows, spec):
        writer = earlier.rows["model"].iloc[0]
        detail = (
            f"The planner's answers were unusable ({why}). Fallback: the last accepted plan for spec version {version}, "
            f"from {earlier.day} (written by {writer}), {len(earlier.rows)} rows."
        )
        return PlanChoice(earlier.rows[PLAN_COLUMNS].reset_index(drop=True), LAST_ACCEPTED, detail)
    rows = spec_only_plan(spec)
    none_before = "no planner's plan was accepted before" if earlier is None else f"the plan of {earlier.day} no longer passes"
    detail = (
        f"The planner's answers were unusable ({why}). Fallback: a plan built from the spec alone "
        f"(each angle's hypothesis as its hook, only its claims), {len(rows)} rows, because {none_before} "
        f"for spec version {version}."
    )
    return PlanChoice(rows, SPEC_ONLY, detail)


def settle_plan(
    con: duckdb.DuckDBPyConnection,
    run: RunContext,
    spec: CampaignSpec,
    planned: pd.DataFrame | None,
    planner: str,
    problems: list[str],
) -> PlanChoice:
    """Choose the day's plan (`choose_plan`), store it as the day's `raw.plans` and record a fallback's incident."""
    earlier = last_accepted_plan(con, spec, run.partition_day)
    choice = choose_plan(spec, planned, planner, PLAN_PROMPT_VERSION, problems, earlier)
    rows = choice.rows.assign(spec_version=spec.spec_version)
    replace_partition(con, "plans", run.partition_day, run.stamp(rows), spec.campaign_id)
    if choice.incident:
        record_incident(con, run, "plan_fallback", "warning", choice.incident)
    return choice


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_PROBLEMS_CHARS else text[: _MAX_PROBLEMS_CHARS - 1] + "…"
