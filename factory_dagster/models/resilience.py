"""Resilience building blocks for model traffic: rate limits, retry backoff, circuit breakers.

Pure asyncio, no HTTP. Every piece takes an injectable clock (and, where it waits, an
injectable async sleep) so the unit tests run on a fake clock in microseconds.

- `TokenBucket` / `RateLimiter`: client-side pacing under a provider's requests-per-minute
  and tokens-per-minute limits, so a burst is spread out instead of answered with 429s.
- `RetryPolicy` / `parse_retry_after`: exponential backoff with full jitter that never
  retries sooner than the server asked (Retry-After).
- `CircuitBreaker`: stop sending to an endpoint that keeps failing, try it again after a
  cooldown with one trial request.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Protocol

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]

# Tolerance for float round-off when a refill lands exactly on the amount needed.
_EPSILON = 1e-9


class _Random(Protocol):
    def random(self) -> float: ...


class TokenBucket:
    """A token bucket refilled at `rate_per_minute`, holding at most `capacity` tokens.

    `capacity` defaults to one second's worth of refill (at least 1), which keeps bursts
    short: providers enforce per-minute limits over shorter periods too. The bucket starts
    full. Waiters are served first come, first served.

    An `amount` larger than the capacity is allowed: the caller waits for a full bucket and
    the balance then goes negative, so later callers wait for the debt to refill. A big
    request is slowed down, never deadlocked.
    """

    def __init__(
        self,
        rate_per_minute: float,
        capacity: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not rate_per_minute > 0 or not math.isfinite(rate_per_minute):
            raise ValueError(f"rate_per_minute must be a positive number, got {rate_per_minute!r}")
        self.rate_per_minute = float(rate_per_minute)
        self.rate_per_s = self.rate_per_minute / 60.0
        self.capacity = float(capacity) if capacity is not None else max(1.0, self.rate_per_s)
        if not self.capacity > 0:
            raise ValueError(f"capacity must be positive, got {capacity!r}")
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._updated = clock()
        self._lock = asyncio.Lock()

    @property
    def tokens(self) -> float:
        """Tokens available now (negative while a large acquire is being paid back)."""
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate_per_s)
        self._updated = now

    async def acquire(self, amount: float = 1.0) -> float:
        """Wait until `amount` tokens are available, take them, return the seconds waited."""
        if amount < 0 or not math.isfinite(amount):
            raise ValueError(f"amount must be a non-negative number, got {amount!r}")
        started = self._clock()
        need = min(amount, self.capacity)
        async with self._lock:
            while True:
                self._refill()
                deficit = need - self._tokens
                if deficit <= _EPSILON:
                    break
                await self._sleep(deficit / self.rate_per_s)
            self._tokens -= amount
        return max(0.0, self._clock() - started)


def _window_safe(limit_per_minute: float, capacity: float | None, clock: Clock, sleep: Sleep) -> TokenBucket:
    """A bucket that never lets more than `limit_per_minute` through in any rolling minute.

    A bucket of capacity c refilled at r per minute passes up to c + r in a minute, so
    the refill is the limit less the burst. Servers count per-minute limits over rolling
    windows: a bucket refilled at the full limit overshoots every window by its burst.
    """
    burst = capacity if capacity is not None else min(max(1.0, limit_per_minute / 60.0), limit_per_minute / 2.0)
    return TokenBucket(limit_per_minute - burst, burst, clock=clock, sleep=sleep)


class RateLimiter:
    """A request bucket (`rpm`) and a token bucket (`tpm`); either may be None (unlimited).

    Both keep under their limit over any rolling minute (see `_window_safe`)."""

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        request_capacity: float | None = None,
        token_capacity: float | None = None,
    ) -> None:
        self._clock = clock
        self.requests = _window_safe(rpm, request_capacity, clock, sleep) if rpm else None
        self.tokens = _window_safe(tpm, token_capacity, clock, sleep) if tpm else None

    async def acquire(self, tokens: int) -> float:
        """Wait for one request slot and `tokens` tokens; return the seconds waited."""
        started = self._clock()
        if self.requests is not None:
            await self.requests.acquire(1.0)
        if self.tokens is not None:
            await self.tokens.acquire(float(max(0, tokens)))
        return max(0.0, self._clock() - started)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry one endpoint.

    `max_attempts` counts every request to the endpoint, the first one included.
    The backoff before retry n (n = 1 after the first failure) is drawn from
    [base_s * 2**(n-1) * (1 - jitter), base_s * 2**(n-1)], capped at `cap_s`:
    `jitter=1.0` is "full jitter", `jitter=0.0` is plain exponential backoff.
    A server's Retry-After is a floor (itself capped at 3 * cap_s, so a hostile or
    broken header cannot park a worker for an hour).
    """

    max_attempts: int = 4
    base_s: float = 0.5
    cap_s: float = 20.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_s < 0 or self.cap_s < 0:
            raise ValueError("base_s and cap_s must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def backoff(self, attempt: int) -> float:
        """The un-jittered backoff after failed attempt number `attempt` (1-based)."""
        exponent = min(max(attempt, 1) - 1, 60)
        return min(self.cap_s, self.base_s * (2.0**exponent))

    def delay(self, attempt: int, retry_after_s: float | None = None, rng: _Random | None = None) -> float:
        """Seconds to wait before retrying after failed attempt number `attempt` (1-based)."""
        draw = (rng or random).random()
        delay = self.backoff(attempt) * (1.0 - self.jitter * draw)
        if retry_after_s is not None and math.isfinite(retry_after_s):
            delay = max(delay, min(max(retry_after_s, 0.0), self.cap_s * 3))
        return delay


def _header(headers: Any, name: str) -> str | None:
    value = headers.get(name)
    if value is None and isinstance(headers, Mapping):
        # A plain dict is case-sensitive; HTTP header names are not.
        for key, candidate in headers.items():
            if isinstance(key, str) and key.lower() == name:
                value = candidate
                break
    return None if value is None else str(value).strip()


def _seconds(value: str, divisor: float) -> float | None:
    try:
        seconds = float(value) / divisor
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def parse_retry_after(headers: Any, now: Clock = time.time) -> float | None:
    """Seconds the server asked to wait, from `retry-after-ms`, `retry-after` (seconds, int
    or float) or `retry-after` as an HTTP-date; None when absent or unreadable.

    `headers` is any mapping with `.get` (httpx's Headers are case-insensitive; plain dicts
    are searched case-insensitively too). A date in the past means 0.
    """
    if headers is None:
        return None
    millis = _header(headers, "retry-after-ms")
    if millis:
        seconds = _seconds(millis, 1000.0)
        if seconds is not None:
            return seconds
    value = _header(headers, "retry-after")
    if not value:
        return None
    seconds = _seconds(value, 1.0)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


class CircuitBreaker:
    """Closed → (failure_threshold consecutive failures) → open → (cooldown_s) → half_open.

    While open, `allow()` is False. Once the cooldown has passed, the breaker turns
    half_open and lets exactly ONE trial through; its `record_success()` closes the
    breaker, its `record_failure()` opens it for another cooldown. Should the trial never
    report back (cancelled), another trial is allowed after a further cooldown.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 30.0, clock: Clock = time.monotonic) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state = self.CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._trial_at: float | None = None

    @property
    def state(self) -> str:
        """ "closed", "open" or "half_open" (an open breaker past its cooldown reads half_open)."""
        if self._state == self.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            return self.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """May a request go to this endpoint now? (A True in half_open is the one trial.)"""
        now = self._clock()
        if self._state == self.CLOSED:
            return True
        if self._state == self.OPEN:
            if now - self._opened_at < self.cooldown_s:
                return False
            self._state = self.HALF_OPEN
            self._trial_at = now
            return True
        # half_open: one trial at a time, unless the last one went silent for a cooldown.
        if self._trial_at is None or now - self._trial_at >= self.cooldown_s:
            self._trial_at = now
            return True
        return False

    def record_success(self) -> None:
        self._state = self.CLOSED
        self.failures = 0
        self._trial_at = None

    def record_failure(self) -> None:
        self.failures += 1
        if self._state == self.HALF_OPEN or (self._state == self.CLOSED and self.failures >= self.failure_threshold):
            self._state = self.OPEN
            self._opened_at = self._clock()
            self._trial_at = None
