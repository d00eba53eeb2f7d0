"""A resilient async chat client for OpenAI-compatible endpoints.

`ChatClient.complete` sends one chat completion down a fallback chain of endpoints and
always comes back with a `CallOutcome` — it does not raise for transport, HTTP, parsing
or validation problems. Along the way it:

- bounds the requests in flight across all calls (one semaphore per client);
- paces each model under its rpm/tpm limits (client-side token buckets);
- retries retryable failures (429, 408, 409, 5xx, timeouts, connection errors, bodies
  the openai client cannot read) with jittered exponential backoff, never sooner than
  the server's Retry-After;
- trips a circuit breaker per endpoint (base_url and model) after calls that exhausted their
  retries, or after answers that were unusable, and skips endpoints whose breaker is open without
  sending anything (also requests already queued for a slot when it opens);
- asks for structured output (`json_schema` where the endpoint supports it, else
  `json_object`), validates it against a pydantic model and re-asks with the validation
  errors before falling back to the next endpoint;
- treats refusals (`message.refusal`, finish_reason "content_filter") as a reason to try
  the next endpoint;
- sums billed usage per model, and keeps the api key out of every error string.

The openai client's own retries are switched off (`max_retries=0`): this module owns the
retry policy so that every HTTP request is counted, paced and visible in the outcome.

One `ChatClient` belongs to one event loop (its HTTP clients bind to it); `aclose()` it,
or use it as `async with ChatClient() as client:`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ValidationError

from factory_dagster.models.resilience import CircuitBreaker, RateLimiter, RetryPolicy, parse_retry_after

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429})
_MAX_ERROR_CHARS = 500
_MAX_LISTED_ERRORS = 8
_OPENAI_HOST = "api.openai.com"


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings every model endpoint's HTTP client in this process shares.

    Why: an openai client builds its own by reading the system's CA store, about 0.1 s each, and the line makes a
    client per stage and endpoint. The same verification as the client's default: the system's CA store, or
    SSL_CERT_FILE / SSL_CERT_DIR as the process started with them.
    """
    return ssl.create_default_context()


@dataclass(frozen=True)
class Endpoint:
    model: str
    base_url: str | None  # None -> openai's default; OPENAI_BASE_URL is NOT read here, the caller resolves it
    api_key: str = field(repr=False)
    supports_json_schema: bool = False
    rpm: int | None = None
    tpm: int | None = None
    max_output_tokens: int = 1024


@dataclass
class CallOutcome:
    text: str  # final answer text ("" if none)
    parsed: BaseModel | None  # validated response_model instance when one was requested and it validated
    model: str  # model that produced the final answer (or the last one tried)
    status: str  # "ok" | "error" | "refused" | "invalid"
    attempts: int  # HTTP requests made in total
    retries: int  # attempts that were retries of the same model after a retryable failure
    reasks: int  # re-asks because the answer did not validate
    fallback_used: bool
    usage_by_model: dict[str, tuple[int, int]]  # billed (prompt_tokens, completion_tokens) per model
    latency_ms: float
    error: str | None  # last error, human readable, never containing the api key
    finish_reason: str | None


class _RetryableFailure(Exception):
    """A failure worth retrying on the same endpoint (with the server's Retry-After, if any)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _FinalFailure(Exception):
    """A failure that retrying the same endpoint will not fix: go to the next one."""


class _CircuitOpened(Exception):
    """The endpoint's breaker opened while this request waited for a slot: it is not sent."""


@dataclass
class _Call:
    """The running tally of one `complete` call."""

    attempts: int = 0
    retries: int = 0
    reasks: int = 0
    fallback_used: bool = False
    usage: dict[str, tuple[int, int]] = field(default_factory=dict)
    error: str | None = None
    finish_reason: str | None = None
    model: str = ""
    # The most recent endpoint that answered without a usable result: ("invalid"|"refused", model, text).
    answered: tuple[str, str, str] | None = None

    def add_usage(self, model: str, usage: Any) -> None:
        prompt = getattr(usage, "prompt_tokens", None)
        completion = getattr(usage, "completion_tokens", None)
        if not isinstance(prompt, int) and not isinstance(completion, int):
            return
        old_in, old_out = self.usage.get(model, (0, 0))
        self.usage[model] = (
            old_in + (prompt if isinstance(prompt, int) else 0),
            old_out + (completion if isinstance(completion, int) else 0),
        )


@dataclass
class _Answer:
    """What one endpoint finally produced."""

    status: str  # "ok" | "invalid" | "refused" | "error"
    text: str = ""
    parsed: BaseModel | None = None


def estimate_request_tokens(messages: Sequence[dict[str, str]], max_output_tokens: int) -> int:
    """What a request may cost against a tokens-per-minute limit: ~4 characters a token, plus the output budget."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return chars // 4 + 1 + max_output_tokens


def schema_name(model: type[BaseModel]) -> str:
    """A `json_schema.name` the API accepts: [a-zA-Z0-9_-], at most 64 characters."""
    return (re.sub(r"[^a-zA-Z0-9_-]", "_", model.__name__) or "answer")[:64]


def response_format_for(response_model: type[BaseModel], supports_json_schema: bool) -> dict[str, Any]:
    if supports_json_schema:
        return {
            "type": "json_schema",
            "json_schema": {"name": schema_name(response_model), "schema": response_model.model_json_schema(), "strict": False},
        }
    return {"type": "json_object"}


def describe_validation_error(exc: ValidationError) -> str:
    """The validation errors as one line a model can act on."""
    parts = []
    for error in exc.errors()[:_MAX_LISTED_ERRORS]:
        loc = ".".join(str(p) for p in error.get("loc", ())) or "(root)"
        parts.append(f"{loc}: {error.get('msg', 'invalid')}")
    more = exc.error_count() - _MAX_LISTED_ERRORS
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def reask_message(problem: str, messages: Sequence[dict[str, str]]) -> dict[str, str]:
    """The user turn that re-asks after an invalid answer: the errors, then the original request again.

    Repeating the request costs a few hundred prompt tokens on a rare path, and keeps the
    task in view for small models (and for the offline models, which read the last turn).
    """
    content = f"Your answer was not valid: {problem}. Answer again with only the JSON object."
    request = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
    if request:
        content += f"\n\nThe request again:\n{request}"
    return {"role": "user", "content": content}


def redact(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` (and of its longer fragments) masked."""
    if secret:
        text = text.replace(secret, "***")
        if len(secret) > 16:  # a key cut short in a message still must not show
            text = text.replace(secret[:16], "***")
    return text


class ChatClient:
    def __init__(
        self,
        *,
        max_concurrency: int = 50,
        timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 (frozen dataclass: a safe default)
        breaker_threshold: int = 5,
        breaker_cooldown_s: float = 30.0,
        max_reasks: int = 1,
        seed: int = 0,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.retry = retry
        self.breaker_threshold = breaker_threshold
        self.breaker_cooldown_s = breaker_cooldown_s
        self.max_reasks = max(0, max_reasks)
        self._rng = random.Random(seed)
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._clients: dict[tuple[str | None, str], openai.AsyncOpenAI] = {}
        self._limiters: dict[tuple[str | None, str], RateLimiter | None] = {}
        self._breakers: dict[tuple[str | None, str], CircuitBreaker] = {}
        self._in_flight = 0
        self.max_in_flight = 0  # high-water mark of concurrent requests, for metrics and tests

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    # -- per-endpoint state ---------------------------------------------------------

    def _client(self, endpoint: Endpoint) -> openai.AsyncOpenAI:
        key = (endpoint.base_url, endpoint.api_key)
        client = self._clients.get(key)
        if client is None:
            client = openai.AsyncOpenAI(
                base_url=endpoint.base_url,
                api_key=endpoint.api_key,
                timeout=self.timeout_s,
                max_retries=0,
                http_client=openai.DefaultAsyncHttpxClient(verify=tls_context()),
            )
            self._clients[key] = client
        return client

    def breaker(self, base_url: str | None, model: str) -> CircuitBreaker:
        """The circuit breaker of one endpoint, a model at a base_url (created closed on first use).

        Keyed by model too: on a shared host such as api.openai.com one model's outage must not
        cut off the fallback model; a whole-server outage trips every model's breaker anyway.
        """
        key = (base_url, model)
        if key not in self._breakers:
            self._breakers[key] = CircuitBreaker(self.breaker_threshold, self.breaker_cooldown_s)
        return self._breakers[key]

    def _limiter(self, endpoint: Endpoint) -> RateLimiter | None:
        key = (endpoint.base_url, endpoint.model)
        if key not in self._limiters:
            self._limiters[key] = RateLimiter(endpoint.rpm, endpoint.tpm) if (endpoint.rpm or endpoint.tpm) else None
        return self._limiters[key]

    # -- the call -------------------------------------------------------------------

    async def complete(
        self,
        chain: Sequence[Endpoint],
        messages: list[dict[str, str]],
        response_model: type[BaseModel] | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> CallOutcome:
        """Ask the chain's endpoints in order until one gives a usable answer; never raises for
        transport, HTTP, parsing or validation failures.

        status "ok": an answer (validated into `parsed` when `response_model` is given; without
        one, any answer is accepted, even one cut off at the token limit). Otherwise "invalid"
        (some endpoint answered, never validly; `text` is its last answer), "refused" (the last
        endpoint that answered refused), or "error" (no endpoint answered). `error` is the last
        error met, also on an "ok" outcome that needed a retry or a fallback.
        """
        started = time.perf_counter()
        call = _Call(model=chain[0].model if chain else "")
        if not chain:
            call.error = "no endpoint in the chain"
        for index, endpoint in enumerate(chain):
            if index > 0:
                call.fallback_used = True
            call.model = endpoint.model
            breaker = self.breaker(endpoint.base_url, endpoint.model)
            if not breaker.allow():
                call.error = (
                    f"{endpoint.model}: circuit open for {endpoint.base_url or 'the default base URL'} "
                    "(its last answers failed or were unusable), skipped"
                )
                call.fallback_used = True
                log.debug("skipping %s: circuit open", endpoint.model)
                continue
            answer = await self._on_endpoint(endpoint, messages, response_model, temperature, seed, call)
            if answer.status == "ok":
                return self._outcome(call, started, "ok", answer.text, answer.parsed)
            if answer.status in {"invalid", "refused"}:
                call.answered = (answer.status, endpoint.model, answer.text)
        if call.answered is not None:
            status, model, text = call.answered
            call.model = model
            return self._outcome(call, started, status, text if status == "invalid" else "", None)
        return self._outcome(call, started, "error", "", None)

    @staticmethod
    def _outcome(call: _Call, started: float, status: str, text: str, parsed: BaseModel | None) -> CallOutcome:
        return CallOutcome(
            text=text,
            parsed=parsed,
            model=call.model,
            status=status,
            attempts=call.attempts,
            retries=call.retries,
            reasks=call.reasks,
            fallback_used=call.fallback_used,
            usage_by_model=dict(call.usage),
            latency_ms=(time.perf_counter() - started) * 1000,
            error=call.error,
            finish_reason=call.finish_reason,
        )

    async def _on_endpoint(
        self,
        endpoint: Endpoint,
        messages: list[dict[str, str]],
        response_model: type[BaseModel] | None,
        temperature: float | None,
        seed: int | None,
        call: _Call,
    ) -> _Answer:
        """Ask one endpoint, with retries and re-asks; report how it ended."""
        breaker = self.breaker(endpoint.base_url, endpoint.model)
        conversation = list(messages)
        failures = 0  # consecutive retryable failures of the current request
        reasks = 0
        unusable: str | None = None  # the endpoint's last answer, when it did not validate
        while True:
            if failures:
                call.retries += 1
            try:
                completion = await self._request(endpoint, conversation, response_model, temperature, seed, call)
            except _RetryableFailure as exc:
                failures += 1
                call.error = self._error(endpoint, str(exc))
                if failures >= self.retry.max_attempts:
                    breaker.record_failure()
                    return _Answer("error")
                if breaker.state == CircuitBreaker.OPEN:
                    # Other calls already found this base_url down: stop spending requests on it.
                    call.error += " (circuit opened, not retried)"
                    return _Answer("error")
                delay = self.retry.delay(failures, exc.retry_after_s, self._rng)
                log.debug("retrying %s in %.2fs after: %s", endpoint.model, delay, call.error)
                await asyncio.sleep(delay)
                continue
            except _FinalFailure as exc:
                # The server answered (401, 404, ...), so the endpoint is up; retrying will not change
                # its mind. Recording that also settles a half-open trial.
                breaker.record_success()
                call.error = self._error(endpoint, str(exc))
                return _Answer("error")
            except _CircuitOpened:
                call.error = self._error(
                    endpoint, "circuit opened while the call waited (its last answers failed or were unusable), not sent"
                )
                # A re-ask that is not sent leaves the endpoint's unusable answer as the call's answer.
                return _Answer("error") if unusable is None else _Answer("invalid", unusable)

            failures = 0
            call.add_usage(endpoint.model, completion.usage)
            choice = completion.choices[0]
            call.finish_reason = choice.finish_reason
            message = choice.message
            refusal = getattr(message, "refusal", None) if message is not None else None
            if refusal or choice.finish_reason == "content_filter":
                breaker.record_success()
                call.error = self._error(endpoint, f"refused: {refusal or 'finish_reason content_filter'}")
                return _Answer("refused")
            text = (getattr(message, "content", None) or "") if message is not None else ""
            if response_model is None:
                breaker.record_success()
                return _Answer("ok", text)
            problem, parsed = self._validate(response_model, text, choice.finish_reason)
            if problem is None:
                breaker.record_success()
                return _Answer("ok", text, parsed)
            call.error = self._error(endpoint, f"invalid answer: {problem}")
            # Every unusable answer counts against the endpoint (a usable one resets the count): a model that
            # only answers junk is skipped after a few answers instead of being paid for every call of the day.
            # Counted per answer, not per exhausted call, because re-asks queue behind every other call's
            # first request: per call, the whole day's first requests would be sent before the breaker opens.
            breaker.record_failure()
            unusable = text
            if reasks >= self.max_reasks:
                return _Answer("invalid", text)
            reasks += 1
            call.reasks += 1
            conversation = [*conversation, {"role": "assistant", "content": text}, reask_message(problem, messages)]

    @staticmethod
    def _validate(response_model: type[BaseModel], text: str, finish_reason: str | None) -> tuple[str | None, BaseModel | None]:
        if finish_reason == "length":
            return "it was cut off at the output token limit (finish_reason 'length'); keep it shorter", None
        try:
            return None, response_model.model_validate_json(text)
        except ValidationError as exc:
            return describe_validation_error(exc), None

    @staticmethod
    def _error(endpoint: Endpoint, message: str) -> str:
        return redact(f"{endpoint.model}: {message}", endpoint.api_key)[:_MAX_ERROR_CHARS]

    async def _request(
        self,
        endpoint: Endpoint,
        conversation: list[dict[str, str]],
        response_model: type[BaseModel] | None,
        temperature: float | None,
        seed: int | None,
        call: _Call,
    ) -> Any:
        """One HTTP request (paced, bounded); a readable ChatCompletion with choices, or a classified failure."""
        kwargs: dict[str, Any] = {"model": endpoint.model, "messages": conversation}
        # OpenAI's newer models reject `max_tokens`; compatible servers know `max_tokens` best.
        official = endpoint.base_url is None or _OPENAI_HOST in endpoint.base_url
        kwargs["max_completion_tokens" if official else "max_tokens"] = endpoint.max_output_tokens
        if temperature is not None:
            kwargs["temperature"] = temperature
        if seed is not None:
            kwargs["seed"] = seed
        if response_model is not None:
            kwargs["response_format"] = response_format_for(response_model, endpoint.supports_json_schema)

        limiter = self._limiter(endpoint)
        if limiter is not None:
            # Paced before taking a slot, so a throttled model never holds slots others could use.
            await limiter.acquire(estimate_request_tokens(conversation, endpoint.max_output_tokens))
        client = self._client(endpoint)
        async with self._semaphore:
            if self.breaker(endpoint.base_url, endpoint.model).state == CircuitBreaker.OPEN:
                # Calls queue for a slot long after they passed the breaker: the ones still waiting when it
                # opens are not sent (a half-open trial reads half_open and goes ahead).
                raise _CircuitOpened
            call.attempts += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                # The body is already plain JSON: posting it directly skips the SDK's per-request
                # TypedDict transform (about 1.6 ms of CPU a call, the client's largest cost).
                completion = await client.post("/chat/completions", body=kwargs, cast_to=ChatCompletion)
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status in RETRYABLE_STATUS or status >= 500:
                    raise _RetryableFailure(f"HTTP {status}: {exc}", parse_retry_after(exc.response.headers)) from None
                raise _FinalFailure(f"HTTP {status}: {exc}") from None
            except openai.APITimeoutError:
                raise _RetryableFailure(f"timed out after {self.timeout_s:g}s") from None
            except openai.APIConnectionError as exc:
                raise _RetryableFailure(f"connection error: {exc}") from None
            except (openai.APIResponseValidationError, ValueError) as exc:
                # A 200 whose body is not the JSON it claims to be (json.JSONDecodeError is a ValueError).
                raise _RetryableFailure(f"unreadable response body ({type(exc).__name__}: {exc})") from None
            except openai.OpenAIError as exc:
                raise _FinalFailure(f"{type(exc).__name__}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - a call reports its failure, it never raises it
                # Not a transport problem we know how to wait out: move on to the next endpoint.
                raise _FinalFailure(f"unexpected {type(exc).__name__}: {exc}") from None
            finally:
                self._in_flight -= 1
        # A non-JSON 200 (an HTML error page, a proxy's banner) comes back from openai as a plain str;
        # JSON of the wrong shape comes back as a ChatCompletion without choices.
        choices = getattr(completion, "choices", None)
        if isinstance(completion, str) or not isinstance(choices, list) or not choices:
            body = completion if isinstance(completion, str) else str(_shape(completion))
            raise _RetryableFailure(f"response is not a chat completion: {body[:120]!r}")
        return completion


def _shape(completion: Any) -> Any:
    try:
        return completion.model_dump(exclude_none=True)
    except Exception:  # noqa: BLE001
        return type(completion).__name__
