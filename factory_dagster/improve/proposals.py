"""The factory proposes: prompt versions, hooks, segment splits and routing canaries, bounded, auto-approved by policy.

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
3. **A hook the premium model writes** for the angle with the most mature sends where no hook
   experiment is open (`improve.hooks`: one sentence, no claim the spec does not allow).
4. **Segment splits** where a segment's best angle differs by a lead attribute (`improve.splits`,
   statistics on the mature sends; a split always needs a person).
5. **Routing canaries** for the draft stage, from `improve.canaries` (routing always needs a person).

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

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

import duckdb
import pandas as pd
from pydantic import BaseModel

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.improve.canaries import propose_routing_canaries
from factory_dagster.improve.evidence import (
    Evidence,
    design_experiment,
    gate_catches,
    message_profile,
    read_evidence,
)
from factory_dagster.improve.experiments import (
    OPEN_STATES,
    Experiment,
    auto_approval,
    auto_approve,
)
from factory_dagster.improve.hooks import WrittenHook, hook_experiment, hook_task, hook_version_row, stored_hooks, write_hook
from factory_dagster.improve.premium import ask_premium, parse_answer
from factory_dagster.improve.splits import propose_splits
from factory_dagster.improve.store import (
    find_duplicates,
    list_experiments,
    save_proposed,
    write_transition,
)
from factory_dagster.models.gateway import ModelGateway
from factory_dagster.models.ledger import write_ledger
from factory_dagster.models.prompts import (
    DRAFT_PROMPT_MAX_CHARS,
    DRAFT_REQUIRED_RULES,
    IMPROVE_PROMPT_VERSION,
    PromptTemplate,
    content_version,
    draft_prompt_problems,
    prompt,
    remember,
)
from factory_dagster.models.registry import ModelRegistry
from factory_dagster.models.routing import stage_model
from factory_dagster.run_context import RunContext, utcnow
from factory_dagster.warehouse.store import insert_rows, transaction

# The premium model writes only from enough mature, answered messages: fewer say nothing.
MIN_EVIDENCE_SENDS = 100
MIN_EVIDENCE_POSITIVE = 5
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
                design_experiment(
                    spec,
                    evidence,
                    kind="prompt_version",
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
    answer, problems = parse_answer(text, PromptAnswer, "a prompt answer")
    if answer is None:
        return None, problems
    return answer, [f"the prompt {p}" for p in draft_prompt_problems(answer.prompt, parent_text)]


def write_prompt(gateway: ModelGateway, task: WritingTask) -> tuple[WrittenPrompt | None, list[str]]:
    """Ask the premium model for a new draft prompt; (None, why) when every attempt was unusable."""
    parent_text = task.brief["parent"]["text"]
    written, problems = ask_premium(
        gateway, IMPROVE_PROMPT_VERSION, task.brief, PromptAnswer, lambda text: parse_prompt_answer(text, parent_text)
    )
    if written is None:
        return None, problems
    text = written.answer.prompt.strip()
    template = PromptTemplate(content_version("draft", text), "draft", text)
    rationale = " ".join(written.answer.rationale.split())[:400]
    return WrittenPrompt(template, task.parent, rationale, written.model, written.call_id), []


def written_challenger(
    spec: CampaignSpec, evidence: Evidence, task: WritingTask, written: WrittenPrompt, at: datetime
) -> Experiment | None:
    """The experiment testing a written prompt against its parent, in the task's segments where it is new."""
    name = written.template.version
    targets = [s for s in task.segments if not _tried(evidence.experiments, name, s)]
    if not targets or name == written.parent:
        return None
    return design_experiment(
        spec,
        evidence,
        kind="prompt_version",
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
    hook: WrittenHook | None = None
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
    hook: WrittenHook | None,
    at: datetime,
    report: ProposalReport,
) -> None:
    """Save each proposal (a written prompt's or hook's version with it) and apply the auto-approve policy,
    each all or nothing."""
    for experiment in experiments:
        with transaction(con):
            if written is not None and written.template.version in experiment.challengers:
                insert_rows(
                    con, "prompt_versions", pd.DataFrame([prompt_version_row(written, spec.campaign_id)]), skip_existing=True
                )
                remember(written.template)
            if hook is not None and experiment.kind == "hook" and hook.hook_version in experiment.challengers:
                insert_rows(con, "hook_versions", pd.DataFrame([hook_version_row(hook, spec.campaign_id)]), skip_existing=True)
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
        hook_texts = stored_hooks(con, spec.campaign_id)
    full = f"{evidence.open_count + len(chosen)} experiments open or proposed, the limit is {limit}"
    task, why = None, full
    if len(chosen) < room:
        task, why = writing_task(spec, evidence, claimed=[s for e in chosen for s in e.target_segments])
    report.notes.append(f"premium prompt writing: {why}")
    if task is not None:
        report.written, problems = write_prompt(gateway, task)
        if problems:
            report.notes.append("no prompt challenger today, the premium model's answer was unusable: " + " | ".join(problems))
    hook_job, why = None, full
    if len(chosen) + (report.written is not None) < room:
        hook_job, why = hook_task(spec, evidence, hook_texts)
    report.notes.append(f"premium hook writing: {why}")
    if hook_job is not None:
        report.hook, problems = write_hook(gateway, spec, hook_job)
        if problems:
            report.notes.append("no hook challenger today, the premium model's answer was unusable: " + " | ".join(problems))
    with warehouse() as con:
        written = []  # what the premium model wrote today, before the canaries
        if task is not None and report.written is not None:
            challenger = written_challenger(spec, evidence, task, report.written, at)
            if challenger is None:
                report.notes.append(
                    f"the written prompt {report.written.template.version} was tried before in every target segment"
                )
            written += [challenger] if challenger is not None else []
        if report.hook is not None:
            written.append(hook_experiment(spec, evidence, report.hook, at))
        more = [*written, *propose_splits(spec, evidence, evidence.splits, at), *canaries(evidence, spec, at)]
        chosen += _bounded(more, room - len(chosen), con, report)
        _record(con, spec, run, chosen, report.written, report.hook, at, report)
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
