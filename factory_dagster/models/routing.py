"""Routing: which chain of models serves each stage, and how (online or batch).

The routing table (`routing.yaml`) gives every model-calling stage a chain: the first
model serves, the others take over on persistent errors or refusals. A campaign spec
may override a stage's chain. Each configured model is then replaced by the model that
really serves it (its offline stand-in while its API key is unset), duplicates dropped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from factory_dagster.campaign.spec import MODEL_STAGES, CampaignSpec, SpecError
from factory_dagster.models.registry import ModelRegistry

DEFAULT_ROUTING_PATH = Path(__file__).with_name("routing.yaml")


class RoutedSpec(Protocol):
    """What routing needs of a line's spec (a campaign spec, a content spec): its id, its stages, its overrides."""

    @property
    def campaign_id(self) -> str: ...

    @property
    def model_stages(self) -> frozenset[str]: ...

    def chain(self, stage: str) -> list[str]: ...


class StageRouting(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    chain: list[str] = Field(min_length=1)
    mode: Literal["online", "batch"] = "online"


class RoutingTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stages: dict[str, StageRouting]


@dataclass(frozen=True)
class Route:
    stage: str
    configured: tuple[str, ...]
    served_each: tuple[str, ...]  # per configured model, the model that really serves it
    mode: str
    overridden_by_spec: bool

    @property
    def served(self) -> tuple[str, ...]:
        """The chain actually tried, in order, without repeats."""
        return tuple(dict.fromkeys(self.served_each))

    @property
    def primary(self) -> str:
        return self.served[0]

    @property
    def source(self) -> str:
        origin = "spec" if self.overridden_by_spec else "routing table"
        stand_ins = [f"{s} for {c}" for c, s in zip(self.configured, self.served_each, strict=True) if s != c]
        return origin + (f"; offline stand-ins (no API key): {', '.join(stand_ins)}" if stand_ins else "")


def load_routing_table(path: Path = DEFAULT_ROUTING_PATH) -> RoutingTable:
    """The routing table file, read every time (an edit takes effect at once), parsed and validated once per content:
    a demo day resolves the routes about twenty times."""
    try:
        table = _validated_table(Path(path).read_text(encoding="utf-8"))
    except ValidationError as exc:
        problems = "; ".join(f"field '{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: invalid routing table: {problems}") from exc
    missing = sorted(MODEL_STAGES - table.stages.keys())
    if missing:
        raise ValueError(f"{path}: invalid routing table: no route for stages {missing}")
    return table


@functools.lru_cache(maxsize=8)
def _validated_table(text: str) -> RoutingTable:
    return RoutingTable.model_validate(yaml.safe_load(text))


def resolve_routes(
    spec: RoutedSpec, registry: ModelRegistry, environ: Mapping[str, str], table: RoutingTable | None = None
) -> dict[str, Route]:
    """Every model-calling stage of the spec's line, routed after the spec's overrides and the offline stand-ins."""
    table = table or load_routing_table()
    routes = {}
    for stage in sorted(spec.model_stages):
        configured = tuple(spec.chain(stage) or table.stages[stage].chain)
        try:
            served_each = tuple(registry.serving(model, environ) for model in configured)
        except KeyError as exc:
            raise SpecError(f"campaign '{spec.campaign_id}': field 'routing.{stage}': {exc.args[0]}") from None
        routes[stage] = Route(stage, configured, served_each, table.stages[stage].mode, bool(spec.chain(stage)))
    return routes


def with_served_models(spec: CampaignSpec, routes: Mapping[str, Route]) -> CampaignSpec:
    """The spec as the stages see it: each stage routed to the model that really serves it first."""
    return spec.model_copy(update={"routing": {stage: route.primary for stage, route in routes.items()}})


def stage_model(stage: str, loop_routing: Mapping[str, str], served_spec: CampaignSpec, serve: Callable[[str], str]) -> str:
    """The model that serves `stage` first today: the loop's choice when it moved the stage, else the spec's route.

    `loop_routing` is the loop state's routing (improve.versions.LoopState.routing), whose names may be
    configured ones, resolved by `serve` to what serves them (e.g. `ModelRegistry.serving`: an offline
    stand-in without a key); `served_spec` is the spec as `with_served_models` returns it.
    """
    moved = loop_routing.get(stage)
    return served_spec.routing[stage] if moved is None else serve(moved)


def routes_frame(routes: Mapping[str, Route]) -> pd.DataFrame:
    """Rows for `raw.routing`: who serves each stage, the fallbacks, the mode and why."""
    return pd.DataFrame(
        [
            {"stage": r.stage, "model": r.primary, "fallbacks": list(r.served[1:]), "mode": r.mode, "source": r.source}
            for r in routes.values()
        ]
    )
