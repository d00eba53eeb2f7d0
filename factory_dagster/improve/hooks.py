"""Hook experiments: the premium model rewords one angle's hook, within the claims the spec allows.

The hook is the sentence after a message's opener that makes the angle's case (the plan gives one
per segment and angle each day). Once a day, when there is room, the improve stage picks the angle
with the most mature sends among segments where no hook experiment is open, and asks the premium
model (stage `improve`, prompt `hook-v1`) for a new wording from what the positively answered
messages of that angle share and the hooks in use. The answer must be one sentence within
HOOK_MAX_CHARS, and it may add no claim: the draft gate's own content rules (`gates.rules.
content_violations`) refuse any banned phrase, placeholder, or number, offer or link the angle's
claims do not have, so a new claim still needs a person to edit the spec. A usable hook is
content-addressed (`hook-<8 hex>`), stored in `raw.hook_versions` with its parent, and proposed as
a `hook` experiment against the segments' champion hook (the plan's hook until one is promoted).

Hook experiments run in a layer of their own (only the leads of their angle), so they run beside
a prompt or routing experiment; the spec's auto-approve policy decides whether they need a person.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
from pydantic import BaseModel

from factory_dagster.campaign.spec import CampaignSpec
from factory_dagster.gates.rules import allowed_numbers, content_violations
from factory_dagster.improve.evidence import Evidence, design_experiment, message_profile
from factory_dagster.improve.experiments import OPEN_STATES, Experiment
from factory_dagster.improve.premium import ask_premium, parse_answer
from factory_dagster.improve.versions import PLAN_HOOK
from factory_dagster.models.gateway import ModelGateway
from factory_dagster.models.prompts import HOOK_PROMPT_VERSION
from factory_dagster.run_context import utcnow

HOOK_MAX_CHARS = 200
HOOK_MIN_CHARS = 20
# Enough mature sends of the angle, with some positive replies among them, to write from.
MIN_ANGLE_SENDS = 60
MIN_ANGLE_POSITIVE = 3


class HookAnswer(BaseModel):
    """What the premium model must answer to `hook-v1`."""

    hook: str
    rationale: str


@dataclass(frozen=True)
class HookTask:
    """Which angle's hook the premium model rewords today, against which champion, for which segments."""

    angle: str
    parent: str  # the segments' champion hook: a hook version, or PLAN_HOOK
    segments: tuple[str, ...]
    eligible_share: float  # the angle's share of these segments' recent mature sends
    brief: dict[str, Any]


@dataclass(frozen=True)
class WrittenHook:
    hook_version: str
    text: str
    task: HookTask
    rationale: str
    model: str
    call_id: str | None


def stored_hooks(con: duckdb.DuckDBPyConnection, campaign_id: str) -> dict[str, str]:
    """Hook version -> text, for the campaign's written hooks."""
    rows = con.execute("SELECT hook_version, text FROM raw.hook_versions WHERE campaign_id = ?", [campaign_id]).fetchall()
    return dict(rows)


def hook_version_id(text: str) -> str:
    """Content address of a hook: the same wording is the same version."""
    return "hook-" + hashlib.sha256(" ".join(text.split()).encode()).hexdigest()[:8]


def hook_problems(text: str, spec: CampaignSpec, angle: str, in_use: Iterable[str] = ()) -> list[str]:
    """What makes a hook unusable (empty: usable): its form, and anything it says beyond the angle's claims."""
    spec_angle = next((a for a in spec.angles if a.name == angle), None)
    if spec_angle is None:
        return [f"angle {angle!r} is not in the spec"]
    hook = " ".join(text.split())
    problems = []
    if len(hook) < HOOK_MIN_CHARS:
        problems.append(f"is {len(hook)} characters, fewer than {HOOK_MIN_CHARS}")
    if len(hook) > HOOK_MAX_CHARS:
        problems.append(f"is {len(hook)} characters, more than {HOOK_MAX_CHARS}")
    if "\n" in text.strip() or "<" in hook or ">" in hook:
        problems.append("must be one line of plain text")
    if hook.lower() in {" ".join(h.split()).lower() for h in in_use}:
        problems.append("repeats a hook in use")
    allowed = allowed_numbers(spec, spec_angle, {})
    problems += [v.detail for v in content_violations(hook, hook, spec, spec_angle, allowed)]
    return problems


def _open_hook_segments(experiments: Iterable[Experiment]) -> set[str]:
    return {s for e in experiments if e.kind == "hook" and e.state in OPEN_STATES for s in e.target_segments}


def hook_task(spec: CampaignSpec, evidence: Evidence, hook_texts: Mapping[str, str]) -> tuple[HookTask | None, str]:
    """The angle (and champion hook group) with the most mature sends in segments with no open hook
    experiment, and its brief; None and why when there is none or too little to write from.

    `hook_texts`: hook version -> text (raw.hook_versions), to show the model the champion's wording.
    """
    busy = _open_hook_segments(evidence.experiments)
    segments = [s.name for s in spec.segments if s.name not in busy]
    if not segments:
        return None, "every segment has a hook experiment open"
    sends = evidence.sends
    candidates = []
    for angle in spec.angles:
        groups: dict[str, list[str]] = {}
        for segment in segments:
            groups.setdefault(evidence.hooks.get(f"{segment}|{angle.name}", PLAN_HOOK), []).append(segment)
        for parent, group in groups.items():
            mine = sends[sends.segment.isin(group) & (sends.angle == angle.name)]
            candidates.append((len(mine), int(mine.positive.sum()), angle.name, parent, group))
    count, positive, angle_name, parent, group = max(candidates, key=lambda c: (c[0], c[1]))
    if count < MIN_ANGLE_SENDS or positive < MIN_ANGLE_POSITIVE:
        return None, (
            f"too little to write a hook from: at most {count} mature sends with {positive} positive replies in one "
            f"angle (at least {MIN_ANGLE_SENDS} and {MIN_ANGLE_POSITIVE} needed)"
        )
    angle = next(a for a in spec.angles if a.name == angle_name)
    in_use = sorted(
        {evidence.plan_hooks[f"{s}|{angle_name}"] for s in group if f"{s}|{angle_name}" in evidence.plan_hooks}
        | ({hook_texts[parent]} if parent in hook_texts else set())
    )
    in_segments = sends[sends.segment.isin(group)]
    profile = message_profile(in_segments[in_segments.angle == angle_name], group)
    brief = {
        "task": "improve_hook",
        "angle": angle_name,
        "hypothesis": angle.hypothesis,
        "claims": list(angle.claims),
        "hooks_in_use": in_use,
        "max_chars": HOOK_MAX_CHARS,
        "banned_phrases": list(spec.banned_phrases),
        "segments": group,
        "voice": spec.voice.tone,
        "messages": profile,
    }
    share = count / max(1, len(in_segments))
    return HookTask(angle_name, parent, tuple(group), share, brief), f"rewording the {angle_name} hook for {', '.join(group)}"


def parse_hook_answer(text: str, spec: CampaignSpec, task: HookTask) -> tuple[HookAnswer | None, list[str]]:
    answer, problems = parse_answer(text, HookAnswer, "a hook answer")
    if answer is None:
        return None, problems
    return answer, [f"the hook {p}" for p in hook_problems(answer.hook, spec, task.angle, task.brief["hooks_in_use"])]


def write_hook(gateway: ModelGateway, spec: CampaignSpec, task: HookTask) -> tuple[WrittenHook | None, list[str]]:
    """Ask the premium model for a new hook; (None, why) when every attempt was unusable."""
    written, problems = ask_premium(
        gateway, HOOK_PROMPT_VERSION, task.brief, HookAnswer, lambda text: parse_hook_answer(text, spec, task)
    )
    if written is None:
        return None, problems
    text = " ".join(written.answer.hook.split())
    rationale = " ".join(written.answer.rationale.split())[:400]
    return WrittenHook(hook_version_id(text), text, task, rationale, written.model, written.call_id), []


def hook_experiment(spec: CampaignSpec, evidence: Evidence, written: WrittenHook, at: datetime) -> Experiment:
    """The experiment testing a written hook against the segments' champion hook, on the angle's own rates."""
    task = written.task
    control = "the plan's hook of the day" if task.parent == PLAN_HOOK else task.parent
    return design_experiment(
        spec,
        evidence,
        kind="hook",
        control=task.parent,
        challenger=written.hook_version,
        segments=task.segments,
        hypothesis=(
            f"In angle {task.angle}, the hook {written.text!r} ({written.hook_version}, written by {written.model}) earns more "
            f"positive replies per send than {control} in {', '.join(task.segments)}, without more unsubscribes, complaints "
            f"or negative replies: {written.rationale or 'no rationale given'}"
        ),
        figures={
            "source": "premium model",
            "angle": task.angle,
            "hook": written.text,
            "parent": task.parent,
            "hooks_in_use": task.brief["hooks_in_use"],
            "model": written.model,
            "llm_call_id": written.call_id,
            "rationale": written.rationale,
            "messages": task.brief["messages"],
            "angle_share_of_sends": round(task.eligible_share, 3),
        },
        proposed_by=f"{written.model} ({HOOK_PROMPT_VERSION})",
        at=at,
        sends=evidence.sends[evidence.sends.angle == task.angle],
        eligible_share=task.eligible_share,
    )


def hook_version_row(written: WrittenHook, campaign_id: str) -> dict[str, Any]:
    """The raw.hook_versions row of a written hook, with its parent and who wrote it."""
    return {
        "hook_version": written.hook_version,
        "campaign_id": campaign_id,
        "angle": written.task.angle,
        "text": written.text,
        "parent": written.task.parent,
        "origin": f"written by {written.model} ({HOOK_PROMPT_VERSION})",
        "rationale": written.rationale,
        "created_at": utcnow(),
    }
