"""Rate limits, backoff and circuit breakers on a fake clock: deterministic and instant."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx2
import pytest

from factory_dagster.models.resilience import CircuitBreaker, RateLimiter, RetryPolicy, TokenBucket, parse_retry_after


class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def run(coro):
    return asyncio.run(coro)


def bucket(rate_per_minute: float, capacity: float | None = None) -> tuple[TokenBucket, FakeClock]:
    clock = FakeClock()
    return TokenBucket(rate_per_minute, capacity, clock=clock, sleep=clock.sleep), clock


# -- TokenBucket -------------------------------------------------------------------------


def test_a_full_bucket_serves_its_burst_without_waiting():
    tb, clock = bucket(600, capacity=10)

    async def go():
        return [await tb.acquire() for _ in range(10)]

    assert run(go()) == [0.0] * 10 and clock.now == 1000.0 and clock.sleeps == []


def test_after_the_burst_acquires_follow_the_rate():
    tb, clock = bucket(600, capacity=10)  # 10 tokens a second

    async def go():
        for _ in range(10):
            await tb.acquire()
        return [await tb.acquire() for _ in range(20)]

    waits = run(go())
    assert waits == pytest.approx([0.1] * 20)
    assert clock.now - 1000.0 == pytest.approx(2.0)  # 20 more requests at 10/s


def test_the_long_run_rate_matches_rate_per_minute():
    tb, clock = bucket(120)  # 2/s, default capacity = one second's worth

    async def go():
        for _ in range(2 + 120):
            await tb.acquire()

    run(go())
    assert tb.capacity == 2.0 and clock.now - 1000.0 == pytest.approx(60.0)


def test_default_capacity_is_one_seconds_worth_but_at_least_one():
    assert TokenBucket(6000).capacity == 100.0
    assert TokenBucket(6).capacity == 1.0


def test_idle_time_refills_but_never_beyond_capacity():
    tb, clock = bucket(60, capacity=3)

    async def go():
        for _ in range(3):
            await tb.acquire()
        clock.now += 3600  # an hour idle
        return [await tb.acquire() for _ in range(4)]

    assert run(go()) == pytest.approx([0.0, 0.0, 0.0, 1.0])


def test_a_fractional_amount_waits_only_for_the_shortfall():
    tb, clock = bucket(60, capacity=1)  # 1 token a second

    async def go():
        await tb.acquire(0.75)
        return await tb.acquire(0.5)

    assert run(go()) == pytest.approx(0.25)


def test_an_amount_larger_than_the_capacity_waits_for_a_full_bucket_then_goes_negative():
    tb, clock = bucket(60, capacity=5)  # 1 token a second

    async def go():
        await tb.acquire(5)  # empty now
        big = await tb.acquire(20)  # waits 5 s for a full bucket, then owes 15
        owed = tb.tokens
        small = await tb.acquire(1)  # must wait for the debt: 16 s
        return big, owed, small

    big, owed, small = run(go())
    assert big == pytest.approx(5.0) and owed == pytest.approx(-15.0) and small == pytest.approx(16.0)


def test_concurrent_waiters_are_served_in_order_and_paced():
    tb, clock = bucket(60, capacity=1)
    served: list[tuple[int, float]] = []

    async def one(i: int) -> None:
        await tb.acquire()
        served.append((i, clock.now - 1000.0))

    async def go():
        await asyncio.gather(*(one(i) for i in range(5)))

    run(go())
    assert [i for i, _ in served] == [0, 1, 2, 3, 4]
    assert [t for _, t in served] == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("rate", [0, -1, float("inf")])
def test_a_bucket_needs_a_positive_finite_rate(rate):
    with pytest.raises(ValueError):
        TokenBucket(rate)


def test_a_negative_amount_is_refused():
    tb, _ = bucket(60)
    with pytest.raises(ValueError):
        run(tb.acquire(-1))


# -- RateLimiter -------------------------------------------------------------------------


def test_the_rate_limiter_waits_for_the_tighter_of_requests_and_tokens():
    clock = FakeClock()
    limiter = RateLimiter(rpm=600, tpm=6000, clock=clock, sleep=clock.sleep)  # 10 req/s, 100 tok/s

    async def go():
        # 100-token requests: the token bucket (burst 100, refilled at 6000 - 100 a minute) binds.
        return [await limiter.acquire(100) for _ in range(4)]

    step = 100 / ((6000 - 100) / 60)
    assert run(go()) == pytest.approx([0.0, step, step, step])


def test_the_rate_limiter_paces_requests_when_tokens_are_plentiful():
    clock = FakeClock()
    limiter = RateLimiter(rpm=60, tpm=1_000_000, clock=clock, sleep=clock.sleep)

    async def go():
        return [await limiter.acquire(10) for _ in range(3)]

    step = 60 / 59  # burst 1, refilled at 60 - 1 a minute
    assert run(go()) == pytest.approx([0.0, step, step])


@pytest.mark.parametrize("rpm", [1, 7, 60, 1200])
def test_no_rolling_minute_ever_sees_more_requests_than_the_limit(rpm):
    clock = FakeClock()
    limiter = RateLimiter(rpm=rpm, tpm=None, clock=clock, sleep=clock.sleep)

    async def go():
        stamps = []
        for _ in range(3 * rpm + 2):
            await limiter.acquire(0)
            stamps.append(clock())
        return stamps

    stamps = run(go())
    # A server counting the last 60 s at each request would never see more than `rpm`.
    for k, t in enumerate(stamps):
        in_window = sum(1 for u in stamps[: k + 1] if u > t - 60.0)
        assert in_window <= rpm, (rpm, t, in_window)


def test_an_unlimited_rate_limiter_never_waits():
    clock = FakeClock()
    limiter = RateLimiter(rpm=None, tpm=None, clock=clock, sleep=clock.sleep)

    async def go():
        return [await limiter.acquire(10**9) for _ in range(100)]

    assert set(run(go())) == {0.0} and clock.sleeps == []


def test_a_request_bigger_than_the_token_capacity_does_not_deadlock():
    clock = FakeClock()
    limiter = RateLimiter(rpm=None, tpm=600, clock=clock, sleep=clock.sleep)  # 10 tok/s, capacity 10

    async def go():
        return await asyncio.wait_for(limiter.acquire(5000), timeout=1)

    assert run(go()) == 0.0  # a full bucket pays the first one; the debt delays the next caller


# -- RetryPolicy -------------------------------------------------------------------------


def test_without_jitter_backoff_doubles_up_to_the_cap():
    policy = RetryPolicy(base_s=0.5, cap_s=4.0, jitter=0.0)
    assert [policy.delay(n, None, random.Random(0)) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_full_jitter_stays_within_zero_and_the_backoff():
    policy = RetryPolicy(base_s=0.5, cap_s=4.0, jitter=1.0)
    rng = random.Random(42)
    for attempt in range(1, 8):
        delays = [policy.delay(attempt, None, rng) for _ in range(500)]
        ceiling = min(4.0, 0.5 * 2 ** (attempt - 1))
        assert all(0.0 <= d <= ceiling for d in delays)
        # really spread over the range, not stuck at one end
        assert min(delays) < ceiling * 0.1 and max(delays) > ceiling * 0.9


def test_partial_jitter_keeps_a_floor():
    policy = RetryPolicy(base_s=1.0, cap_s=100.0, jitter=0.25)
    rng = random.Random(1)
    delays = [policy.delay(3, None, rng) for _ in range(500)]
    assert all(3.0 <= d <= 4.0 for d in delays)


def test_a_huge_attempt_number_does_not_overflow():
    assert RetryPolicy(cap_s=20.0, jitter=0.0).delay(10_000, None, random.Random(0)) == 20.0


def test_retry_after_is_a_floor_for_the_delay():
    policy = RetryPolicy(base_s=0.1, cap_s=20.0, jitter=1.0)
    rng = random.Random(3)
    assert all(policy.delay(1, 2.5, rng) >= 2.5 for _ in range(200))
    # a longer backoff still wins over a short Retry-After
    assert RetryPolicy(base_s=8.0, cap_s=20.0, jitter=0.0).delay(1, 1.0, rng) == 8.0


def test_retry_after_is_capped_at_three_times_the_cap():
    policy = RetryPolicy(base_s=0.1, cap_s=2.0, jitter=0.0)
    assert policy.delay(1, 3600.0, random.Random(0)) == 6.0
    assert policy.delay(1, -5.0, random.Random(0)) == 0.1  # nonsense is ignored, not obeyed


def test_a_policy_rejects_nonsense():
    for kwargs in ({"max_attempts": 0}, {"jitter": 1.5}, {"base_s": -1}):
        with pytest.raises(ValueError):
            RetryPolicy(**kwargs)


# -- parse_retry_after -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # milliseconds win
        ({"retry-after-ms": "soon", "retry-after": "2"}, 2.0),  # unreadable ms falls back
        ({"retry-after": "0"}, 0.0),
        ({}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": "whenever"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "nan"}, None),
        (None, None),
    ],
)
def test_parse_retry_after_reads_seconds_and_milliseconds(headers, expected):
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_reads_an_http_date():
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=42), usegmt=True)  # "Sun, 01 Mar 2026 12:00:42 GMT"
    assert parse_retry_after({"Retry-After": later}, now=now.timestamp) == pytest.approx(42.0)
    earlier = format_datetime(now - timedelta(seconds=42), usegmt=True)
    assert parse_retry_after({"retry-after": earlier}, now=now.timestamp) == 0.0


def test_parse_retry_after_reads_httpx_headers_case_insensitively():
    assert parse_retry_after(httpx2.Headers({"Retry-After-Ms": "1200"})) == pytest.approx(1.2)
    assert parse_retry_after(httpx2.Headers({"RETRY-AFTER": "7"})) == 7.0


# -- CircuitBreaker ----------------------------------------------------------------------


def test_the_breaker_opens_after_threshold_consecutive_failures():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10.0, clock=clock)
    for _ in range(2):
        breaker.record_failure()
        assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()


def test_a_success_resets_the_failure_count():
    breaker = CircuitBreaker(failure_threshold=3, clock=FakeClock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"


def test_after_the_cooldown_exactly_one_trial_goes_through():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10.0, clock=clock)
    breaker.record_failure()
    clock.now += 9.9
    assert not breaker.allow() and breaker.state == "open"
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert breaker.allow()  # the trial
    assert not breaker.allow() and not breaker.allow()  # everyone else waits for its verdict
    assert breaker.state == "half_open"


def test_a_successful_trial_closes_the_breaker():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5.0, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and all(breaker.allow() for _ in range(10))


def test_a_failed_trial_opens_the_breaker_for_another_cooldown():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=5, cooldown_s=5.0, clock=clock)
    for _ in range(5):
        breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()  # one failure in half_open is enough
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()


def test_a_trial_that_never_reports_back_is_replaced_after_a_cooldown():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5.0, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()  # this trial is cancelled and never records anything
    clock.now += 4
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()
