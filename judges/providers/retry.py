"""Retry policy: bounded attempts, an overall deadline, full-jitter backoff and ``Retry-After``.

``run_with_retry`` drives one logical call. Each attempt either returns a value or raises
``AttemptError``; the policy decides whether to sleep and try again, and what the caller finally
sees (a ``ProviderError`` carrying the number of attempts made). ``sleep`` and ``clock`` are
injected so tests assert the requested delays without waiting.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from judges.providers.base import ProviderError

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

#: Kinds worth another attempt (the provider may recover); everything else is final.
RETRYABLE_KINDS = frozenset({"rate_limited", "server", "timeout", "network"})
#: Statuses for which a ``Retry-After`` header is honoured.
RETRY_AFTER_STATUSES = frozenset({429, 503, 529})


class AttemptError(ProviderError):
    """One failed attempt; ``retry_after`` is the server's requested wait in seconds, if any."""

    def __init__(self, kind: str, message: str, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(kind, message, status)
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


def classify_status(status: int) -> str:
    """Error kind of a non-2xx HTTP status (529 is Anthropic's "overloaded", treated like 503)."""
    if status in (401, 403, 404):
        return "config"
    if status == 429:
        return "rate_limited"
    if status == 408:
        return "timeout"
    if 400 <= status < 500:
        return "invalid_request"
    return "server"


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``Retry-After`` (delta-seconds or HTTP-date).

    ``headers`` should be case-insensitive (``httpx.Headers``). Returns ``None`` when absent or
    unparseable; a date in the past gives 0.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    deadline_s: float = 60.0
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**(attempt-1))] after attempt ``attempt``."""
        cap = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return self.rng.uniform(0.0, cap)

    def delay_after(self, attempt: int, error: AttemptError) -> float:
        """Wait before the next attempt: the backoff, but never less than ``Retry-After``."""
        delay = self.backoff(attempt)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay


async def run_with_retry(attempt_fn: Callable[[float], Awaitable[T]], policy: RetryPolicy, *,
                         sleep: Sleep, clock: Clock) -> tuple[T, int]:
    """Run ``attempt_fn(remaining_s)`` until it succeeds; return ``(value, attempts)``.

    Raises ``ProviderError`` with ``attempts`` set: the last attempt's kind when it is final or
    attempts are exhausted, ``"deadline"`` when the deadline leaves no room for the next attempt
    (including when ``Retry-After`` points past it: we never retry earlier than asked).
    """
    start = clock()
    attempt = 0
    while True:
        remaining = policy.deadline_s - (clock() - start)
        if remaining <= 0:
            raise ProviderError("deadline", f"deadline of {policy.deadline_s}s exceeded",
                                attempts=attempt)
        attempt += 1
        try:
            return await attempt_fn(remaining), attempt
        except AttemptError as err:
            if not err.retryable or attempt >= policy.max_attempts:
                raise ProviderError(err.kind, err.message, err.status, attempts=attempt) from err
            delay = policy.delay_after(attempt, err)
            if clock() + delay - start >= policy.deadline_s:
                raise ProviderError(
                    "deadline",
                    f"next attempt in {delay:.2f}s would pass the {policy.deadline_s}s deadline; "
                    f"last error {err.kind}: {err.message}",
                    err.status, attempts=attempt) from err
            await sleep_at_least(delay, sleep, clock)


async def sleep_at_least(delay: float, sleep: Sleep, clock: Clock) -> None:
    """``sleep(delay)``, then sleep again for whatever ``clock`` says is left. uvloop's timers count
    from the time cached at the start of the loop's iteration, so a sleep can end early by as long
    as that iteration has run: a retry would then come before the ``Retry-After`` it honours."""
    end = clock() + delay
    await sleep(delay)
    for _ in range(10):  # a real clock moves on; a test's frozen one must not spin forever
        left = end - clock()
        if left <= 0:
            return
        await sleep(left)
