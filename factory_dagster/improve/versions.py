"""The loop's versioned state: each segment's champion prompt version and hooks, and the routing it changed.

Why versions: every promotion, routing change and rollback is a decision someone may have to
undo. `raw.loop_versions` holds one row per campaign and version with the *whole* state as JSON,
so any earlier state can be restored exactly, and the rows themselves are the audit log (who or
what, why, which experiment). Version 0 is never stored: it is the state the spec alone gives
(the first prompt version of `drafting.prompt_versions` champions every segment; no routing
override), so a new campaign needs no set-up and `rollback(..., to_version=0)` returns to it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from factory_dagster.warehouse.store import fetch_one, insert_rows, transaction

if TYPE_CHECKING:
    from factory_dagster.campaign.spec import CampaignSpec

INITIAL_VERSION = 0
SPEC_ACTOR = "the campaign spec"


class UnknownVersion(LookupError):
    """No such loop version for the campaign."""


PLAN_HOOK = "plan"  # a (segment, angle) without a champion hook drafts with the day's plan hook


@dataclass(frozen=True)
class LoopState:
    """What the loop has decided so far for one campaign.

    `champions`: segment -> the prompt version its leads get outside experiments.
    `routing`: model stage -> the model the loop moved it to (stages not named keep the spec's
    routing). Both hold configured names, resolved to served models like the spec's own routing.
    `hooks`: "segment|angle" -> the hook version (raw.hook_versions) a hook experiment promoted there;
    pairs not named draft with the day's plan hook.
    `splits`: segment -> the split rule a segment-split experiment promoted (`splits.SplitRule` name):
    its two parts learn their angles apart; segments not named are allocated as one.
    """

    champions: Mapping[str, str]
    routing: Mapping[str, str] = field(default_factory=dict)
    hooks: Mapping[str, str] = field(default_factory=dict)
    splits: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {"champions": dict(self.champions), "routing": dict(self.routing)}
        data |= {name: dict(value) for name, value in (("hooks", self.hooks), ("splits", self.splits)) if value}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LoopState:
        data = json.loads(text)
        return cls(
            champions=dict(data["champions"]),
            routing=dict(data.get("routing", {})),
            hooks=dict(data.get("hooks", {})),
            splits=dict(data.get("splits", {})),
        )

    def with_champion(self, segment: str, prompt_version: str) -> LoopState:
        return replace(self, champions={**self.champions, segment: prompt_version})

    def with_route(self, stage: str, model: str) -> LoopState:
        return replace(self, routing={**self.routing, stage: model})

    def with_split(self, segment: str, rule: str) -> LoopState:
        return replace(self, splits={**self.splits, segment: rule})

    def hook(self, segment: str, angle: str) -> str:
        """The champion hook of (segment, angle): a hook version, or PLAN_HOOK."""
        return self.hooks.get(f"{segment}|{angle}", PLAN_HOOK)

    def with_hook(self, segment: str, angle: str, hook_version: str) -> LoopState:
        hooks = {key: value for key, value in self.hooks.items() if key != f"{segment}|{angle}"}
        if hook_version != PLAN_HOOK:
            hooks[f"{segment}|{angle}"] = hook_version
        return replace(self, hooks=hooks)


@dataclass(frozen=True)
class LoopVersion:
    campaign_id: str
    version: int
    state: LoopState
    actor: str
    reason: str
    experiment_id: str | None
    created_at: datetime | None


def initial_state(spec: CampaignSpec) -> LoopState:
    """Version 0: the spec's first prompt version champions every segment; routing as the spec says."""
    first = spec.drafting.prompt_versions[0]
    return LoopState(champions={segment.name: first for segment in spec.segments})


def _initial_version(spec: CampaignSpec) -> LoopVersion:
    return LoopVersion(spec.campaign_id, INITIAL_VERSION, initial_state(spec), SPEC_ACTOR, "the spec's own state", None, None)


def _row_version(row: tuple[Any, ...]) -> LoopVersion:
    campaign_id, version, state_json, actor, reason, experiment_id, created_at = row
    return LoopVersion(campaign_id, version, LoopState.from_json(state_json), actor, reason, experiment_id, created_at)


_COLUMNS = "campaign_id, version, state_json, actor, reason, experiment_id, created_at"


def current_version(con: duckdb.DuckDBPyConnection, spec: CampaignSpec) -> LoopVersion:
    """The campaign's latest version; version 0 (the spec's state) when nothing was recorded.

    Segments the spec added after the last version get the spec's first prompt version, and
    segments it dropped are left out, so the state always covers exactly the spec's segments.
    """
    row = fetch_one(
        con,
        f"SELECT {_COLUMNS} FROM raw.loop_versions WHERE campaign_id = ? ORDER BY version DESC LIMIT 1",
        [spec.campaign_id],
    )
    latest = _initial_version(spec) if row is None else _row_version(row)
    base = initial_state(spec)
    champions = {segment: latest.state.champions.get(segment, default) for segment, default in base.champions.items()}
    return replace(latest, state=replace(latest.state, champions=champions))


def version_history(con: duckdb.DuckDBPyConnection, spec: CampaignSpec) -> list[LoopVersion]:
    """Every version of the campaign, oldest first, version 0 included."""
    rows = con.execute(
        f"SELECT {_COLUMNS} FROM raw.loop_versions WHERE campaign_id = ? ORDER BY version", [spec.campaign_id]
    ).fetchall()
    return [_initial_version(spec), *map(_row_version, rows)]


def record_version(
    con: duckdb.DuckDBPyConnection,
    spec: CampaignSpec,
    state: LoopState,
    *,
    actor: str,
    reason: str,
    experiment_id: str | None = None,
    at: datetime | None = None,
) -> LoopVersion:
    """Append `state` as the campaign's next version (call inside the caller's transaction)."""
    if not actor.strip() or not reason.strip():
        raise ValueError("a loop version needs an actor and a reason")
    at = (at or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    number = current_version(con, spec).version + 1
    row = {
        "campaign_id": spec.campaign_id,
        "version": number,
        "state_json": state.to_json(),
        "actor": actor,
        "reason": reason,
        "experiment_id": experiment_id,
        "created_at": at,
    }
    insert_rows(con, "loop_versions", pd.DataFrame([row]))
    return LoopVersion(spec.campaign_id, number, state, actor, reason, experiment_id, at)


def rollback(
    con: duckdb.DuckDBPyConnection, spec: CampaignSpec, to_version: int, *, actor: str, reason: str, at: datetime | None = None
) -> LoopVersion:
    """Restore an earlier version's state as a new version (history is never rewritten)."""
    if not reason.strip():
        raise ValueError("a rollback needs a reason")
    history = {v.version: v for v in version_history(con, spec)}
    if to_version not in history:
        known = ", ".join(map(str, sorted(history)))
        raise UnknownVersion(f"campaign {spec.campaign_id} has no loop version {to_version} (versions: {known})")
    with transaction(con):
        return record_version(
            con,
            spec,
            history[to_version].state,
            actor=actor,
            reason=f"rollback to version {to_version}: {reason}",
            at=at,
        )
