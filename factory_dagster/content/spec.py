"""Content spec (YAML) validated by pydantic: the human-set contract of the content line.

The twin of the campaign spec (`campaign/spec.py`) for headlines, subject lines and LinkedIn
posts: the brand and its voice, who the pieces are for, the channels and their hard limits, the
topics the line may write about, the claims a piece may make (each with the source that backs
it), what it must never say, how many pieces a day and how many variants each. It is loaded by
the same loader (`load_spec_file`), so an invalid spec stops the run with the same kind of
message: the file, the field path and what is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from factory_dagster.campaign.spec import CONTENT_MODEL_STAGES, Segment, _Strict, load_spec_file

ChannelName = Literal["linkedin_post", "email_subject", "headline"]
# The limits the platforms themselves set; a spec may tighten them, never loosen them.
LINKEDIN_MAX_CHARS = 3000
LINKEDIN_HOOK_MAX_CHARS = 210  # what LinkedIn shows before "...see more"
EMAIL_SUBJECT_MAX_CHARS = 60
HEADLINE_MAX_CHARS = 70
_ID = r"^[a-z][a-z0-9_]*$"
_URL_SOURCE = re.compile(r"^https?://[^\s/]+\.[^\s/]+(?:/\S*)?$", re.IGNORECASE)


class VoiceChecks(_Strict):
    """The brand-voice rules a program can check; the written `rules` are for the brief and the audit."""

    max_exclamation_marks: int = Field(default=0, ge=0, description="per piece")
    max_all_caps_words: int = Field(default=0, ge=0, description="words of 2+ capitals, acronyms below excepted")
    allowed_acronyms: list[str] = Field(default=[], description="capitalised words that are names, not shouting (CFO, ERP)")
    max_we_words: int = Field(default=2, ge=0, description="'we', 'us', 'our' per piece: write about the reader, not us")
    max_hashtags: int = Field(default=3, ge=0, description="per piece")


class Voice(_Strict):
    tone: str = Field(min_length=1)
    rules: list[str] = []
    checks: VoiceChecks = VoiceChecks()


class Brand(_Strict):
    name: str = Field(min_length=1)
    website: str | None = Field(default=None, pattern=_URL_SOURCE.pattern, description="a piece may link to it")
    voice: Voice


class Channel(_Strict):
    """A channel's limits in characters; only a LinkedIn post has a hook (the first line, cut off in the feed)."""

    max_chars: int = Field(ge=1)

    @property
    def hook_limit(self) -> int | None:
        return None

    @property
    def single_line(self) -> bool:
        """A subject line or a headline is one line; a post may have many."""
        return True


class LinkedInPost(Channel):
    max_chars: int = Field(default=LINKEDIN_MAX_CHARS, ge=1, le=LINKEDIN_MAX_CHARS)
    hook_max_chars: int = Field(default=LINKEDIN_HOOK_MAX_CHARS, ge=1, le=LINKEDIN_HOOK_MAX_CHARS)

    @property
    def hook_limit(self) -> int | None:
        return self.hook_max_chars

    @property
    def single_line(self) -> bool:
        return False

    @model_validator(mode="after")
    def _hook_fits(self) -> LinkedInPost:
        if self.hook_max_chars > self.max_chars:
            raise ValueError(f"hook_max_chars ({self.hook_max_chars}) is above max_chars ({self.max_chars})")
        return self


class EmailSubject(Channel):
    max_chars: int = Field(default=EMAIL_SUBJECT_MAX_CHARS, ge=1, le=EMAIL_SUBJECT_MAX_CHARS)


class Headline(Channel):
    """An article or landing-page headline."""

    max_chars: int = Field(default=HEADLINE_MAX_CHARS, ge=1, le=HEADLINE_MAX_CHARS)


class Channels(_Strict):
    linkedin_post: LinkedInPost | None = None
    email_subject: EmailSubject | None = None
    headline: Headline | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Channels:
        if not self.names:
            raise ValueError("name at least one channel: linkedin_post, email_subject or headline")
        return self

    @property
    def names(self) -> list[str]:
        return [name for name in type(self).model_fields if getattr(self, name) is not None]


class Claim(_Strict):
    """A statement a piece may make, and where it is backed: a URL or a document a reviewer can open."""

    id: str = Field(pattern=_ID)
    text: str = Field(min_length=5)
    source: str = Field(min_length=3, description="an http(s) URL or the name of a document")

    @field_validator("source")
    @classmethod
    def _source_is_a_url_or_a_name(cls, source: str) -> str:
        if source.strip() != source or not source.strip():
            raise ValueError("must not start or end with spaces")
        if source.lower().startswith(("http:", "https:", "www.")) and not _URL_SOURCE.match(source):
            raise ValueError(f"{source!r} looks like a link but is not a full http(s) URL")
        return source


class Topic(_Strict):
    """A brief the line may write pieces on: the angle to take, and the claims its pieces may use."""

    name: str = Field(pattern=_ID)
    angle: str = Field(min_length=10)
    claims: list[str] = []


class Cadence(_Strict):
    pieces_per_day: int = Field(ge=1, le=100)
    # Days a piece's variants share its audience (the allocation shifts it towards the leader daily) before
    # the experiment's final look names the piece's best variant.
    test_days: int = Field(default=3, ge=1, le=30)


class ContentSpec(_Strict):
    content_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    version: str = Field(min_length=1)
    language: str = Field(default="en", pattern=r"^[a-z]{2}$")
    brand: Brand
    segments: list[Segment] = Field(min_length=1)
    channels: Channels
    claims: list[Claim] = Field(min_length=1)
    topics: list[Topic] = Field(min_length=1)
    banned_phrases: list[str] = []
    reading_grade_max: float = Field(default=9.0, ge=1, le=20, description="Flesch-Kincaid grade ceiling of a piece")
    cadence: Cadence
    variants_per_piece: int = Field(default=3, ge=1, le=10)
    daily_budget_usd: float = Field(default=1.0, gt=0, description="hard cap on the content line's model spend a day")
    max_similarity: float = Field(
        default=0.6, gt=0, le=1, description="Jaccard index of word 3-shingles with any published piece; 1 turns the rule off"
    )
    # Filled in by the loader: the declared version plus a hash of the file, so any edit is a new version.
    spec_version: str = ""

    @field_validator("segments", "claims", "topics")
    @classmethod
    def _unique_names(cls, items: list[Any], info: ValidationInfo) -> list[Any]:
        names = [getattr(item, "id", None) or item.name for item in items]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"{info.field_name} must have unique names, repeated: {repeated}")
        return items

    @field_validator("topics")
    @classmethod
    def _topics_use_known_claims(cls, topics: list[Topic], info: ValidationInfo) -> list[Topic]:
        claims = info.data.get("claims")
        if claims is None:  # the claims themselves are invalid: that error is reported already
            return topics
        known = {c.id for c in claims}
        for index, topic in enumerate(topics):
            if unknown := [c for c in topic.claims if c not in known]:
                raise ValueError(
                    f"topics.{index}.claims: topic {topic.name!r} uses unknown claim(s) {unknown}; the claims are {sorted(known)}"
                )
        return topics

    @field_validator("banned_phrases")
    @classmethod
    def _banned_phrases_have_words(cls, phrases: list[str]) -> list[str]:
        if blank := [i for i, p in enumerate(phrases) if not re.search(r"\w", p)]:
            raise ValueError(f"entries {blank} have no words")
        return phrases

    def channel(self, name: str) -> Channel:
        """The limits of a channel the spec names; KeyError for one it does not."""
        limits = getattr(self.channels, name, None) if name in Channels.model_fields else None
        if limits is None:
            raise KeyError(f"channel {name!r} is not in the spec; its channels are {self.channels.names}")
        return limits

    def topic(self, name: str) -> Topic:
        return next(t for t in self.topics if t.name == name)

    # What `models.routing.resolve_routes` and `run_context.RunContext` read of a line's spec.
    @property
    def campaign_id(self) -> str:
        """The id ledger rows carry (`raw.llm_calls.campaign_id`): the content line's own id."""
        return self.content_id

    @property
    def model_stages(self) -> frozenset[str]:
        return CONTENT_MODEL_STAGES

    def chain(self, stage: str) -> list[str]:
        """No routing overrides in a content spec yet: the routing table decides every stage."""
        return []

    def claims_for(self, topic: str | None = None) -> list[Claim]:
        """The claims a piece may use: its topic's, or every claim of the spec when no topic is given."""
        if topic is None:
            return list(self.claims)
        allowed = set(self.topic(topic).claims)
        return [c for c in self.claims if c.id in allowed]


def load_content_spec(path: str | Path) -> ContentSpec:
    """Read and validate a content spec file; raise SpecError naming the file and field on any problem."""
    return load_spec_file(path, ContentSpec, "content spec")
