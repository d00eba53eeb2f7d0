"""Model registry: which models exist, their tier and what a token costs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from factory_dagster.settings import DEFAULT_MODEL_REGISTRY_PATH


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["offline"]
    tier: Literal["cheap", "premium"]
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    defect_rate: float = Field(default=0.0, ge=0, le=1)

    def cost_usd(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_per_mtok + tokens_out * self.output_per_mtok) / 1_000_000


class ModelRegistry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, ModelEntry] = Field(min_length=1)

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(f"model '{name}' is not in the model registry (known: {sorted(self.models)})") from None


def load_registry(path: Path = DEFAULT_MODEL_REGISTRY_PATH) -> ModelRegistry:
    try:
        return ModelRegistry.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    except ValidationError as exc:
        problems = "; ".join(f"field '{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: invalid model registry: {problems}") from exc
