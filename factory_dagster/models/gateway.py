"""One door for all model traffic: cache, budget, routing, providers and the ledger.

A stage hands the gateway a list of `CallRequest`s and gets one `CallResult` each, in
order. On the way:

- **Cache.** A request whose answer is in the response cache costs nothing; the hit is a ledger row.
- **Budget.** Otherwise the call's worst-case cost is reserved against the day's budget. Work that
  does not fit is `deferred`, never dropped: the stage leaves it for the next day.
- **Providers.** Offline models answer inline. OpenAI-compatible models go through the resilient
  async client: bounded concurrency, token buckets, retries, fallback chain, circuit breaker. A
  stage routed in `batch` mode goes through the Batch API, and its failed items are retried online.
- **Ledger.** Every call made is a row for `raw.llm_calls`, priced from the registry.

A gateway is created per asset execution, so usage never leaks between assets that run
in one process (see docs/design.md, "Stack notes", on dagster-openai).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby

import openai
import pandas as pd
from pydantic import BaseModel, ValidationError

from factory_dagster.models.batch import BatchRequest, run_batch
from factory_dagster.models.budget import Budget, estimate_input_tokens, worst_case_cost
from factory_dagster.models.cache import CachedAnswer, cache_key
from factory_dagster.models.client import CallOutcome, ChatClient, Endpoint, tls_context
from factory_dagster.models.offline import OfflineModel, estimate_tokens
from factory_dagster.models.registry import ModelEntry, ModelRegistry
from factory_dagster.models.resilience import RetryPolicy
from factory_dagster.models.routing import Route
from factory_dagster.run_context import RunContext, utcnow

DEFERRED = "deferred"
# What `usage` totals over every call of a gateway.
USAGE_TOTALS = (
    "llm_calls",
    "llm_cache_hits",
    "llm_errors",
    "llm_fallbacks",
    "llm_retries",
    "tokens_in",
    "tokens_out",
    "cost_usd",
)


@dataclass(frozen=True)
class CallRequest:
    stage: str
    prompt_version: str
    messages: list[dict[str, str]]
    lead_id: str | None = None
    seed: int = 0  # tells candidates apart (sent as the API's `seed`, part of the cache key)
    group: str | None = None  # calls that stand or fall together under the budget, e.g. one lead's candidates
    response_model: type[BaseModel] | None = None
    # Serve with this model first (e.g. an experiment arm's draft model), the stage's chain after it.
    model: str | None = None


@dataclass(frozen=True)
class CallResult:
    call_id: str | None  # None when no call was made (deferred by the budget)
    text: str
    parsed: BaseModel | None
    model: str
    status: str  # ok | error | refused | invalid | deferred
    cost_usd: float
    cache_hit: bool = False
    tokens: int = 0  # billed tokens, in and out
    error: str | None = None  # why the call failed or its answer was not usable (as on the ledger; never the key)


@dataclass(frozen=True)
class GatewaySettings:
    max_reasks: int = 1
    max_concurrency: int = 50
    timeout_s: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0
    batch_poll_s: float = 30.0
    batch_timeout_s: float = 6 * 3600


class ModelGateway:
    def __init__(
        self,
        registry: ModelRegistry,
        routes: Mapping[str, Route],
        run: RunContext,
        *,
        environ: Mapping[str, str] | None = None,
        budget: Budget | None = None,
        cache_loader: Callable[[list[str]], Mapping[str, CachedAnswer]] | None = None,
        settings: GatewaySettings | None = None,
    ) -> None:
        self.registry = registry
        self.routes = routes
        self.run = run
        self.environ = os.environ if environ is None else environ
        self.budget = budget
        self.cache_loader = cache_loader
        self.cache: dict[str, CachedAnswer] = {}
        self.settings = settings or GatewaySettings()
        # What is not written yet: the calls' ledger rows and the new answers for the cache. A stage that writes as
        # it goes lets them go (`release_written`): a large day's calls are then never all held at once.
        self.new_cache_entries: list[tuple[str, str, str, CachedAnswer]] = []
        self._calls: list[dict] = []
        self._calls_made = 0  # every call of this gateway, written or not: part of each call id
        self._usage: dict[str, float] = dict.fromkeys(USAGE_TOTALS, 0)
        # Cache keys this gateway wrote: its own answers are not read back as cache hits, so a stage pays and
        # counts the same whether it writes as it goes or at its end (a later run of the day does hit them).
        self._keys_written: set[str] = set()

    # -- public -----------------------------------------------------------------------

    def complete(self, request: CallRequest) -> CallResult:
        return self.complete_many([request])[0]

    def complete_many(self, requests: Sequence[CallRequest]) -> list[CallResult]:
        """Answer every request, in order; what the budget cannot cover comes back `deferred`."""
        results: list[CallResult | None] = [None] * len(requests)
        keys = [self._key(r) for r in requests]
        if self.cache_loader is not None:
            self.cache.update(self.cache_loader([k for k in keys if k not in self.cache and k not in self._keys_written]))
        todo = []
        for index, request in enumerate(requests):
            cached = self.cache.get(keys[index])
            if cached is not None:
                results[index] = self._from_cache(request, cached)
            else:
                todo.append(index)
        groups = [list(g) for _, g in groupby(todo, key=lambda i: requests[i].group or f"#{i}")]
        by_mode: dict[str, list[list[int]]] = {"offline": [], "batch": [], "online": []}
        for group in groups:
            by_mode[self._mode(requests[group[0]])].append(group)
        self._run_offline(requests, by_mode["offline"], results)
        self._run_batches(requests, by_mode["batch"], results)
        if by_mode["online"]:
            asyncio.run(self._run_online(requests, by_mode["online"], results))
        return [r for r in results if r is not None]

    def ledger(self) -> pd.DataFrame:
        """The calls made so far and not released yet (`release_written`), shaped as `raw.llm_calls`."""
        return pd.DataFrame(self._calls)

    def release_written(self) -> None:
        """The pending ledger rows and cache entries are written: let them go (their totals stay in `usage`)."""
        self._keys_written.update(key for key, _, _, _ in self.new_cache_entries)
        self._calls, self.new_cache_entries = [], []

    def usage(self) -> dict[str, float]:
        """Totals for the asset's Dagster metadata: every call of this gateway, written or not."""
        return {
            **{name: int(self._usage[name]) for name in USAGE_TOTALS if name != "cost_usd"},
            "cost_usd": round(self._usage["cost_usd"], 6),
            "deferred_by_budget": self.budget.deferred if self.budget else 0,
        }

    # -- routing ------------------------------------------------------------------------

    def _chain(self, request: CallRequest) -> list[str]:
        chain = list(self.routes[request.stage].served)
        if request.model is None:
            return chain
        # The request's own model, as it is served here (its offline stand-in while its key is unset).
        return list(dict.fromkeys([self.registry.serving(request.model, self.environ), *chain]))

    def _mode(self, request: CallRequest) -> str:
        mode = self.routes[request.stage].mode
        return mode if self.registry.entry(self._chain(request)[0]).provider == "openai" else "offline"

    def _key(self, request: CallRequest) -> str:
        schema = request.response_model.__name__ if request.response_model else None
        return cache_key(
            self._chain(request)[0], request.prompt_version, request.messages, {"seed": request.seed, "schema": schema}
        )

    # -- running groups under the budget -----------------------------------------------------

    def _reserve(self, requests: Sequence[CallRequest], group: list[int]) -> dict[int, float] | None:
        """Hold the group's worst case; None when it does not fit next to what is outstanding."""
        costs = {i: self.worst_case_usd(requests[i]) for i in group}
        if self.budget is None or self.budget.reserve(sum(costs.values())):
            return costs
        return None

    def _defer(self, requests: Sequence[CallRequest], groups: list[list[int]], results: list) -> None:
        """The day's budget is spent: these groups (and everything after them) wait for another day."""
        if self.budget is not None:
            self.budget.exhaust(len(groups))
        for group in groups:
            for i in group:
                results[i] = CallResult(None, "", None, self._chain(requests[i])[0], DEFERRED, 0.0)

    def _settle(self, reserved: float, paid: float) -> None:
        if self.budget is not None:
            self.budget.settle(reserved, paid)

    def _run_offline(self, requests: Sequence[CallRequest], groups: list[list[int]], results: list) -> None:
        """Offline models answer inline, one group at a time: reserve, answer, settle."""
        for position, group in enumerate(groups):
            reserved = self._reserve(requests, group)
            if reserved is None:
                self._defer(requests, groups[position:], results)
                return
            for i in group:
                results[i] = self._offline(requests[i])
                self._settle(reserved[i], results[i].cost_usd)

    async def _run_online(
        self, requests: Sequence[CallRequest], groups: list[list[int]], results: list, prepaid: dict[int, float] | None = None
    ) -> None:
        """Stream the groups through one client: each group reserves its worst case in order
        before its calls start; when it does not fit, dispatch waits for calls in flight to
        settle, and defers only when nothing is outstanding. `prepaid`: indexes whose
        reservation was already made (batch items retried online) and the cost already paid."""
        s = self.settings
        in_flight: set[asyncio.Task] = set()

        async def call(client: ChatClient, i: int, reserved: float) -> None:
            request = requests[i]
            outcome = await client.complete(self._endpoints(request), request.messages, request.response_model, seed=request.seed)
            results[i] = self._record_online(request, outcome)
            self._settle(reserved, results[i].cost_usd + (prepaid or {}).get(i, 0.0))

        async with ChatClient(
            max_concurrency=s.max_concurrency,
            timeout_s=s.timeout_s,
            retry=s.retry,
            breaker_threshold=s.breaker_threshold,
            breaker_cooldown_s=s.breaker_cooldown_s,
            max_reasks=s.max_reasks,
        ) as client:
            for position, group in enumerate(groups):
                reserved = {i: 0.0 for i in group} if prepaid is not None else self._reserve(requests, group)
                while reserved is None and in_flight:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    reserved = self._reserve(requests, group)
                if reserved is None:
                    self._defer(requests, groups[position:], results)
                    break
                for i in group:
                    task = asyncio.create_task(call(client, i, reserved[i]))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.gather(*in_flight)

    def _run_batches(self, requests: Sequence[CallRequest], groups: list[list[int]], results: list) -> None:
        """Batch-mode groups: as many as the budget holds go in one batch; the rest in the next."""
        pending = list(groups)
        while pending:
            reserved: dict[int, float] = {}
            taken = 0
            for group in pending:
                costs = self._reserve(requests, group)
                if costs is None:
                    break
                reserved.update(costs)
                taken += 1
            if not taken:
                self._defer(requests, pending, results)
                return
            indexes = [i for group in pending[:taken] for i in group]
            pending = pending[taken:]
            retry, paid = self._batch(requests, indexes, results)
            if retry:
                # Failed or invalid items get the online path (retries, re-asks, fallback) under the same reservation.
                asyncio.run(self._run_online(requests, [[i] for i in retry], results, prepaid={i: paid[i] for i in retry}))
            for i in indexes:
                if i not in retry:
                    self._settle(reserved[i], paid[i])
            for i in retry:
                self._settle(reserved[i], 0.0)  # what the retry cost was settled by the online call itself

    def worst_case_usd(self, request: CallRequest) -> float:
        """The most this request can cost: what the budget holds in reserve while it runs."""
        return self._chain_worst_case_usd(self._chain(request), estimate_input_tokens(request.messages))

    def stage_worst_case_usd(self, stage: str, input_tokens: int) -> float:
        """The most one call of `stage` with a prompt of `input_tokens` can cost."""
        return self._chain_worst_case_usd(list(self.routes[stage].served), input_tokens)

    def _chain_worst_case_usd(self, chain: list[str], input_tokens: int) -> float:
        if self.registry.entry(chain[0]).provider == "offline":
            # An offline model answers once and never fails over: only its own answer is paid.
            return worst_case_cost([self.registry.entry(chain[0])], input_tokens, 0)
        entries = [self.registry.entry(m) for m in chain if self.registry.entry(m).provider == "openai"]
        return worst_case_cost(entries, input_tokens, self.settings.max_reasks)

    # -- providers ------------------------------------------------------------------------

    def _offline(self, request: CallRequest) -> CallResult:
        model = self._chain(request)[0]
        entry = self.registry.entry(model)
        started = time.perf_counter()
        text = OfflineModel(model, entry.defect_rate).complete(request.messages, seed_key=str(request.seed))
        parsed, status = _validate(text, request.response_model)
        tokens_in, tokens_out = sum(estimate_tokens(m["content"]) for m in request.messages), estimate_tokens(text)
        return self._record(
            request,
            model=model,
            text=text,
            parsed=parsed,
            status=status,
            usage={model: (tokens_in, tokens_out)},
            latency_ms=(time.perf_counter() - started) * 1000,
            mode="offline",
        )

    def _endpoint(self, model: str, entry: ModelEntry) -> Endpoint:
        return Endpoint(
            model=model,
            base_url=entry.base_url or self.environ.get("OPENAI_BASE_URL"),
            api_key=self.environ[entry.api_key_env],
            supports_json_schema=entry.supports_json_schema,
            rpm=entry.rpm,
            tpm=entry.tpm,
            max_output_tokens=entry.max_output_tokens,
        )

    def _endpoints(self, request: CallRequest) -> list[Endpoint]:
        # Offline models cannot stand in mid-chain for a remote one: the remote chain is tried alone.
        chain = [(m, self.registry.entry(m)) for m in self._chain(request)]
        return [self._endpoint(m, e) for m, e in chain if e.provider == "openai"]

    def _record_online(self, request: CallRequest, outcome: CallOutcome) -> CallResult:
        return self._record(
            request,
            model=outcome.model,
            text=outcome.text,
            parsed=outcome.parsed,
            status=outcome.status,
            usage=outcome.usage_by_model,
            latency_ms=outcome.latency_ms,
            mode="online",
            retries=outcome.retries,
            reasks=outcome.reasks,
            fallback_used=outcome.fallback_used,
            error=outcome.error,
        )

    def _batch(self, requests: Sequence[CallRequest], indexes: list[int], results: list) -> tuple[list[int], dict[int, float]]:
        """Send the requests through the Batch API (one stage, so one endpoint).

        Returns the indexes that must be retried online (failed or invalid items: they get
        retries, re-asks and fallback there) and what the batch items cost.
        """
        entry_of = {i: self.registry.entry(self._chain(requests[i])[0]) for i in indexes}
        first = entry_of[indexes[0]]
        batch_requests = [
            BatchRequest(
                custom_id=f"req-{i}",
                model=self._chain(requests[i])[0],
                messages=requests[i].messages,
                response_format={"type": "json_object"} if requests[i].response_model else None,
                max_tokens=entry_of[i].max_output_tokens,
                seed=requests[i].seed,
            )
            for i in indexes
        ]
        with openai.OpenAI(
            api_key=self.environ[first.api_key_env],
            base_url=first.base_url or self.environ.get("OPENAI_BASE_URL"),
            timeout=self.settings.timeout_s,
            http_client=openai.DefaultHttpxClient(verify=tls_context()),
        ) as client:
            run = run_batch(
                client,
                batch_requests,
                poll_interval_s=self.settings.batch_poll_s,
                timeout_s=self.settings.batch_timeout_s,
                metadata={"run_id": self.run.run_id, "stage": requests[indexes[0]].stage},
            )
        retry, costs = [], {}
        for i in indexes:
            item, request = run.results[f"req-{i}"], requests[i]
            model = self._chain(request)[0]
            parsed, status = _validate(item.text, request.response_model) if item.status == "ok" else (None, "error")
            results[i] = self._record(
                request,
                model=model,
                text=item.text,
                parsed=parsed,
                status=status,
                usage={model: (item.tokens_in, item.tokens_out)},
                latency_ms=0.0,
                mode="batch",
                error=item.error,
            )
            costs[i] = results[i].cost_usd
            if status != "ok":
                retry.append(i)
        return retry, costs

    # -- ledger ---------------------------------------------------------------------------

    def _from_cache(self, request: CallRequest, cached: CachedAnswer) -> CallResult:
        parsed, status = _validate(cached.text, request.response_model)
        return self._record(
            request,
            model=cached.model,
            text=cached.text,
            parsed=parsed,
            status=status,
            usage={},
            latency_ms=0.0,
            mode="cache",
            cache_hit=True,
        )

    def _record(
        self,
        request: CallRequest,
        *,
        model: str,
        text: str,
        parsed: BaseModel | None,
        status: str,
        usage: Mapping[str, tuple[int, int]],
        latency_ms: float,
        mode: str,
        retries: int = 0,
        reasks: int = 0,
        fallback_used: bool = False,
        cache_hit: bool = False,
        error: str | None = None,
    ) -> CallResult:
        cost = sum(self.registry.entry(m).cost_usd(i, o, batch=mode == "batch") for m, (i, o) in usage.items())
        call_id = (
            "call_"
            + hashlib.sha256(
                f"{self.run.run_id}|{request.stage}|{request.lead_id}|{request.seed}|{self._calls_made}".encode()
            ).hexdigest()[:20]
        )
        self._calls_made += 1
        self._count(cost=cost, status=status, usage=usage, retries=retries, cache_hit=cache_hit, fallback_used=fallback_used)
        self._calls.append(
            {
                "call_id": call_id,
                "run_id": self.run.run_id,
                "partition_day": self.run.partition_day,
                "campaign_id": self.run.campaign_id,
                "stage": request.stage,
                "provider": self.registry.entry(model).provider,
                "model": model,
                "prompt_version": request.prompt_version,
                "lead_id": request.lead_id,
                "tokens_in": sum(i for i, _ in usage.values()),
                "tokens_out": sum(o for _, o in usage.values()),
                "cost_usd": cost,
                "latency_ms": latency_ms,
                "status": status,
                "mode": mode,
                "retries": retries,
                "reasks": reasks,
                "cache_hit": cache_hit,
                "fallback_used": fallback_used,
                "error": error,
                "created_at": utcnow(),
            }
        )
        if status == "ok" and not cache_hit:
            tokens = usage.get(model, (0, 0))
            self.new_cache_entries.append(
                (self._key(request), model, request.prompt_version, CachedAnswer(text, tokens[0], tokens[1], model))
            )
        return CallResult(call_id, text, parsed, model, status, cost, cache_hit, sum(i + o for i, o in usage.values()), error)

    def _count(
        self,
        *,
        cost: float,
        status: str,
        usage: Mapping[str, tuple[int, int]],
        retries: int,
        cache_hit: bool,
        fallback_used: bool,
    ) -> None:
        """Add one call to the totals `usage` reports (in call order, so the cost sums as the ledger's does)."""
        totals = self._usage
        totals["llm_calls"] += 1
        totals["llm_cache_hits"] += cache_hit
        totals["llm_errors"] += status != "ok"
        totals["llm_fallbacks"] += fallback_used
        totals["llm_retries"] += retries
        totals["tokens_in"] += sum(i for i, _ in usage.values())
        totals["tokens_out"] += sum(o for _, o in usage.values())
        totals["cost_usd"] += cost


def _validate(text: str, response_model: type[BaseModel] | None) -> tuple[BaseModel | None, str]:
    """(parsed, status): status `invalid` when a schema was asked for and the text does not meet it."""
    if response_model is None:
        return None, "ok"
    try:
        return response_model.model_validate_json(text), "ok"
    except ValidationError:
        return None, "invalid"
