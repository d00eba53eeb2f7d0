"""Campaign spec (YAML) validated by pydantic.

The spec is the human-set contract of a campaign: the offer, who is in which
segment, which angles (hypotheses) may make which claims, the voice, what every
message must and must not contain, the daily limits and which model serves each
stage. An invalid spec stops the run with the file and field that are wrong.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# classify: the cheap read of a reply to our email; classify_escalate: the premium read when the cheap one is unsure.
OUTREACH_MODEL_STAGES = frozenset({"plan", "draft", "repair", "escalate", "audit", "improve", "classify", "classify_escalate"})
# The content line's model stages (content/stages.py): the premium brief, the cheap variants, the premium audit.
CONTENT_MODEL_STAGES = frozenset({"content_brief", "content_variants", "content_audit"})
# Every stage that calls a model: the routing table must route each of them.
MODEL_STAGES = OUTREACH_MODEL_STAGES | CONTENT_MODEL_STAGES


class SpecError(ValueError):
    """A campaign spec that cannot be used; the message names the file and field."""


# A spec model `load_spec_file` can load: it has a `version` and a `spec_version` field.
SpecModel = TypeVar("SpecModel", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sender(_Strict):
    company: str = Field(min_length=1)
    name: str = Field(min_length=1)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    postal_address: str = Field(min_length=10)


class SegmentRule(_Strict):
    """All given conditions must hold; an empty rule matches every lead (catch-all)."""

    industry_in: list[str] | None = None
    seniority_in: list[str] | None = None
    region_in: list[str] | None = None
    company_size_min: int | None = Field(default=None, ge=1)
    company_size_max: int | None = Field(default=None, ge=1)

    def matches(self, lead: Mapping[str, Any]) -> bool:
        size = lead.get("company_size")
        return (
            (self.industry_in is None or lead.get("industry") in self.industry_in)
            and (self.seniority_in is None or lead.get("seniority") in self.seniority_in)
            and (self.region_in is None or lead.get("region") in self.region_in)
            and (self.company_size_min is None or (size is not None and size >= self.company_size_min))
            and (self.company_size_max is None or (size is not None and size <= self.company_size_max))
        )

    @property
    def is_catch_all(self) -> bool:
        return all(value is None for value in self.model_dump().values())


class Segment(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    rules: SegmentRule = SegmentRule()


class Angle(_Strict):
    """A named hypothesis about what makes this audience reply, and the claims it may make."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    hypothesis: str = Field(min_length=1)
    claims: list[str] = Field(min_length=1)

    @property
    def allowed_numbers(self) -> frozenset[str]:
        """Every number that appears in this angle's claims (others are invented)."""
        return frozenset(n for claim in self.claims for n in re.findall(r"\d+(?:[.,]\d+)?", claim))


class Voice(_Strict):
    tone: str = Field(min_length=1)
    rules: list[str] = []


class Required(_Strict):
    call_to_action: str = Field(min_length=5)
    unsubscribe_footer: str = Field(min_length=10)


class Limits(_Strict):
    min_words: int = Field(default=40, ge=1)
    max_words: int = Field(default=150, ge=10)
    max_subject_chars: int = Field(default=70, ge=10)
    daily_send_cap: int = Field(ge=0)
    daily_budget_usd: float = Field(gt=0)
    max_quarantine_ratio: float = Field(default=0.2, gt=0, le=1)
    min_gate_pass_rate: float = Field(default=0.8, ge=0, le=1)

    @model_validator(mode="after")
    def _words_in_order(self) -> Limits:
        if self.min_words >= self.max_words:
            raise ValueError("min_words must be below max_words")
        return self


class Drafting(_Strict):
    candidates: int = Field(default=3, ge=1, le=10)
    prompt_versions: list[str] = Field(default=["draft-v1"], min_length=1)
    max_repair_attempts: int = Field(default=1, ge=0, le=5)
    max_repair_tokens: int = Field(
        default=8000, ge=0, description="per lead: tokens its repair and escalation calls may spend together"
    )


class Audit(_Strict):
    """The sampled premium audit: a judge scores a share of the day's messages against a rubric."""

    sample_rate: float = Field(default=0.05, gt=0, le=1)
    min_sample: int = Field(default=5, ge=1, description="audit at least this many messages (or all, if fewer)")
    pass_score: int = Field(default=3, ge=1, le=5, description="every rubric score must reach this (scale 1-5)")
    max_failure_rate: float = Field(
        default=0.2, ge=0, le=1, description="above this share of failed audits the day's sends are held"
    )
    rubric: dict[str, str] = Field(
        default={
            "relevance": "The message fits this reader's role, company and segment, and the angle's hypothesis.",
            "tone": "The message follows the campaign voice: plain, specific, warm, no hype or pressure.",
            "truthfulness": "Every claim is one of the angle's allowed claims; nothing is invented or promised for the reader.",
        },
        min_length=1,
    )


class Consistency(_Strict):
    """What a message must keep consistent with the messages its recipient's company already got."""

    max_similarity: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="two messages to the same company going out the same day may share at most this share of their "
        "own wording (Jaccard index of word 3-shingles, names and the spec's fixed texts left out); 1 turns the "
        "rule off",
    )
    lookback_days: int = Field(default=365, ge=0, description="how far back earlier messages are read for contradictions (days)")


class Allocation(_Strict):
    exploration_floor: float = Field(default=0.1, ge=0, le=1)
    prior_sends: int = Field(default=20, ge=1)
    prior_reply_rate: float = Field(default=0.03, gt=0, lt=1)
    prior_positive_rate: float = Field(
        default=0.015, gt=0, lt=1, description="prior mean of positive replies per send (loop-v2 learns on these)"
    )
    unsubscribe_weight: float = Field(
        default=1.0,
        ge=0,
        description="loop-v2 ranks angles by positive replies minus this many times unsubscribes per send: "
        "an unsubscribe loses the lead for good, and the reply-rate trap earns them",
    )
    prior_unsubscribe_rate: float = Field(default=0.006, gt=0, lt=1, description="prior mean of unsubscribes per send")


class Improve(_Strict):
    """The loop's limits, set by people: what may start without a person, how much runs at once."""

    auto_approve: dict[str, dict[str, float]] = Field(
        default={"prompt_version": {"max_share": 0.2}},
        description="experiment kind -> {max_share: x}: proposals of that kind up to that share of a segment's "
        "traffic start without a person; segment splits and routing changes always need one",
    )
    max_open_proposals: int = Field(default=3, ge=0, description="open proposals (not yet decided by a person) at most")
    challenger_share: float = Field(
        default=0.2, gt=0, le=0.5, description="share of a segment's traffic the improve stage asks for its challengers"
    )
    holdout_share: float = Field(
        default=0.05, ge=0, lt=0.5, description="share of leads that keep the frozen baseline policy, to measure the loop"
    )
    outcome_window_days: int = Field(
        default=7, ge=1, le=30, description="a send counts towards an experiment once this many days have passed"
    )

    @field_validator("auto_approve")
    @classmethod
    def _auto_approve_is_valid(cls, policy: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        from factory_dagster.improve.experiments import auto_approve_policy_problems

        if problems := auto_approve_policy_problems(policy):
            raise ValueError("; ".join(problems))
        return policy


class CampaignSpec(_Strict):
    campaign_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    version: str = Field(min_length=1)
    language: str = Field(default="en", pattern=r"^[a-z]{2}$")
    offer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    sender: Sender
    segments: list[Segment] = Field(min_length=1)
    angles: list[Angle] = Field(min_length=1)
    voice: Voice
    banned_phrases: list[str] = []
    required: Required
    limits: Limits
    drafting: Drafting = Drafting()
    allocation: Allocation = Allocation()
    audit: Audit = Audit()
    consistency: Consistency = Consistency()
    improve: Improve = Improve()
    # Overrides of the routing table (factory_dagster/models/routing.yaml): stage -> model or fallback chain.
    routing: dict[str, str | list[str]] = {}
    # Filled in by load_spec: the declared version plus a hash of the file, so any edit is a new version.
    spec_version: str = ""

    @field_validator("segments")
    @classmethod
    def _segments_end_with_catch_all(cls, segments: list[Segment]) -> list[Segment]:
        names = [s.name for s in segments]
        if len(set(names)) != len(names):
            raise ValueError(f"segment names must be unique, got {names}")
        if not segments[-1].rules.is_catch_all:
            raise ValueError("the last segment must have empty rules so that every lead has a segment")
        return segments

    @field_validator("angles")
    @classmethod
    def _unique_angles(cls, angles: list[Angle]) -> list[Angle]:
        names = [a.name for a in angles]
        if len(set(names)) != len(names):
            raise ValueError(f"angle names must be unique, got {names}")
        return angles

    @field_validator("routing")
    @classmethod
    def _routing_names_known_stages(cls, routing: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        unknown = sorted(routing.keys() - MODEL_STAGES)
        if unknown:
            raise ValueError(f"unknown stages {unknown}; the stages that call models are {sorted(MODEL_STAGES)}")
        empty = sorted(stage for stage, chain in routing.items() if not chain)
        if empty:
            raise ValueError(f"stages {empty} name no model")
        return routing

    def chain(self, stage: str) -> list[str]:
        """This spec's model chain for a stage (empty when the routing table decides)."""
        value = self.routing.get(stage, [])
        return [value] if isinstance(value, str) else list(value)

    @property
    def model_stages(self) -> frozenset[str]:
        """The stages this line calls models for: what `models.routing.resolve_routes` routes."""
        return OUTREACH_MODEL_STAGES

    def segment_for(self, lead: Mapping[str, Any]) -> str:
        """The first segment whose rules the lead meets (the last one is a catch-all)."""
        return next(s.name for s in self.segments if s.rules.matches(lead))

    def angle(self, name: str) -> Angle:
        return next(a for a in self.angles if a.name == name)


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


def load_spec(path: str | Path) -> CampaignSpec:
    """Read and validate a campaign spec file; raise SpecError naming the file and field on any problem."""
    return load_spec_file(path, CampaignSpec, "campaign spec")


def load_spec_file(path: str | Path, model: type[SpecModel], what: str) -> SpecModel:
    """Read and validate a spec file of any kind (`what` names it in errors); shared by the campaign and content specs.

    The file is read on every call (an edit takes effect at once); its validation is cached by
    content, since every stage of every day loads the same spec (about 30 ms each time).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc
    try:
        return _validated(text, model, what)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from exc


@functools.lru_cache(maxsize=32)
def _validated(text: str, model: type[SpecModel], what: str) -> SpecModel:
    """The model of a spec text, its `spec_version` set to the declared `version` plus a hash of the text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"a {what} must be a YAML mapping, got {type(data).__name__}")
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"field '{_field_path(e['loc'])}': {e['msg']}" for e in exc.errors())
        raise SpecError(f"invalid {what}: {problems}") from exc
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return spec.model_copy(update={"spec_version": f"{spec.version}+{digest}"})
