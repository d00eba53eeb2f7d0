"""The one Dagster resource every stage shares: where the files are, the spec, the models.

It holds paths and names only; connections (cursors of the warehouse the run holds open),
the spec and the model gateway are made per use, so no transaction and no usage count is
shared between assets of one run. The line's blocking checks (`LineCheck`) live here too:
each asset runs its own on what it has just stored.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import duckdb
from pydantic import Field

from factory_dagster.campaign.registry import CampaignFolderError, spec_for_campaign
from factory_dagster.campaign.spec import CampaignSpec, SpecError, load_spec
from factory_dagster.gates.audit import audit_reserve_usd
from factory_dagster.models.budget import Budget
from factory_dagster.models.cache import CachedAnswer, lookup
from factory_dagster.models.gateway import ModelGateway
from factory_dagster.models.ledger import spent_today
from factory_dagster.models.registry import ModelRegistry, load_registry
from factory_dagster.models.routing import Route, RoutedSpec, resolve_routes, with_served_models
from factory_dagster.partitions import CAMPAIGN_DAYS, DAILY, ONE_DAY_PER_RUN, key_parts
from factory_dagster.run_context import RunContext
from factory_dagster.settings import DEFAULT_MODEL_REGISTRY_PATH, Paths
from factory_dagster.warehouse.store import connect, hold

if TYPE_CHECKING:
    from factory_dagster.warehouse.store import Connection

WAREHOUSE_URL_VARIABLE = "FACTORY_WAREHOUSE_URL"
POOL = "duckdb"  # every DuckDB-touching step runs in this pool (limit 1): one writer at a time

# Every asset of the daily line: one partition per campaign and day, backfilled a day per run, in the DuckDB pool.
line_asset = functools.partial(dg.asset, partitions_def=CAMPAIGN_DAYS, backfill_policy=ONE_DAY_PER_RUN, pool=POOL)
# The content line's assets: one partition a day (its spec is one, FACTORY_CONTENT_SPEC), otherwise the same.
day_asset = functools.partial(dg.asset, partitions_def=DAILY, backfill_policy=ONE_DAY_PER_RUN, pool=POOL)

Context = dg.AssetExecutionContext | dg.OpExecutionContext | dg.AssetCheckExecutionContext


@dataclass(frozen=True)
class LineCheck:
    """A blocking check an asset runs on what it has just stored, inside the asset's own step.

    Why inside: a separate check step costs a Dagster step (start, output, success events, a pool
    slot) and a warehouse connection of its own, about a tenth of a second each, eleven times a
    day. Dagster still records each result as the asset's check, and a failed blocking check
    still stops every stage downstream. `evaluate` is plain logic (connection, spec, day) ->
    (passed, metadata), so tests call it without Dagster.
    """

    name: str
    description: str
    evaluate: Callable[[duckdb.DuckDBPyConnection, CampaignSpec, date], tuple[bool, Mapping[str, Any]]]


def check_specs(asset: str, *checks: LineCheck) -> list[dg.AssetCheckSpec]:
    """The asset's blocking check specs, for `line_asset(check_specs=...)`."""
    return [dg.AssetCheckSpec(c.name, asset=asset, description=c.description, blocking=True) for c in checks]


def run_checks(con: duckdb.DuckDBPyConnection, spec: CampaignSpec, day: date, *checks: LineCheck) -> list[dg.AssetCheckResult]:
    """Every check's result on the committed rows, for `MaterializeResult(check_results=...)`."""
    results = []
    for check in checks:
        passed, metadata = check.evaluate(con, spec, day)
        results.append(dg.AssetCheckResult(check_name=check.name, passed=bool(passed), metadata=dict(metadata)))
    return results


class FactoryResource(dg.ConfigurableResource):
    home: str = Field(description="Factory's data folder (inboxes, outbox, market, dbt target).")
    warehouse_path: str = Field(description="The DuckDB warehouse file.")
    warehouse_url: str | None = Field(
        default=None,
        description="The PostgreSQL warehouse (FACTORY_WAREHOUSE_URL) instead of the DuckDB file; unset: the file.",
    )
    leads_inbox: str = Field(description="Folder where lead files (CSV, Parquet) are dropped.")
    spec_path: str = Field(description="The default campaign's spec YAML file (jobs without a campaign partition use it).")
    campaigns_dir: str | None = Field(default=None, description="Campaigns folder: every outreach spec in it is a campaign.")
    registry_path: str = Field(default=str(DEFAULT_MODEL_REGISTRY_PATH), description="Model registry YAML file.")
    simulate_market: bool = Field(default=True, description="Answer sends from the simulated market.")
    market_seed: int = Field(default=11, description="Seed of the simulated market's hidden response model.")

    @classmethod
    def from_paths(cls, paths: Paths, **overrides: object) -> FactoryResource:
        """The resource over a data folder; a warehouse URL taken from the environment stays a reference to
        `FACTORY_WAREHOUSE_URL` (dg.EnvVar), so its password never shows in the resource's config."""
        url: str | None = paths.warehouse_url
        if url and url == os.environ.get(WAREHOUSE_URL_VARIABLE):
            url = dg.EnvVar(WAREHOUSE_URL_VARIABLE)
        return cls(
            home=str(paths.home),
            warehouse_path=str(paths.warehouse),
            warehouse_url=url,
            leads_inbox=str(paths.leads_inbox),
            spec_path=str(paths.spec),
            campaigns_dir=str(paths.campaigns),
            **overrides,
        )

    @property
    def paths(self) -> Paths:
        campaigns = Path(self.campaigns_dir) if self.campaigns_dir else None
        url = self.warehouse_url.get_value() if isinstance(self.warehouse_url, dg.EnvVar) else self.warehouse_url
        return Paths(Path(self.home), Path(self.warehouse_path), Path(self.leads_inbox), Path(self.spec_path), url, campaigns)

    def campaign(self, context: Context | None = None) -> str:
        """The campaign key of the run's partition; the default campaign's for a job without one."""
        key = key_parts(context.partition_key)[0] if context is not None and context.has_partition_key else None
        return key or self.paths.default_campaign

    def spec_file(self, context: Context | None = None) -> Path:
        """The spec file of the run's campaign (the default campaign's file wherever it lives)."""
        try:
            return self.paths.campaign_spec(self.campaign(context))
        except CampaignFolderError as exc:
            raise dg.Failure(description=str(exc)) from exc

    def spec_of_campaign(self, campaign_id: str) -> CampaignSpec:
        """The spec of a campaign named by id (a job's config), from the campaigns folder."""
        try:
            return spec_for_campaign(self.paths.campaigns, campaign_id, Path(self.spec_path))
        except CampaignFolderError as exc:
            raise dg.Failure(description=str(exc)) from exc

    def lead_inboxes(self, context: Context) -> list[Path]:
        return self.paths.campaign_inboxes(self.campaign(context))

    def spec(self, context: Context | None = None) -> CampaignSpec:
        """The run's campaign spec, routed to the models that really serve (offline stand-ins without a key).

        An invalid spec fails the step with the file and field in the message.
        """
        spec = self.configured_spec(context)
        return with_served_models(spec, self.routes(spec))

    def configured_spec(self, context: Context | None = None) -> CampaignSpec:
        try:
            return load_spec(self.spec_file(context))
        except SpecError as exc:
            raise dg.Failure(description=str(exc)) from exc

    def routes(self, spec: RoutedSpec) -> dict[str, Route]:
        """Each model stage's chain and mode, from the routing table and the spec's overrides (the configured spec's)."""
        try:
            return resolve_routes(spec, self.registry(), os.environ)
        except SpecError as exc:
            raise dg.Failure(description=f"campaign {spec.campaign_id}: {exc}") from exc

    def registry(self) -> ModelRegistry:
        return load_registry(Path(self.registry_path))

    def gateway(self, context: dg.AssetExecutionContext, spec: CampaignSpec, *, audit: bool = False) -> ModelGateway:
        """A fresh gateway for one asset execution: its ledger and usage are this asset's alone.

        It holds the day's budget (what earlier stages and runs of the day spent counts) and
        reads the response cache from the warehouse, one query per batch of calls. Every stage
        but the audit leaves the audit's worst case unspent, so the audit can always run.
        """
        run = self.run_context(context, spec)
        gateway = ModelGateway(
            self.registry(), self.routes(self.configured_spec(context)), run, cache_loader=self._cached_answers
        )
        limit = spec.limits.daily_budget_usd - (0.0 if audit else audit_reserve_usd(gateway, spec))
        return self._budgeted(gateway, limit)

    def content_gateway(self, context: dg.AssetExecutionContext, spec: RoutedSpec, daily_budget_usd: float) -> ModelGateway:
        """The same for a content spec: its own routes (content stages), its own id on the ledger and its own budget."""
        run = RunContext(context.run.run_id, partition_day(context), spec.campaign_id)
        return self._budgeted(
            ModelGateway(self.registry(), self.routes(spec), run, cache_loader=self._cached_answers), daily_budget_usd
        )

    def _budgeted(self, gateway: ModelGateway, limit: float) -> ModelGateway:
        """The gateway with the day's budget: what earlier stages and runs of the day spent counts."""
        with self.warehouse() as con:
            gateway.budget = Budget(max(0.0, limit), spent_today(con, gateway.run))
        return gateway

    def _cached_answers(self, keys: list[str]) -> dict[str, CachedAnswer]:
        with self.warehouse() as con:
            return lookup(con, keys)

    def run_context(self, context: dg.AssetExecutionContext, spec: CampaignSpec) -> RunContext:
        return RunContext(context.run.run_id, partition_day(context), spec.campaign_id)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[FactoryResource]:
        """For the length of a run (of a step, with a multi-process executor) the warehouse stays open."""
        paths = self.paths
        with hold(paths.warehouse, url=paths.warehouse_url):
            yield self

    @contextmanager
    def warehouse(self, read_only: bool = False) -> Iterator[Connection]:
        """A connection to the warehouse: the DuckDB file, or the PostgreSQL warehouse when a URL is set."""
        paths = self.paths
        with connect(paths.warehouse, read_only=read_only, url=paths.warehouse_url) as con:
            yield con


def partition_day(context: Context) -> date:
    """The day of the run's partition (campaign x day on the line, a day on the content line)."""
    return key_parts(context.partition_key)[1]
