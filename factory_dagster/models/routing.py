"""Routing: which model serves each stage, after the registry's offline stand-ins apply."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from factory_dagster.campaign.spec import CampaignSpec, SpecError
from factory_dagster.models.registry import ModelRegistry


@dataclass(frozen=True)
class Route:
    stage: str
    configured: str
    served: str

    @property
    def source(self) -> str:
        return "spec" if self.served == self.configured else f"offline stand-in for {self.configured} (no API key)"


def resolve_routes(spec: CampaignSpec, registry: ModelRegistry, environ: Mapping[str, str]) -> list[Route]:
    routes = []
    for stage, model in spec.routing.items():
        try:
            routes.append(Route(stage, model, registry.serving(model, environ)))
        except KeyError as exc:
            raise SpecError(f"campaign '{spec.campaign_id}': field 'routing.{stage}': {exc.args[0]}") from None
    return routes


def with_served_models(spec: CampaignSpec, routes: list[Route]) -> CampaignSpec:
    """The spec as the stages should see it: each stage routed to the model that really serves it."""
    return spec.model_copy(update={"routing": {r.stage: r.served for r in routes}})


def routes_frame(routes: list[Route]) -> pd.DataFrame:
    return pd.DataFrame([{"stage": r.stage, "model": r.served, "source": r.source} for r in routes])
