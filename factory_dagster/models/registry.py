"""Model registry: which models exist, who serves them, their tier and what a token costs."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from factory_dagster.settings import DEFAULT_MODEL_REGISTRY_PATH

# Cheapest first: a routing canary moves a stage one step along this list.
Tier = Literal["nano", "cheap", "premium"]
TIERS: tuple[str, ...] = get_args(Tier)


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["offline", "openai"]
    tier: Tier
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    batch_input_per_mtok: float | None = Field(default=None, ge=0)
    batch_output_per_mtok: float | None = Field(default=None, ge=0)
    context_tokens: int = Field(default=128_000, ge=1)
    max_output_tokens: int = Field(default=1024, ge=1)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    supports_json_schema: bool = False
    defect_rate: float = Field(default=0.0, ge=0, le=1, description="offline models only: share of flawed answers")
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    offline_stand_in: str | None = None

    def cost_usd(self, tokens_in: int, tokens_out: int, batch: bool = False) -> float:
        """Price of a call; through the Batch API at the batch price where the registry gives one."""
        price_in, price_out = self.input_per_mtok, self.output_per_mtok
        if batch:
            price_in = self.batch_input_per_mtok if self.batch_input_per_mtok is not None else price_in
            price_out = self.batch_output_per_mtok if self.batch_output_per_mtok is not None else price_out
        return (tokens_in * price_in + tokens_out * price_out) / 1_000_000

    @property
    def list_price(self) -> float:
        """USD per million input plus million output tokens: for ranking models within a tier."""
        return self.input_per_mtok + self.output_per_mtok


class ModelRegistry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, ModelEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _stand_ins_are_offline(self) -> ModelRegistry:
        for name, entry in self.models.items():
            stand_in = entry.offline_stand_in
            if stand_in is not None and (stand_in not in self.models or self.models[stand_in].provider != "offline"):
                raise ValueError(f"model '{name}': offline_stand_in '{stand_in}' must be an offline model of this registry")
            # Offline, the stand-in is what the marts measure: it must stand for the same tier.
            if stand_in is not None and self.models[stand_in].tier != entry.tier:
                raise ValueError(
                    f"model '{name}' (tier {entry.tier}): offline_stand_in '{stand_in}' is tier {self.models[stand_in].tier}"
                )
        return self

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(f"model '{name}' is not in the model registry (known: {sorted(self.models)})") from None

    def serving(self, name: str, environ: Mapping[str, str]) -> str:
        """The model that actually serves `name`: itself, or its offline stand-in while its key is unset."""
        entry = self.entry(name)
        if entry.provider == "offline" or environ.get(entry.api_key_env):
            return name
        if entry.offline_stand_in is None:
            raise KeyError(f"model '{name}' needs ${entry.api_key_env} and has no offline_stand_in")
        return entry.offline_stand_in

    def next_tier(self, name: str, step: int) -> str | None:
        """The model one tier cheaper (`step` -1) or more capable (+1) than `name`, served the same way.

        Same provider and key variable, so the neighbour runs wherever `name` runs (offline models
        neighbour offline ones); the cheapest by list price when a tier has several. None at either end.
        """
        if step not in (-1, 1):
            raise ValueError(f"step must be -1 (cheaper) or +1 (more capable), got {step}")
        entry = self.entry(name)
        index = TIERS.index(entry.tier) + step
        if not 0 <= index < len(TIERS):
            return None
        same_way = [
            (other.list_price, candidate)
            for candidate, other in self.models.items()
            if other.tier == TIERS[index] and other.provider == entry.provider and other.api_key_env == entry.api_key_env
        ]
        return min(same_way)[1] if same_way else None


def load_registry(path: Path = DEFAULT_MODEL_REGISTRY_PATH) -> ModelRegistry:
    """The registry file, read every time (an edit takes effect at once), validated once per content."""
    try:
        return _validated(Path(path).read_text(encoding="utf-8"))
    except ValidationError as exc:
        problems = "; ".join(f"field '{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: invalid model registry: {problems}") from exc


@functools.lru_cache(maxsize=8)
def _validated(text: str) -> ModelRegistry:
    return ModelRegistry.model_validate(yaml.safe_load(text))
