"""The factory proposes: prompt-version challengers (and routing canaries), bounded, auto-approved by policy.

Once a day, after the decision step, the improve stage proposes experiments from the marts:

1. **The spec's own prompt versions.** `drafting.prompt_versions[1:]` that were never tried in a
   segment become challengers of that segment's champion (the loop state's): hand-written versions
   are the first experiments, and cost no model call.
2. **A draft prompt the premium model writes.** From what the positively answered messages share
   against the others (how they open, how long they are, their angles and prompt versions) and
   what the gates keep catching, the premium model (stage `improve`, prompt `improve-v1`) writes
   one new, complete draft prompt from the champion. It must keep the drafting rules verbatim and
   stay within a length bound (`prompts.draft_prompt_problems`); an unusable answer means no
   proposal that day, said in the report, never a failed run. The new version is
   content-addressed (`draft-<8 hex>`) and stored in `raw.prompt_versions` with its parent.
3. **Routing canaries** for the draft stage, from `improve.canaries` (routing always needs a person).

Bounds: at most `improve.max_open_proposals` experiments in flight per campaign (proposed,
approved or running, `store.count_open_proposals`); never a duplicate of an open or recently
rejected design (`store.find_duplicates`); never a challenger already tried in a segment; and at
most one prompt experiment waiting to start per segment (only one runs per segment at a time, so
a longer queue would only go stale). Each proposal is then offered to the spec's auto-approve
policy; an automatic approval is an event by `experiments.AUTO_APPROVER`.

Every experiment is judged on positive replies per send (`positive_reply_rate`) with relative
guardrails on unsubscribes, complaints and negative replies; its base rates are the target
segments' own rates over mature sends, shrunk towards a prior so thin data cannot swing the
planned sample size. A re-run of a day that already proposed proposes nothing new.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any

import duckdb
import pandas as pd
from pydantic import BaseModel, ValidationError

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.improve.canaries import propose_routing_canaries
from factory_dagster.improve.experiments import (
    OPEN_STATES,
    Experiment,
    auto_approval,
    auto_approve,
    propose,
)
from factory_dagster.improve.metrics import GUARDRAIL_RULES, METRIC_COUNTS, PRIMARY_METRIC, relative_guardrails
from factory_dagster.improve.stats import Guardrail
from factory_dagster.improve.store import (
    count_open_proposals,
    find_duplicates,
    list_experiments,
    save_proposed,
    write_transition,
)
from factory_dagster.improve.versions import current_version
from factory_dagster.learning.marts import table_exists
from factory_dagster.models.gateway import DEFERRED, CallRequest, ModelGateway, RunContext, utcnow
from factory_dagster.models.ledger import write_ledger
from factory_dagster.models.prompts import (
    DRAFT_PROMPT_MAX_CHARS,
    DRAFT_REQUIRED_RULES,
    IMPROVE_PROMPT_VERSION,
    PromptTemplate,
    build_messages,
    content_version,
    draft_prompt_problems,
    prompt,
    remember,
)
from factory_dagster.models.registry import ModelRegistry
from factory_dagster.models.routing import stage_model
from factory_dagster.warehouse.store import insert_rows, transaction

IMPROVE_STAGE = "improve"
MDE = 0.3  # relative: a challenger is worth a test if it may earn 30% more positive replies
PRIOR_SENDS = 200  # the prior a segment's rates are shrunk towards is worth this many sends
MIN_BASE_RATE = 0.005  # below this the planned sample would be out of reach whatever the data say
# The premium model writes only from enough mature, answered messages: fewer say nothing.
MIN_EVIDENCE_SENDS = 100
MIN_EVIDENCE_POSITIVE = 5
GATE_LOOKBACK_DAYS = 14
IMPROVE_ATTEMPTS = 2
SPEC_AUTHOR = "the campaign spec (drafting.prompt_versions)"
WAITING_STATES = frozenset({"proposed", "approved"})

Warehouse = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]
CanaryProposer = Callable[["Evidence", CampaignSpec, datetime], list[Experiment]]


class PromptAnswer(BaseModel):
    """What the premium model must answer to `improve-v1`."""

    prompt: str
    rationale: str


def proposal_time(day: date) -> datetime:
    """When the day's proposals are made: its start (ids and rejection memory follow the line's days)."""
    return datetime.combine(day, time.min)


# ---------------------------------------------------------------- reading the marts


@dataclass(frozen=True)
class Evidence:
    """What the day's proposals are made from, read in one go."""

    day: date
    champions: Mapping[str, str]  # segment -> champion prompt version (the loop state)
    routing: Mapping[str, str]  # stage -> model the loop moved it to (the loop state)
    experiments: tuple[Experiment, ...]  # every experiment of the campaign
    sends: pd.DataFrame  # mature sends before the day (see `mature_sends`)
    gate_stats: pd.DataFrame  # first-draft gate results per prompt version and violation code
    quality: pd.DataFrame | None  # marts.model_stage_quality, None before it exists
    open_count: int = 0  # experiments in flight (store.count_open_proposals)
    daily_leads: Mapping[str, float] = field(default_factory=dict)  # segment -> loop leads a day lately

    @property
    def proposed_today(self) -> list[Experiment]:
        return [e for e in self.experiments if e.proposed_at.date() == self.day]


_SEND_COLUMNS = ["segment", "angle", "prompt_version", "positive", "replied", "unsubscribed", "complained", "body"]


def mature_sends(con: duckdb.DuckDBPyConnection, campaign_id: str, day: date, window_days: int) -> pd.DataFrame:
    """One row per send made before `day` whose outcome window has closed, with the message it carried.

    Mature as the experiment counts define it (`days_since_send` >= the window), so a young send
    cannot look like a non-reply; empty before dbt has built `int_send_outcomes`.
    """
    if not table_exists(con, "intermediate", "int_send_outcomes"):
        return pd.DataFrame(columns=_SEND_COLUMNS)
    return con.execute(
        """SELECT o.segment, o.angle, coalesce(o.arm_prompt_version, o.prompt_version) AS prompt_version,
                  o.positive_reply AS positive, o.replied, o.unsubscribed, o.complained, m.body
           FROM intermediate.int_send_outcomes o
           LEFT JOIN raw.messages m ON m.message_id = o.message_id
           WHERE o.campaign_id = $campaign AND o.partition_day < $day AND o.days_since_send >= $window
           ORDER BY o.send_id""",
        {"campaign": campaign_id, "day": day, "window": window_days},
    ).df()


def gate_stats(
    con: duckdb.DuckDBPyConnection, campaign_id: str, day: date, lookback_days: int = GATE_LOOKBACK_DAYS
) -> pd.DataFrame:
    """First drafts and those flagged, per prompt version and violation code, over the days before `day`.

    Rows (prompt_version, violation_code, drafts_flagged, drafts); a row with a null code carries the
    version's draft and pass counts (`drafts_flagged` then holds the drafts that passed).
    """
    columns = ["prompt_version", "violation_code", "drafts_flagged", "drafts"]
    if not (table_exists(con, "marts", "gate_metrics") and table_exists(con, "marts", "gate_violations")):
        return pd.DataFrame(columns=columns)
    return con.execute(
        """WITH window_metrics AS (
               SELECT prompt_version, sum(drafts) AS drafts, sum(passed) AS passed
               FROM marts.gate_metrics
               WHERE campaign_id = $campaign AND attempt = 0 AND day < $day AND day >= $since
               GROUP BY prompt_version)
           SELECT w.prompt_version, NULL AS violation_code, w.passed AS drafts_flagged, w.drafts FROM window_metrics w
           UNION ALL
           SELECT v.prompt_version, v.violation_code, sum(v.drafts_flagged), any_value(w.drafts)
           FROM marts.gate_violations v JOIN window_metrics w USING (prompt_version)
           WHERE v.campaign_id = $campaign AND v.attempt = 0 AND v.day < $day AND v.day >= $since
           GROUP BY v.prompt_version, v.violation_code
           ORDER BY 1, 2 NULLS FIRST""",
        {"campaign": campaign_id, "day": day, "since": day - timedelta(days=lookback_days)},
    ).df()


def model_stage_quality(con: duckdb.DuckDBPyConnection, campaign_id: str) -> pd.DataFrame | None:
    """The campaign's rows of marts.model_stage_quality (what routing canaries are proposed from)."""
    if not table_exists(con, "marts", "model_stage_quality"):
        return None
    return con.execute("SELECT * FROM marts.model_stage_quality WHERE campaign_id = ?", [campaign_id]).df()


VOLUME_DAYS = 7  # the recent days whose assignments say how many leads a segment gets a day


def daily_leads(con: duckdb.DuckDBPyConnection, campaign_id: str, day: date) -> dict[str, float]:
    """Loop (non-holdout) leads assigned per segment per day over the VOLUME_DAYS before `day`."""
    rows = con.execute(
        """SELECT segment, count(*) / $days FROM raw.assignments
           WHERE campaign_id = $campaign AND partition_day < $day AND partition_day >= $day - $days::INTEGER
             AND NOT coalesce(holdout, false)
           GROUP BY segment""",
        {"campaign": campaign_id, "day": day, "days": VOLUME_DAYS},
    ).fetchall()
    return {segment: float(per_day) for segment, per_day in rows}


def days_to_planned_sample(experiment: Experiment, leads_per_day: Mapping[str, float], window_days: int) -> int | None:
    """Days until each challenger has its planned mature sends at the recent volume (None: no volume yet).

    Shown with every prompt proposal, so a person sees what a design costs in time before approving it.
    """
    per_day = sum(leads_per_day.get(s, 0.0) for s in experiment.target_segments)
    per_challenger = per_day * experiment.max_traffic_share / len(experiment.challengers)
    if per_challenger <= 0:
        return None
    return math.ceil(experiment.planned_sample_size / per_challenger) + window_days


def read_evidence(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date) -> Evidence:
    """Everything the day's proposals need from the warehouse."""
    state = current_version(con, spec).state
    return Evidence(
        day=day,
        champions=dict(state.champions),
        routing=dict(state.routing),
        experiments=tuple(list_experiments(con, spec.campaign_id)),
        sends=mature_sends(con, spec.campaign_id, day, spec.improve.outcome_window_days),
        gate_stats=gate_stats(con, spec.campaign_id, day),
        quality=model_stage_quality(con, spec.campaign_id),
        open_count=count_open_proposals(con, spec.campaign_id),
        daily_leads=daily_leads(con, spec.campaign_id, day),
    )


# ---------------------------------------------------------------- figures


def _rate(events: float, sends: float, prior: float) -> float:
    """Events per send, shrunk towards `prior` with the weight of PRIOR_SENDS sends."""
    return (events + prior * PRIOR_SENDS) / (sends + PRIOR_SENDS)


def segment_figures(sends: pd.DataFrame, segments: Iterable[str]) -> dict[str, dict[str, int]]:
    """Mature sends and their outcomes per segment (the numbers base rates are made from)."""
    figures = {}
    for segment in segments:
        mine = sends[sends.segment == segment]
        figures[segment] = {
            "mature_sends": len(mine),
            "positive_replies": int(mine.positive.sum()),
            "unsubscribes": int(mine.unsubscribed.sum()),
            "complaints": int(mine.complained.sum()),
            "negative_replies": int((mine.replied & ~mine.positive).sum()),
        }
    return figures


def design_rates(figures: Mapping[str, Mapping[str, int]], prior_positive_rate: float) -> tuple[float, tuple[Guardrail, ...]]:
    """The pooled base rate of the primary metric and the guardrails, for the segments in `figures`."""
    sends = sum(f["mature_sends"] for f in figures.values())

    def total(column: str) -> int:
        return sum(f[column] for f in figures.values())

    base = max(MIN_BASE_RATE, _rate(total("positive_replies"), sends, prior_positive_rate))
    rates = {r.metric: _rate(total(METRIC_COUNTS[r.metric]), sends, r.base_rate_floor) for r in GUARDRAIL_RULES}
    return base, relative_guardrails(rates)


def _opens_with_question(body: str) -> bool:
    """Whether the paragraph after the greeting starts with a question."""
    paragraphs = [p.strip() for p in str(body).split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return False
    opening = paragraphs[1]
    end = min((i for i in (opening.find("?"), opening.find(". "), opening.find("! ")) if i >= 0), default=len(opening))
    return opening[end : end + 1] == "?"


def _profile(bodies: pd.Series) -> dict[str, float] | None:
    if bodies.empty:
        return None
    return {
        "messages": len(bodies),
        "mean_words": round(float(bodies.map(lambda b: len(str(b).split())).mean()), 1),
        "question_opening_share": round(float(bodies.map(_opens_with_question).mean()), 3),
    }


def message_profile(sends: pd.DataFrame, segments: Sequence[str]) -> dict[str, Any]:
    """What the positively answered messages of `segments` share against the others, as figures."""
    mine = sends[sends.segment.isin(segments) & sends.body.notna()]
    by = {}
    for column in ("angle", "prompt_version"):
        grouped = mine.groupby(column).positive.agg(["size", "sum"]).sort_index()
        by[column] = [
            {column: str(key), "sends": int(row["size"]), "positive_rate": round(float(row["sum"] / row["size"]), 4)}
            for key, row in grouped.iterrows()
        ]
    return {
        "mature_sends": len(mine),
        "positive": int(mine.positive.sum()),
        "positive_messages": _profile(mine.body[mine.positive]),
        "other_messages": _profile(mine.body[~mine.positive]),
        "angles": by["angle"],
        "prompt_versions": by["prompt_version"],
    }


def gate_catches(stats: pd.DataFrame, prompt_version: str, top: int = 5) -> tuple[list[dict[str, Any]], float | None]:
    """The violation codes most often caught in first drafts of `prompt_version` (all versions when it has none),
    each with its share of first drafts, and the first-pass rate."""
    mine = stats[stats.prompt_version == prompt_version]
    mine = mine if not mine.empty else stats
    totals = mine[mine.violation_code.isna()]
    drafts = int(totals.drafts.sum())
    if drafts == 0:
        return [], None
    codes = mine[mine.violation_code.notna()].groupby("violation_code").drafts_flagged.sum().sort_values(ascending=False)
    catches = [
        {"code": str(code), "drafts_flagged": int(flagged), "share_of_drafts": round(float(flagged) / drafts, 4)}
        for code, flagged in codes.head(top).items()
    ]
    return catches, round(float(totals.drafts_flagged.sum()) / drafts, 4)


# ---------------------------------------------------------------- which segments are free for what


def _tried(experiments: Iterable[Experiment], version: str, segment: str) -> bool:
    """Was `version` a challenger in `segment` already (in any experiment people did not reject)?"""
    return any(
        e.kind == "prompt_version" and e.state != "rejected" and version in e.challengers and segment in e.target_segments
        for e in experiments
    )


def _queued(experiments: Iterable[Experiment], segment: str) -> bool:
    """Is a prompt experiment already waiting to start in `segment`?"""
    return any(e.kind == "prompt_version" and e.state in WAITING_STATES and segment in e.target_segments for e in experiments)


def champion_groups(champions: Mapping[str, str], segments: Sequence[str]) -> dict[str, list[str]]:
    """Champion prompt version -> the segments (in spec order) it champions."""
    groups: dict[str, list[str]] = {}
    for segment in segments:
        groups.setdefault(champions[segment], []).append(segment)
    return groups


def _prompt_experiment(
    spec: CampaignSpec,
    evidence: Evidence,
    *,
    control: str,
    challenger: str,
    segments: Sequence[str],
    hypothesis: str,
    figures: Mapping[str, Any],
    proposed_by: str,
    at: datetime,
) -> Experiment:
    per_segment = segment_figures(evidence.sends, segments)
    base_rate, guardrails = design_rates(per_segment, spec.allocation.prior_positive_rate)
    experiment = propose(
        campaign_id=spec.campaign_id,
        kind="prompt_version",
        hypothesis=hypothesis,
        control=control,
        challengers=[challenger],
        target_segments=list(segments),
        primary_metric=PRIMARY_METRIC,
        base_rate=base_rate,
        mde=MDE,
        guardrails=guardrails,
        max_traffic_share=spec.improve.challenger_share,
        motivating_figures={**figures, "segments": per_segment, "base_rate": round(base_rate, 5)},
        proposed_by=proposed_by,
        at=at,
    )
    days = days_to_planned_sample(experiment, evidence.daily_leads, spec.improve.outcome_window_days)
    timing = {"days_to_planned_sample": days, "max_days": experiment.stopping_rule.max_days}
    return replace(experiment, motivating_figures={**experiment.motivating_figures, **timing})


def spec_challengers(spec: CampaignSpec, evidence: Evidence, at: datetime) -> list[Experiment]:
    """The spec's extra prompt versions against each champion, in the segments where they were never tried
    and no prompt experiment waits to start (one proposed today counts as waiting)."""
    segments = [s.name for s in spec.segments]
    proposals: list[Experiment] = []
    for version in spec.drafting.prompt_versions[1:]:
        for champion, group in champion_groups(evidence.champions, segments).items():
            claimed = {s for e in proposals for s in e.target_segments}
            targets = [
                s
                for s in group
                if champion != version
                and s not in claimed
                and not _tried(evidence.experiments, version, s)
                and not _queued(evidence.experiments, s)
            ]
            if not targets:
                continue
            proposals.append(
                _prompt_experiment(
                    spec,
                    evidence,
                    control=champion,
                    challenger=version,
                    segments=targets,
                    hypothesis=(
                        f"{version}, the spec's own prompt version, earns more positive replies per send than the "
                        f"champion {champion} in {', '.join(targets)}, without more unsubscribes, complaints or "
                        "negative replies"
                    ),
                    figures={"source": "spec", "prompt_version": version},
                    proposed_by=SPEC_AUTHOR,
                    at=at,
                )
            )
    return proposals


# ---------------------------------------------------------------- a prompt the premium model writes


@dataclass(frozen=True)
class WritingTask:
    """Which champion the premium model rewrites today, for which segments, from which figures."""

    parent: str
    segments: tuple[str, ...]
    brief: dict[str, Any]


def writing_task(spec: CampaignSpec, evidence: Evidence, claimed: Iterable[str] = ()) -> tuple[WritingTask | None, str]:
    """The champion group to write a challenger for (the one with most mature sends), in its segments
    where no prompt experiment waits to start and none of today's proposals (`claimed`) goes; and its
    brief. None and why when there is no such segment or too little to write from."""
    segments = [s.name for s in spec.segments]
    claimed = set(claimed)
    candidates = []
    for champion, group in champion_groups(evidence.champions, segments).items():
        free = [s for s in group if s not in claimed and not _queued(evidence.experiments, s)]
        if free:
            candidates.append((int(evidence.sends.segment.isin(free).sum()), champion, free))
    if not candidates:
        return None, "every segment has a prompt experiment waiting to start (or proposed today)"
    _, parent, free = max(candidates, key=lambda c: (c[0], -segments.index(c[2][0])))
    profile = message_profile(evidence.sends, free)
    if profile["mature_sends"] < MIN_EVIDENCE_SENDS or profile["positive"] < MIN_EVIDENCE_POSITIVE:
        return None, (
            f"too little to write a prompt from: {profile['mature_sends']} mature sends with "
            f"{profile['positive']} positive replies in {', '.join(free)} "
            f"(at least {MIN_EVIDENCE_SENDS} and {MIN_EVIDENCE_POSITIVE} needed)"
        )
    catches, first_pass = gate_catches(evidence.gate_stats, parent)
    brief = {
        "task": "improve_prompt",
        "stage": "draft",
        "parent": {"version": parent, "text": prompt(parent).system},
        "required_rules": list(DRAFT_REQUIRED_RULES),
        "max_chars": DRAFT_PROMPT_MAX_CHARS,
        "segments": free,
        "offer": spec.offer,
        "voice": spec.voice.tone,
        "messages": profile,
        "gate_catches": catches,
        "first_pass_rate": first_pass,
    }
    return WritingTask(parent, tuple(free), brief), f"rewriting {parent} for {', '.join(free)}"


@dataclass(frozen=True)
class WrittenPrompt:
    template: PromptTemplate
    parent: str
    rationale: str
    model: str
    call_id: str | None


def parse_prompt_answer(text: str, parent_text: str) -> tuple[PromptAnswer | None, list[str]]:
    """The model's answer and what makes it unusable (empty: usable)."""
    try:
        answer = PromptAnswer.model_validate_json(text)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(map(str, problem["loc"])) or "top level"
        return None, [f"not a prompt answer: {problem['msg']} at {where}: {text[:120]!r}"]
    return answer, [f"the prompt {p}" for p in draft_prompt_problems(answer.prompt, parent_text)]


def write_prompt(gateway: ModelGateway, task: WritingTask) -> tuple[WrittenPrompt | None, list[str]]:
    """Ask the premium model for a new draft prompt; (None, why) when every attempt was unusable."""
    messages = build_messages(IMPROVE_PROMPT_VERSION, task.brief)
    problems: list[str] = []
    for seed in range(IMPROVE_ATTEMPTS):
        result = gateway.complete(
            CallRequest(IMPROVE_STAGE, IMPROVE_PROMPT_VERSION, messages, seed=seed, response_model=PromptAnswer)
        )
        if result.status == DEFERRED:
            return None, [*problems, "the daily model budget is spent"]
        if result.status not in {"ok", "invalid"}:
            problems.append(f"attempt {seed + 1}: model call {result.status}" + (f": {result.error}" if result.error else ""))
            continue
        answer, wrong = parse_prompt_answer(result.text, task.brief["parent"]["text"])
        if answer is None or wrong:
            problems.append(f"attempt {seed + 1} ({result.model}): " + "; ".join(wrong))
            continue
        text = answer.prompt.strip()
        template = PromptTemplate(content_version("draft", text), "draft", text)
        return WrittenPrompt(template, task.parent, " ".join(answer.rationale.split())[:400], result.model, result.call_id), []
    return None, problems


def written_challenger(
    spec: CampaignSpec, evidence: Evidence, task: WritingTask, written: WrittenPrompt, at: datetime
) -> Experiment | None:
    """The experiment testing a written prompt against its parent, in the task's segments where it is new."""
    name = written.template.version
    targets = [s for s in task.segments if not _tried(evidence.experiments, name, s)]
    if not targets or name == written.parent:
        return None
    return _prompt_experiment(
        spec,
        evidence,
        control=written.parent,
        challenger=name,
        segments=targets,
        hypothesis=(
            f"{name}, a draft prompt {written.model} wrote from {written.parent}, earns more positive replies per send "
            f"than {written.parent} in {', '.join(targets)}: {written.rationale or 'no rationale given'}"
        ),
        figures={
            "source": "premium model",
            "prompt_version": name,
            "parent": written.parent,
            "model": written.model,
            "llm_call_id": written.call_id,
            "rationale": written.rationale,
            "messages": task.brief["messages"],
            "gate_catches": task.brief["gate_catches"],
            "first_pass_rate": task.brief["first_pass_rate"],
        },
        proposed_by=f"{written.model} ({IMPROVE_PROMPT_VERSION})",
        at=at,
    )


def prompt_version_row(written: WrittenPrompt, campaign_id: str) -> dict[str, Any]:
    """The raw.prompt_versions row of a written prompt, with its parent and who wrote it."""
    t = written.template
    return {
        "prompt_version": t.version,
        "stage": t.stage,
        "template_sha256": t.sha256,
        "template": t.system,
        "first_seen_at": utcnow(),
        "parent": written.parent,
        "campaign_id": campaign_id,
        "origin": f"written by {written.model} ({IMPROVE_PROMPT_VERSION})",
    }


# ---------------------------------------------------------------- routing canaries


def routing_canaries(registry: ModelRegistry, environ: Mapping[str, str]) -> CanaryProposer:
    """Draft-stage routing canaries (`canaries.propose_routing_canaries`) from marts.model_stage_quality,
    for the model that serves the draft stage today (the loop's choice, else the spec's route)."""

    def canaries(evidence: Evidence, spec: CampaignSpec, at: datetime) -> list[Experiment]:
        if evidence.quality is None:
            return []
        current = stage_model("draft", evidence.routing, spec, lambda name: registry.serving(name, environ))
        return propose_routing_canaries(evidence.quality, registry, current, spec, at, history=evidence.experiments)

    return canaries


# ---------------------------------------------------------------- the day


@dataclass
class ProposalReport:
    """What the day's improve stage proposed, approved automatically, and why anything was not done."""

    proposed: list[Experiment] = field(default_factory=list)
    auto_approved: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # experiment id -> why it waits for a person
    notes: list[str] = field(default_factory=list)
    written: WrittenPrompt | None = None
    open_experiments: list[Experiment] = field(default_factory=list)


def _bounded(
    candidates: Iterable[Experiment], room: int, con: duckdb.DuckDBPyConnection, report: ProposalReport
) -> list[Experiment]:
    """The candidates that duplicate no open or recently rejected design, at most `room` of them; the rest are noted."""
    chosen = []
    for experiment in candidates:
        design = f"{experiment.kind} {experiment.control} → {', '.join(experiment.challengers)}"
        if duplicates := find_duplicates(con, experiment):
            report.notes.append(
                f"not proposed: {design} duplicates " + ", ".join(f"{d.experiment_id} ({d.state})" for d in duplicates)
            )
        elif len(chosen) >= room:
            report.notes.append(f"not proposed: {design} (the limit of open experiments is reached)")
        else:
            chosen.append(experiment)
    return chosen


def _apply_policy(
    con: duckdb.DuckDBPyConnection,
    spec: CampaignSpec,
    run: RunContext,
    experiment: Experiment,
    at: datetime,
    report: ProposalReport,
) -> None:
    """Approve a proposal the spec's policy lets start without a person (inside the caller's transaction)."""
    approved = auto_approve(experiment, spec.improve.auto_approve, at)
    if approved is None:
        report.waiting[experiment.experiment_id] = auto_approval(experiment, spec.improve.auto_approve).reason
        return
    write_transition(con, *approved, run_id=run.run_id, partition_day=run.partition_day)
    report.auto_approved.append(experiment.experiment_id)


def _record(
    con: duckdb.DuckDBPyConnection,
    spec: CampaignSpec,
    run: RunContext,
    experiments: Sequence[Experiment],
    written: WrittenPrompt | None,
    at: datetime,
    report: ProposalReport,
) -> None:
    """Save each proposal (a written prompt's version with it) and apply the auto-approve policy, each all or nothing."""
    for experiment in experiments:
        with transaction(con):
            if written is not None and written.template.version in experiment.challengers:
                insert_rows(
                    con, "prompt_versions", pd.DataFrame([prompt_version_row(written, spec.campaign_id)]), skip_existing=True
                )
                remember(written.template)
            if not save_proposed(con, experiment, run):
                report.notes.append(f"{experiment.experiment_id} was recorded already")
                continue
            report.proposed.append(experiment)
            _apply_policy(con, spec, run, experiment, at, report)


def propose_day(
    warehouse: Warehouse,
    spec: CampaignSpec,
    gateway: ModelGateway,
    *,
    canaries: CanaryProposer | None = None,
    at: datetime | None = None,
) -> ProposalReport:
    """The day's proposals: read the marts, propose within the bounds, store, auto-approve by policy.

    `warehouse` opens a connection; none is held while the premium model writes. `canaries`
    proposes routing canaries from the evidence (default: `routing_canaries` over the gateway's
    registry). Every model call is ledgered, also when its answer was unusable.
    """
    canaries = canaries or routing_canaries(gateway.registry, gateway.environ)
    run = gateway.run
    at = at or proposal_time(run.partition_day)
    report = ProposalReport()
    limit = spec.improve.max_open_proposals
    with warehouse() as con:
        evidence = read_evidence(con, spec, run.partition_day)
        if evidence.proposed_today:
            # A re-run of the day: nothing new, only the policy is applied again to what still waits.
            report.notes.append(f"the day already proposed {len(evidence.proposed_today)} experiments; nothing new")
            for experiment in evidence.proposed_today:
                if experiment.state == "proposed":
                    with transaction(con):
                        _apply_policy(con, spec, run, experiment, at, report)
            report.open_experiments = list_experiments(con, spec.campaign_id, OPEN_STATES)
            return report
        room = limit - evidence.open_count
        chosen = _bounded(spec_challengers(spec, evidence, at), room, con, report)
    task, why = None, f"{evidence.open_count + len(chosen)} experiments open or proposed, the limit is {limit}"
    if len(chosen) < room:
        task, why = writing_task(spec, evidence, claimed=[s for e in chosen for s in e.target_segments])
    report.notes.append(f"premium prompt writing: {why}")
    if task is not None:
        report.written, problems = write_prompt(gateway, task)
        if problems:
            report.notes.append("no prompt challenger today, the premium model's answer was unusable: " + " | ".join(problems))
    with warehouse() as con:
        more = canaries(evidence, spec, at)
        if task is not None and report.written is not None:
            challenger = written_challenger(spec, evidence, task, report.written, at)
            if challenger is None:
                report.notes.append(
                    f"the written prompt {report.written.template.version} was tried before in every target segment"
                )
            more = [challenger, *more] if challenger is not None else more
        chosen += _bounded(more, room - len(chosen), con, report)
        _record(con, spec, run, chosen, report.written, at, report)
        with transaction(con):
            write_ledger(con, gateway)
        report.open_experiments = list_experiments(con, spec.campaign_id, OPEN_STATES)
    return report


# ---------------------------------------------------------------- reporting


def open_proposals_table(experiments: Sequence[Experiment]) -> str:
    """The open experiments as a markdown table, for the asset's metadata."""
    if not experiments:
        return "no open experiments"
    rows = [
        {
            "id": e.experiment_id,
            "kind": e.kind,
            "hypothesis": e.hypothesis if len(e.hypothesis) <= 120 else e.hypothesis[:117] + "...",
            "control → challengers": f"{e.control} → {', '.join(e.challengers)}",
            "segments": ", ".join(e.target_segments),
            "share": f"{e.max_traffic_share:.0%}",
            "planned sample": e.planned_sample_size,
            "days to sample": e.motivating_figures.get("days_to_planned_sample", ""),
            "state": e.state,
        }
        for e in experiments
    ]
    return pd.DataFrame(rows).to_markdown(index=False)
