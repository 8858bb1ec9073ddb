"""Circuit breaker, alone (fake clock) and in front of a provider (no request while open)."""

from __future__ import annotations

import asyncio

import pytest

from judges.providers import ChatResponse, ProviderError
from judges.providers.breaker import CircuitBreaker
from tests.judges.fake_provider import Fail, FakeClock, FakeProviderServer, Reply
from tests.judges.support import make_provider, outcome

PROTOCOLS = ["openai", "anthropic"]


def test_opens_after_n_consecutive_failures_and_half_opens_after_cooldown() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=3, cooldown_s=10.0, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert b.state == "closed"
    assert b.allow()
    b.record_failure()
    assert b.state == "open" and not b.allow()
    clock.advance(9.9)
    assert b.state == "open" and not b.allow()
    assert b.retry_in() == pytest.approx(0.1)
    clock.advance(0.1)
    assert b.state == "half_open"
    assert b.allow()          # the probe
    assert not b.allow()      # only one probe at a time
    b.record_success()
    assert b.state == "closed" and b.allow() and b.consecutive_failures == 0


def test_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=1, cooldown_s=5.0, clock=clock)
    b.record_failure()
    clock.advance(5.0)
    assert b.allow()
    b.record_failure()
    assert b.state == "open" and not b.allow()
    clock.advance(4.9)
    assert not b.allow()
    clock.advance(0.1)
    assert b.allow()


def test_success_resets_the_consecutive_count() -> None:
    b = CircuitBreaker(failure_threshold=2, cooldown_s=5.0, clock=FakeClock())
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state == "closed"
    b.record_failure()
    assert b.state == "open"


def test_released_probe_frees_the_slot() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=1, cooldown_s=1.0, clock=clock)
    b.record_failure()
    clock.advance(1.0)
    assert b.allow() and not b.allow()
    b.release()
    assert b.state == "half_open" and b.allow()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_open_breaker_blocks_requests_then_half_opens(server: FakeProviderServer, clock: FakeClock,
                                                      protocol: str) -> None:
    server.script(Fail(500), Fail(503), Reply(text="recovered"))

    async def run() -> list[ChatResponse | ProviderError]:
        p = make_provider(server, clock, protocol, max_attempts=1, breaker_failures=2,  # type: ignore[arg-type]
                          breaker_cooldown_s=30.0)
        try:
            results = [await outcome(p), await outcome(p), await outcome(p)]
            assert len(server.requests) == 2  # the third call never reached the server
            clock.advance(30.0)
            results.append(await outcome(p))
            assert p.breaker.state == "closed"
            return results
        finally:
            await p.aclose()

    first, second, blocked, probe = asyncio.run(run())
    assert isinstance(first, ProviderError) and first.kind == "server"
    assert isinstance(second, ProviderError) and second.kind == "server"
    assert isinstance(blocked, ProviderError)
    assert (blocked.kind, blocked.attempts) == ("circuit_open", 0)
    assert isinstance(probe, ChatResponse) and probe.text == "recovered"
    assert len(server.requests) == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_breaker_opening_mid_retries_stops_them(server: FakeProviderServer, clock: FakeClock,
                                                protocol: str) -> None:
    server.default = Fail(500)

    async def run() -> ChatResponse | ProviderError:
        p = make_provider(server, clock, protocol, max_attempts=5, breaker_failures=2)  # type: ignore[arg-type]
        try:
            return await outcome(p)
        finally:
            await p.aclose()

    err = asyncio.run(run())
    assert isinstance(err, ProviderError)
    assert (err.kind, err.attempts) == ("circuit_open", 2)
    assert len(server.requests) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_config_errors_do_not_open_the_breaker(server: FakeProviderServer, clock: FakeClock,
                                               protocol: str) -> None:
    server.default = Fail(401)

    async def run() -> list[ChatResponse | ProviderError]:
        p = make_provider(server, clock, protocol, breaker_failures=1)  # type: ignore[arg-type]
        try:
            return [await outcome(p) for _ in range(3)]
        finally:
            await p.aclose()

    results = asyncio.run(run())
    assert [r.kind for r in results if isinstance(r, ProviderError)] == ["config"] * 3
    assert len(server.requests) == 3
