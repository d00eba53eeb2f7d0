"""Operators' edits propose the content line's next variants prompt, as an experiment of the loop's engine.

Why: `content.edits` turns what operators keep changing into notes for the next briefs, which the
writer may or may not heed. When the same lesson has been taught often enough (`MIN_EDITS_FOR_RULE`
edits of a channel removing one phrase, or shortening its texts), the line proposes to make it
binding: a challenger of the champion variants prompt with those lessons appended as house rules
(`rules_prompt`, content-addressed `content_variants-<sha8>`, stored in `raw.prompt_versions` with
its parent and origin), tested against the champion as a `prompt_version` experiment of the content
spec in `raw.experiments`. A person approves it (`factory experiments approve`): the lesson came
from people, and a prompt changes every later piece.

While it runs, half of each day's pieces (by a hash of the piece id, `arm_of`) are written with the
challenger; `raw.content_pieces.prompt_version` records which. It is judged by the outreach decision
rule on `untouched_rate`: the variants that go out as the model wrote them (approved by the line, or
by a person without an edit) out of all variants written, so a variant still waiting for a person
counts against its arm until someone approves it. Promoted, the challenger is the variants prompt
of every later piece (`champion`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import duckdb
import pandas as pd

from factory_dagster.content.edits import EditLessons
from factory_dagster.content.experiments import record_look
from factory_dagster.content.review import LATEST_DECISIONS
from factory_dagster.content.spec import ContentSpec
from factory_dagster.improve import store
from factory_dagster.improve.allocation import stable_unit
from factory_dagster.improve.decisions import decide_running
from factory_dagster.improve.experiments import OPEN_STATES, Experiment, propose
from factory_dagster.improve.stats import ArmCounts, Count
from factory_dagster.models.ledger import utcnow
from factory_dagster.models.prompts import (
    CONTENT_VARIANTS_PROMPT_VERSION,
    PromptTemplate,
    content_version,
    load_stored_prompts,
    prompt,
    remember,
)
from factory_dagster.run_context import RunContext
from factory_dagster.warehouse.store import insert_rows, transaction

KIND = "prompt_version"
STAGE = "content_variants"
METRIC = "untouched_rate"
MIN_EDITS_FOR_RULE = 3  # a lesson becomes a proposed rule once this many edits of a channel teach it
MIN_SHORTENING_PCT = 10.0  # a median shortening of at least this much becomes a rule
CHALLENGER_SHARE = 0.5  # of the pieces while the experiment runs
MDE = 0.1  # untouched rates are high (most variants pass): a tenth more is what the test is sized for
PROPOSER = "content line (operators' edits)"
RULES_HEADER = "House rules from operators' edits:"
ORIGIN = "operators' edits"


def edit_rules(lessons: EditLessons) -> list[str]:
    """The lessons taught often enough to become binding rules, one sentence each (channel order, then phrase)."""
    rules = []
    for channel in sorted(lessons.channels, key=lambda c: c.channel):
        for removed in sorted(channel.removed, key=lambda p: (-p.edits, p.phrase)):
            if removed.edits >= MIN_EDITS_FOR_RULE:
                rules.append(f"For {channel.channel} texts, never write '{removed.phrase}'.")
        if channel.shortened >= MIN_EDITS_FOR_RULE and channel.median_length_change_pct <= -MIN_SHORTENING_PCT:
            cut = round(-channel.median_length_change_pct / 5) * 5
            rules.append(f"Keep {channel.channel} texts about {cut:.0f}% shorter than you otherwise would.")
    return rules


def rules_prompt(parent: PromptTemplate, rules: Sequence[str]) -> PromptTemplate:
    """The parent prompt with the rules appended: a content-addressed version of the variants stage."""
    text = f"{parent.system} {RULES_HEADER} {' '.join(rules)}"
    return PromptTemplate(content_version(STAGE, text), STAGE, text)


def champion(con: duckdb.DuckDBPyConnection, content_id: str) -> str:
    """The content spec's variants prompt: the latest promoted challenger, else the hand-written one (loaded, usable)."""
    promoted = [e for e in store.list_experiments(con, content_id, ["promoted"]) if e.kind == KIND]
    version = promoted[-1].winner if promoted else CONTENT_VARIANTS_PROMPT_VERSION
    load_stored_prompts(con, [version])
    return version


def running_prompt_experiment(con: duckdb.DuckDBPyConnection, content_id: str) -> Experiment | None:
    found = [e for e in store.list_experiments(con, content_id, ["running"]) if e.kind == KIND]
    if found:
        load_stored_prompts(con, found[-1].challengers)
    return found[-1] if found else None


def arm_of(experiment: Experiment, piece_id: str) -> str:
    """The arm a piece is written with: a stable hash of experiment and piece puts `CHALLENGER_SHARE` on the challenger."""
    return (
        experiment.challengers[0]
        if stable_unit(experiment.experiment_id, piece_id) < experiment.max_traffic_share
        else experiment.control
    )


def prompt_versions(con: duckdb.DuckDBPyConnection, content_id: str, piece_ids: Sequence[str]) -> dict[str, str]:
    """Each piece's variants prompt version today: its arm while an experiment runs, else the champion."""
    running = running_prompt_experiment(con, content_id)
    if running is not None:
        return {piece: arm_of(running, piece) for piece in piece_ids}
    version = champion(con, content_id)
    return dict.fromkeys(piece_ids, version)


# -- proposing ---------------------------------------------------------------------------------------


def untouched_counts(
    con: duckdb.DuckDBPyConnection, content_id: str, versions: Sequence[str] | None = None, since: date | None = None
) -> pd.DataFrame:
    """Per variants prompt version (of the days from `since`): pieces and variants written (trials) and the
    variants gone out as written (events)."""
    return con.execute(
        f"""WITH {LATEST_DECISIONS}
           SELECT p.prompt_version, count(DISTINCT p.piece_id) AS pieces, count(*) AS trials,
                  count(*) FILTER (WHERE d.last_action IN ('auto_approve', 'approve')) AS events
           FROM raw.content_pieces p LEFT JOIN decided d USING (variant_id)
           WHERE p.content_id = ? AND (?::VARCHAR[] IS NULL OR p.prompt_version = ANY(?::VARCHAR[]))
             AND (?::DATE IS NULL OR p.day >= ?)
           GROUP BY p.prompt_version""",
        [content_id, versions, versions, since, since],
    ).df()


def _base_rate(con: duckdb.DuckDBPyConnection, content_id: str, version: str) -> float:
    """The champion's untouched rate so far, shrunk towards 0.7 (worth 50 variants) and kept where +MDE stays under 1."""
    counts = untouched_counts(con, content_id, [version])
    events, trials = (float(counts["events"].sum()), float(counts["trials"].sum())) if not counts.empty else (0.0, 0.0)
    rate = (events + 0.7 * 50) / (trials + 50)
    return min(max(rate, 0.05), 0.85)


@dataclass(frozen=True)
class Proposed:
    experiment: Experiment | None
    reason: str  # why nothing was proposed, or what was


def propose_from_edits(
    con: duckdb.DuckDBPyConnection, spec: ContentSpec, lessons: EditLessons, run: RunContext, at: datetime
) -> Proposed:
    """Propose the rules the edits teach as a challenger of the champion variants prompt (at most one open at a time)."""
    open_now = [e for e in store.list_experiments(con, spec.content_id, OPEN_STATES) if e.kind == KIND]
    if open_now:
        return Proposed(None, f"prompt experiment {open_now[-1].experiment_id} is {open_now[-1].state}")
    rules = edit_rules(lessons)
    if not rules:
        return Proposed(None, f"no lesson taught by {MIN_EDITS_FOR_RULE} or more edits yet ({lessons.edits} edits)")
    parent = champion(con, spec.content_id)
    challenger = rules_prompt(prompt(parent), rules)
    tried = [e for e in store.list_experiments(con, spec.content_id) if e.kind == KIND and challenger.version in e.challengers]
    if tried:
        return Proposed(None, f"{challenger.version} was tried already ({tried[-1].experiment_id}, {tried[-1].state})")
    remember(challenger)
    design = propose(
        campaign_id=spec.content_id,
        kind=KIND,
        hypothesis="variants written under the house rules operators' edits teach go out untouched more often: "
        + " ".join(rules),
        control=parent,
        challengers=(challenger.version,),
        target_segments=tuple(s.name for s in spec.segments),
        primary_metric=METRIC,
        base_rate=_base_rate(con, spec.content_id, parent),
        mde=MDE,
        max_traffic_share=CHALLENGER_SHARE,
        motivating_figures={"stage": STAGE, "rules": rules, "notes": lessons.notes(), "edits": lessons.edits},
        proposed_by=PROPOSER,
        at=at,
    )
    row = {
        "prompt_version": challenger.version,
        "stage": STAGE,
        "template_sha256": challenger.sha256,
        "template": challenger.system,
        "first_seen_at": utcnow(),
        "parent": parent,
        "campaign_id": spec.content_id,
        "origin": ORIGIN,
    }
    with transaction(con):
        insert_rows(con, "prompt_versions", pd.DataFrame([row]), skip_existing=True)
        if not store.save_proposed(con, design, run):
            return Proposed(None, f"{design.experiment_id} was proposed already")
    return Proposed(design, f"proposed {design.experiment_id}: {challenger.version} with {len(rules)} rule(s)")


# -- running and deciding ---------------------------------------------------------------------------------------


def decide_prompt_experiment(con: duckdb.DuckDBPyConnection, content_id: str, run: RunContext, at: datetime) -> str | None:
    """The day's look at the running content prompt experiment, concluding it when the rule says; its action."""
    experiment = running_prompt_experiment(con, content_id)
    if experiment is None or store.latest_look_day(con, experiment.experiment_id) == run.partition_day:
        return None
    arms = [experiment.control, *experiment.challengers]
    started = next(
        e["occurred_at"] for e in reversed(store.experiment_events(con, experiment.experiment_id)) if e["to_state"] == "running"
    )
    counts = untouched_counts(con, content_id, arms, since=started.date()).set_index("prompt_version").reindex(arms).fillna(0)
    # Pieces are what is assigned (the sample-ratio check counts them); variants are what is judged.
    counted = [
        ArmCounts(a, int(counts.loc[a, "pieces"]), Count(int(counts.loc[a, "events"]), int(counts.loc[a, "trials"])))
        for a in arms
    ]
    decision = decide_running(experiment, counted, (run.partition_day - started.date()).days + 1, run.partition_day)
    record_look(con, experiment, decision, run, at)
    return decision.action
