"""Per-provider circuit breaker: closed → open after N consecutive failures → half-open after a
cool-down (one probe request at a time) → closed on success, or open again on failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, failure_threshold: int, cooldown_s: float, clock: Callable[[], float]):
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """May a request go out now? In half-open state only one probe is let through."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe_in_flight = False

    def record_failure(self) -> None:
        self._failures += 1
        probe_failed = self._probe_in_flight
        self._probe_in_flight = False
        if probe_failed or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()

    def release(self) -> None:
        """The request let through ended with an outcome that says nothing about provider health
        (e.g. a 401 or our own bad request): free the probe slot without changing state."""
        self._probe_in_flight = False

    def retry_in(self) -> float:
        """Seconds until the breaker half-opens (0 when not open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))
