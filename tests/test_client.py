"""The resilient chat client over real HTTP: the real `openai.AsyncOpenAI` against the local server's faults."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from factory_dagster.campaign.spec import load_spec
from factory_dagster.drafting.draft import draft_brief
from factory_dagster.models import local_server
from factory_dagster.models.client import CallOutcome, ChatClient, Endpoint, estimate_request_tokens, tls_context
from factory_dagster.models.local_server import JUNK_BODY, WRONG_SCHEMA_CONTENT, Faults, LocalOpenAIServer, serving
from factory_dagster.models.offline import estimate_tokens
from factory_dagster.models.prompts import build_messages
from factory_dagster.models.resilience import RetryPolicy
from factory_dagster.settings import DEFAULT_SPEC_PATH

KEY = "local-test-key"
SPEC = load_spec(DEFAULT_SPEC_PATH)
ANGLE = SPEC.angles[0]
MESSAGES = build_messages(
    "draft-v1",
    draft_brief(SPEC, ANGLE.name, "Month-end close still takes two weeks.", list(ANGLE.claims), "draft-v1"),
    {"first_name": "Ana", "last_name": "Lopez", "company": "Acme", "role": "CFO", "industry": "retail", "note": ""},
)
FAST = RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.05, jitter=1.0)
MODELS = {"model-a": 0.0, "model-b": 0.0}


class Draft(BaseModel):
    subject: str
    body: str


class Spy:
    """Wraps a server's chat handler: what each request asked for, and when it ran (server side)."""

    def __init__(self, server: LocalOpenAIServer) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.spans: list[tuple[float, float]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        original = server.chat

        def chat(body: Any, *, live: bool = True):
            started = time.monotonic()
            with self._lock:
                self.bodies.append(body)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return original(body, live=live)
            finally:
                with self._lock:
                    self.in_flight -= 1
                    self.spans.append((started, time.monotonic()))

        server.chat = chat  # the handler calls server.chat: the instance attribute wins

    def max_overlap(self) -> int:
        """Most requests open at one instant, from the recorded start/end timestamps."""
        events = sorted([(s, 1) for s, _ in self.spans] + [(e, -1) for _, e in self.spans], key=lambda x: (x[0], x[1]))
        depth = best = 0
        for _, step in events:
            depth += step
            best = max(best, depth)
        return best


@pytest.fixture
def server() -> Iterator[LocalOpenAIServer]:
    with serving(MODELS, api_key=KEY, faults=Faults(retry_after_s=0.05)) as srv:
        yield srv


@pytest.fixture
def other_server() -> Iterator[LocalOpenAIServer]:
    with serving(MODELS, api_key=KEY) as srv:
        yield srv


def ep(server: LocalOpenAIServer | str, model: str = "model-a", **kwargs: Any) -> Endpoint:
    base_url = server if isinstance(server, str) else server.base_url
    return Endpoint(model=model, base_url=base_url, api_key=kwargs.pop("api_key", KEY), **kwargs)


def complete(chain: list[Endpoint], response_model: type[BaseModel] | None = Draft, **client_kwargs: Any) -> CallOutcome:
    async def go() -> CallOutcome:
        async with ChatClient(**{"retry": FAST, **client_kwargs}) as client:
            return await client.complete(chain, MESSAGES, response_model)

    return asyncio.run(go())


def chat_requests(server: LocalOpenAIServer, model: str | None = None, status: int | None = None) -> int:
    return sum(
        1
        for path, m, s in server.log
        if path == "/v1/chat/completions" and (model is None or m == model) and (status is None or s == status)
    )


# -- the happy path ----------------------------------------------------------------------


def test_a_plain_call_validates_into_the_response_model(server):
    spy = Spy(server)
    out = complete([ep(server)])
    assert out.status == "ok" and out.error is None and out.model == "model-a"
    assert isinstance(out.parsed, Draft) and out.parsed.subject and "Ana" in out.parsed.body
    assert json.loads(out.text) == out.parsed.model_dump()
    assert (out.attempts, out.retries, out.reasks, out.fallback_used) == (1, 0, 0, False)
    assert out.finish_reason == "stop" and out.latency_ms > 0
    tokens_in, tokens_out = out.usage_by_model["model-a"]
    assert tokens_in == sum(estimate_tokens(m["content"]) for m in MESSAGES) and tokens_out == estimate_tokens(out.text)
    body = spy.bodies[0]
    assert body["response_format"] == {"type": "json_object"} and body["max_tokens"] == 1024
    assert "temperature" not in body


def test_an_endpoint_that_supports_json_schema_gets_the_schema(server):
    spy = Spy(server)

    async def go():
        async with ChatClient(retry=FAST) as client:
            return await client.complete([ep(server, supports_json_schema=True)], MESSAGES, Draft, temperature=0.3)

    assert asyncio.run(go()).status == "ok"
    body = spy.bodies[0]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Draft", "schema": Draft.model_json_schema(), "strict": False},
    }
    assert body["temperature"] == 0.3


def test_without_a_response_model_the_text_comes_back_as_is(server):
    spy = Spy(server)
    out = complete([ep(server)], response_model=None)
    assert out.status == "ok" and out.parsed is None and json.loads(out.text)["subject"]
    assert "response_format" not in spy.bodies[0]


# -- retries -----------------------------------------------------------------------------


def test_a_429_is_retried_no_sooner_than_its_retry_after(server):
    server.faults.retry_after_s = 0.4
    server.faults.script = {"model-a": ["429"]}
    spy = Spy(server)
    out = complete([ep(server)], retry=RetryPolicy(max_attempts=3, base_s=0.01, cap_s=1.0))
    assert out.status == "ok" and out.model == "model-a" and not out.fallback_used
    assert (out.attempts, out.retries) == (2, 1)
    assert chat_requests(server, status=429) == 1 and chat_requests(server, status=200) == 1
    (_, first_end), (second_start, _) = spy.spans
    assert second_start - first_end >= 0.4  # the backoff alone (≤ 0.01 s) would have been sooner
    assert out.latency_ms >= 400


def test_an_excessive_retry_after_is_capped_at_three_times_the_backoff_cap(server):
    server.faults.retry_after_s = 30.0
    server.faults.script = {"model-a": ["503"]}
    spy = Spy(server)
    out = complete([ep(server)], retry=RetryPolicy(max_attempts=3, base_s=0.01, cap_s=0.1))
    assert out.status == "ok" and out.retries == 1
    (_, first_end), (second_start, _) = spy.spans
    assert 0.3 <= second_start - first_end < 1.0


@pytest.mark.parametrize("failure", ["500", "503"])
def test_server_errors_are_retried_on_the_same_model(server, failure):
    server.faults.script = {"model-a": [failure, failure]}
    out = complete([ep(server)])
    assert out.status == "ok" and out.model == "model-a" and not out.fallback_used
    assert (out.attempts, out.retries) == (3, 2) and chat_requests(server, status=int(failure)) == 2


def test_a_timeout_is_retried(server):
    server.faults.timeout_s = 2.0
    server.faults.script = {"model-a": ["timeout"]}
    started = time.monotonic()
    out = complete([ep(server)], timeout_s=0.5)
    elapsed = time.monotonic() - started
    assert out.status == "ok" and (out.attempts, out.retries) == (2, 1) and out.model == "model-a"
    assert 0.5 <= elapsed < 2.0  # gave up on the slow answer instead of waiting for it


def test_connection_errors_are_retried_then_reported(server):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"  # nobody listens once the socket closes
    secret = "sk-dead-endpoint-secret-0123456789"
    out = complete([ep(dead, api_key=secret)])
    assert out.status == "error" and (out.attempts, out.retries) == (3, 2)
    assert "connection" in out.error.lower() and secret not in out.error and out.usage_by_model == {}


def test_a_junk_body_is_retried_and_never_raises(server):
    server.faults.script = {"model-a": ["junk_body"]}
    out = complete([ep(server)])
    assert out.status == "ok" and (out.attempts, out.retries) == (2, 1)


def test_a_junk_body_every_time_is_an_error_not_an_exception(server):
    server.faults.script = {"model-a": ["junk_body"] * 3}
    out = complete([ep(server)])
    assert out.status == "error" and out.attempts == 3 and out.text == "" and out.parsed is None
    assert "not a chat completion" in out.error and JUNK_BODY.decode()[:20] in out.error


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b'{"id": "x", "object": "chat.completion"}', b'{"choices": []}', b""],
    ids=["broken-json", "no-choices", "empty-choices", "empty-body"],
)
def test_a_json_200_that_is_not_a_chat_completion_is_retried(server, payload):
    # openai raises json.JSONDecodeError (not an OpenAIError) for the first, and returns a
    # ChatCompletion without choices for the others: all of them must count as retryable.
    original, served = server.chat, []

    def chat(body, *, live=True):
        if not served:
            served.append(payload)
            return local_server._Reply(200, payload, "application/json")
        return original(body, live=live)

    server.chat = chat
    out = complete([ep(server)])
    assert out.status == "ok" and (out.attempts, out.retries) == (2, 1)
    assert "not a chat completion" in out.error or "unreadable response body" in out.error


# -- fallback ----------------------------------------------------------------------------


def test_a_model_that_keeps_failing_falls_back_to_the_next(server):
    server.faults.script = {"model-a": ["500"] * 3}
    out = complete([ep(server, "model-a"), ep(server, "model-b")])
    assert out.status == "ok" and out.model == "model-b" and out.fallback_used
    assert out.error.startswith("model-a: HTTP 500")  # why it fell back
    assert (out.attempts, out.retries) == (4, 2)
    assert chat_requests(server, "model-a") == 3 and chat_requests(server, "model-b") == 1
    assert set(out.usage_by_model) == {"model-b"}  # errors carry no usage


def test_a_401_is_not_retried_and_falls_back(server):
    secret = "sk-wrong-key-that-must-never-appear"
    out = complete([ep(server, "model-a", api_key=secret), ep(server, "model-b")])
    assert out.status == "ok" and out.model == "model-b" and out.fallback_used
    assert (out.attempts, out.retries) == (2, 0) and chat_requests(server, status=401) == 1


def test_a_401_alone_is_an_error_that_never_shows_the_key(server):
    secret = "sk-wrong-key-that-must-never-appear"
    endpoint = ep(server, api_key=secret)
    out = complete([endpoint])
    assert out.status == "error" and out.attempts == 1 and "401" in out.error
    assert secret not in out.error and secret not in repr(out) and secret not in repr(endpoint)


def test_a_key_echoed_by_the_server_is_redacted_from_the_error():
    secret = "sk-proj-echoed-back-by-a-careless-proxy-0123456789"
    with serving(MODELS, api_key=secret) as srv:
        srv.chat = lambda body, *, live=True: local_server._error(400, f"Incorrect API key provided: {secret}.")
        out = complete([ep(srv, api_key=secret)])
    assert out.status == "error" and out.attempts == 1 and "400" in out.error
    assert secret not in out.error and secret[:16] not in out.error and "***" in out.error


def test_an_unknown_model_is_not_retried(server):
    out = complete([ep(server, "no-such-model"), ep(server, "model-b")])
    assert out.status == "ok" and out.model == "model-b" and (out.attempts, out.retries) == (2, 0)
    assert chat_requests(server, "no-such-model", status=404) == 1


def test_an_empty_chain_is_an_error():
    out = complete([])
    assert out.status == "error" and out.attempts == 0 and out.error


# -- circuit breaker ---------------------------------------------------------------------


def test_the_breaker_opens_skips_the_endpoint_then_tries_it_again_after_the_cooldown(server, other_server):
    retry = RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.02)
    server.faults.script = {"model-a": ["500"] * 4}
    chain = [ep(server, "model-a"), ep(other_server, "model-b")]

    async def go():
        async with ChatClient(retry=retry, breaker_threshold=2, breaker_cooldown_s=0.5) as client:
            failing = [await client.complete(chain, MESSAGES, Draft) for _ in range(2)]
            state_after = client.breaker(server.base_url, "model-a").state
            before = chat_requests(server)
            skipped = [await client.complete(chain, MESSAGES, Draft) for _ in range(3)]
            skipped_requests = chat_requests(server) - before
            await asyncio.sleep(0.55)
            trial = await client.complete(chain, MESSAGES, Draft)
            return failing, state_after, skipped, skipped_requests, trial, client.breaker(server.base_url, "model-a").state

    failing, state_after, skipped, skipped_requests, trial, final_state = asyncio.run(go())
    assert all(o.status == "ok" and o.model == "model-b" and o.attempts == 3 for o in failing)
    assert state_after == "open"
    assert skipped_requests == 0
    assert all(o.status == "ok" and o.model == "model-b" and o.fallback_used and o.attempts == 1 for o in skipped)
    # half-open: one trial goes to model-a, whose script is spent, so it answers and closes the breaker
    assert trial.status == "ok" and trial.model == "model-a" and not trial.fallback_used and trial.attempts == 1
    assert final_state == "closed"


def test_a_half_open_breaker_lets_one_trial_through_while_the_rest_fall_back(server, other_server):
    retry = RetryPolicy(max_attempts=1, base_s=0.01, cap_s=0.02)
    server.faults.script = {"model-a": ["500"]}
    chain = [ep(server, "model-a"), ep(other_server, "model-b")]

    async def go():
        async with ChatClient(retry=retry, breaker_threshold=1, breaker_cooldown_s=0.2) as client:
            first = await client.complete(chain, MESSAGES, Draft)
            await asyncio.sleep(0.25)
            server.faults.latency_s = 0.3  # the trial is slow, the others arrive while it runs
            before = chat_requests(server)
            burst = await asyncio.gather(*(client.complete(chain, MESSAGES, Draft) for _ in range(5)))
            return first, burst, chat_requests(server) - before

    first, burst, trial_requests = asyncio.run(go())
    assert first.model == "model-b" and trial_requests == 1
    assert sorted(o.model for o in burst) == ["model-a"] + ["model-b"] * 4
    assert all(o.status == "ok" for o in burst)


def test_a_breaker_that_is_open_alone_means_an_error_without_a_request(server):
    retry = RetryPolicy(max_attempts=1, base_s=0.01, cap_s=0.02)
    server.faults.script = {"model-a": ["503"]}

    async def go():
        async with ChatClient(retry=retry, breaker_threshold=1, breaker_cooldown_s=60) as client:
            return [await client.complete([ep(server)], MESSAGES, Draft) for _ in range(2)]

    first, second = asyncio.run(go())
    assert first.status == "error" and "503" in first.error
    assert second.status == "error" and second.attempts == 0 and second.fallback_used and "circuit open" in second.error
    assert chat_requests(server) == 1


# -- structured output: re-ask, invalid, refusal ----------------------------------------


@pytest.mark.parametrize("fault", ["malformed", "truncated", "wrong_schema"])
def test_an_invalid_answer_is_re_asked_with_its_errors(server, fault):
    server.faults.script = {"model-a": [fault]}
    spy = Spy(server)
    out = complete([ep(server)])
    assert out.status == "ok" and isinstance(out.parsed, Draft) and out.model == "model-a"
    assert (out.attempts, out.retries, out.reasks, out.fallback_used) == (2, 0, 1, False)
    reask = spy.bodies[1]["messages"]
    assert [m["role"] for m in reask] == ["system", "user", "assistant", "user"]
    assert reask[-1]["content"].startswith("Your answer was not valid: ")
    assert "Answer again with only the JSON object." in reask[-1]["content"]
    assert "<brief>" in reask[-1]["content"]  # the request is repeated, so the task stays in view
    if fault == "truncated":
        assert "cut off" in reask[-1]["content"]
    if fault == "wrong_schema":
        assert reask[2]["content"] == WRONG_SCHEMA_CONTENT and "subject: Field required" in reask[-1]["content"]


@pytest.mark.parametrize("fault", ["malformed", "truncated", "wrong_schema"])
def test_an_answer_that_stays_invalid_is_reported_invalid(server, fault):
    server.faults.script = {"model-a": [fault, fault]}
    out = complete([ep(server)])
    assert out.status == "invalid" and out.parsed is None and out.text and out.model == "model-a"
    assert (out.attempts, out.reasks) == (2, 1) and "invalid answer" in out.error
    if fault == "truncated":
        assert out.finish_reason == "length"


def test_more_re_asks_when_allowed(server):
    server.faults.script = {"model-a": ["wrong_schema", "malformed"]}
    out = complete([ep(server)], max_reasks=2)
    assert out.status == "ok" and (out.attempts, out.reasks) == (3, 2)


def test_an_answer_that_stays_invalid_falls_back_and_usage_is_billed_per_model(server):
    server.faults.script = {"model-a": ["wrong_schema", "wrong_schema"]}
    spy = Spy(server)
    out = complete([ep(server, "model-a"), ep(server, "model-b")])
    assert out.status == "ok" and out.model == "model-b" and out.fallback_used and out.reasks == 1
    assert out.attempts == 3
    a_in, a_out = out.usage_by_model["model-a"]
    b_in, b_out = out.usage_by_model["model-b"]

    def prompt_tokens(body: dict[str, Any]) -> int:
        return sum(estimate_tokens(m["content"]) for m in body["messages"])

    assert a_out == 2 * estimate_tokens(WRONG_SCHEMA_CONTENT)
    assert a_in == prompt_tokens(spy.bodies[0]) + prompt_tokens(spy.bodies[1])
    assert (b_in, b_out) == (prompt_tokens(spy.bodies[2]), estimate_tokens(out.text))


def test_a_refusal_falls_back(server):
    server.faults.script = {"model-a": ["refusal"]}
    out = complete([ep(server, "model-a"), ep(server, "model-b")])
    assert out.status == "ok" and out.model == "model-b" and out.fallback_used and out.attempts == 2
    assert set(out.usage_by_model) == {"model-a", "model-b"}


def test_a_refusal_with_nowhere_to_go_is_refused(server):
    server.faults.script = {"model-a": ["refusal"]}
    out = complete([ep(server)])
    assert out.status == "refused" and out.text == "" and out.parsed is None and out.attempts == 1
    assert "refused" in out.error and out.reasks == 0


# -- pacing and concurrency --------------------------------------------------------------


def test_requests_in_flight_never_exceed_max_concurrency(server):
    server.faults.latency_s = 0.15
    spy = Spy(server)

    async def go():
        async with ChatClient(retry=FAST, max_concurrency=4) as client:
            started = time.monotonic()
            outs = await asyncio.gather(*(client.complete([ep(server)], MESSAGES, Draft) for _ in range(16)))
            return outs, time.monotonic() - started, client.max_in_flight

    outs, elapsed, client_max = asyncio.run(go())
    assert all(o.status == "ok" for o in outs)
    assert spy.max_in_flight == 4 and spy.max_overlap() <= 4 and client_max == 4
    assert elapsed >= 4 * 0.15  # 16 requests, 4 at a time


def burst(endpoint: Endpoint, n: int) -> tuple[list[CallOutcome], float]:
    async def go():
        async with ChatClient(retry=RetryPolicy(max_attempts=6, base_s=0.05, cap_s=1.0)) as client:
            started = time.monotonic()
            outs = await asyncio.gather(*(client.complete([endpoint], MESSAGES, Draft) for _ in range(n)))
            return outs, time.monotonic() - started

    return asyncio.run(go())


def test_the_rpm_limiter_keeps_a_burst_under_the_servers_limit():
    faults = Faults(rpm_limit=5, rpm_window_s=1.0)  # the server admits 5 requests per rolling second
    # Unpaced, a burst of 8 overruns the limit (the client then retries the 429s).
    with serving(MODELS, api_key=KEY, faults=faults) as srv:
        outs, _ = burst(ep(srv), 8)
        assert all(o.status == "ok" for o in outs) and srv.count(429) >= 3
    # Paced at 120 rpm (2/s, bursts of 2): at most 4 in any second, so the server never says 429.
    with serving(MODELS, api_key=KEY, faults=Faults(rpm_limit=5, rpm_window_s=1.0)) as srv:
        outs, elapsed = burst(ep(srv, rpm=120), 8)
        assert all(o.status == "ok" and o.retries == 0 for o in outs)
        assert srv.count(429) == 0 and srv.count(200) == 8
        assert elapsed >= 2.9  # 2 at once, then 6 more at 0.5 s intervals


def test_the_tpm_limiter_paces_by_estimated_tokens(server):
    spy = Spy(server)
    per_request = estimate_request_tokens(MESSAGES, 30)  # ~chars/4 of the prompt + the output budget
    endpoint = ep(server, tpm=120 * per_request, max_output_tokens=30)  # two requests' worth a second

    async def go():
        async with ChatClient(retry=FAST) as client:
            return await asyncio.gather(*(client.complete([endpoint], MESSAGES, Draft) for _ in range(4)))

    outs = asyncio.run(go())
    assert all(o.status == "ok" for o in outs)
    starts = sorted(s for s, _ in spy.spans)
    # a one-second bucket holds two requests; the third and fourth wait 0.5 s each
    # (server-side timestamps: the first request also paid for a new connection, hence the slack)
    assert starts[1] - starts[0] < 0.3 and starts[3] - starts[0] >= 0.8


def test_every_client_shares_one_tls_context_that_verifies_the_server():
    """Built once per process (reading the CA store costs about 0.1 s a client), and as strict as openai's default."""
    context = tls_context()
    assert tls_context() is context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
