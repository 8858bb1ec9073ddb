"""Retry policy, alone and through both providers against the fake server."""

from __future__ import annotations

import asyncio
import random
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from judges.providers.retry import RetryPolicy, classify_status, parse_retry_after, sleep_at_least
from tests.judges.fake_provider import Fail, FakeClock, FakeProviderServer, Hang, Reply
from tests.judges.support import call_once, expect_error, expect_response

PROTOCOLS = ["openai", "anthropic"]
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "2"}, 2.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"Retry-After": "-3"}, 0.0),
    ({"Retry-After": format_datetime(NOW + timedelta(seconds=7), usegmt=True)}, 7.0),
    ({"Retry-After": format_datetime(NOW - timedelta(seconds=7), usegmt=True)}, 0.0),
    ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
    ({"Retry-After": "soon"}, None),
    ({}, None),
])
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers), now=NOW) == expected


@pytest.mark.parametrize(("status", "kind"), [
    (401, "config"), (403, "config"), (404, "config"), (400, "invalid_request"),
    (408, "timeout"), (409, "invalid_request"), (429, "rate_limited"), (500, "server"),
    (502, "server"), (503, "server"), (504, "server"), (529, "server"),
])
def test_classify_status(status: int, kind: str) -> None:
    assert classify_status(status) == kind


class EarlyWaker(FakeClock):
    """A sleep that ends early, as a uvloop timer does when its loop iteration started before the
    timer was set: the first sleep advances the clock by 1 ms less than asked."""

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds - (0.001 if len(self.sleeps) == 1 else 0.0)


def test_a_sleep_that_ends_early_is_made_up_for() -> None:
    clock = EarlyWaker()
    start = clock()
    asyncio.run(sleep_at_least(1.0, clock.sleep, clock))
    assert clock() - start >= 1.0
    assert clock.sleeps[0] == 1.0 and len(clock.sleeps) == 2  # 1.0, then the 1 ms it ended early
    exact = FakeClock()
    asyncio.run(sleep_at_least(1.0, exact.sleep, exact))
    assert exact.sleeps == [1.0]  # a sleep that keeps time is not repeated
    frozen: list[float] = []

    async def no_time_passes(seconds: float) -> None:
        frozen.append(seconds)

    asyncio.run(sleep_at_least(1.0, no_time_passes, lambda: 5.0))
    assert len(frozen) == 11  # bounded: a clock that never moves does not hang the caller


def test_backoff_is_full_jitter_with_exponential_cap() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0, rng=random.Random(1))
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        delays = [policy.backoff(attempt) for _ in range(300)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > 0.8 * cap and min(delays) < 0.2 * cap  # spread over the whole range


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(server: FakeProviderServer, clock: FakeClock, protocol: str,
                                 status: int) -> None:
    server.script(Fail(status, retry_after="2"), Reply())
    resp = expect_response(call_once(server, clock, protocol))  # type: ignore[arg-type]
    assert resp.attempts == 2
    assert len(clock.sleeps) == 1 and clock.sleeps[0] >= 2.0
    first, second = server.requests
    assert second.arrived_at - first.arrived_at >= 2.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retry_after_http_date_is_honoured(server: FakeProviderServer, clock: FakeClock,
                                           protocol: str) -> None:
    when = datetime.now(UTC) + timedelta(seconds=10)
    server.script(Fail(429, retry_after=format_datetime(when, usegmt=True)), Reply())
    expect_response(call_once(server, clock, protocol))  # type: ignore[arg-type]
    assert clock.sleeps[0] >= 8.0  # whole-second resolution of HTTP-dates, minus test slack


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("status", [500, 502, 503, 504, 529])
def test_server_error_then_success(server: FakeProviderServer, clock: FakeClock, protocol: str,
                                   status: int) -> None:
    server.script(Fail(status), Reply(text="ok"))
    resp = expect_response(call_once(server, clock, protocol))  # type: ignore[arg-type]
    assert (resp.text, resp.attempts) == ("ok", 2)
    assert len(server.requests) == 2
    assert len(clock.sleeps) == 1 and 0.0 <= clock.sleeps[0] <= 0.5  # full jitter, first cap


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_attempts_are_bounded(server: FakeProviderServer, clock: FakeClock, protocol: str) -> None:
    server.default = Fail(500)
    err = expect_error(call_once(server, clock, protocol, max_attempts=4))  # type: ignore[arg-type]
    assert (err.kind, err.status, err.attempts) == ("server", 500, 4)
    assert len(server.requests) == 4 and len(clock.sleeps) == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_hang_times_out_after_bounded_attempts(server: FakeProviderServer, clock: FakeClock,
                                               protocol: str) -> None:
    server.default = Hang(30.0)
    err = expect_error(call_once(server, clock, protocol, timeout_s=0.2,  # type: ignore[arg-type]
                                 max_attempts=2))
    assert (err.kind, err.attempts) == ("timeout", 2)
    assert len(server.requests) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_hang_then_success(server: FakeProviderServer, clock: FakeClock, protocol: str) -> None:
    server.script(Hang(30.0), Reply(text="late but fine"))
    resp = expect_response(call_once(server, clock, protocol, timeout_s=0.2))  # type: ignore[arg-type]
    assert (resp.text, resp.attempts) == ("late but fine", 2)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_deadline_stops_retries(server: FakeProviderServer, clock: FakeClock, protocol: str) -> None:
    server.default = Fail(503, retry_after="3")
    start = clock.now
    err = expect_error(call_once(server, clock, protocol, deadline_s=5.0,  # type: ignore[arg-type]
                                 max_attempts=10))
    assert (err.kind, err.attempts) == ("deadline", 2)
    assert len(server.requests) == 2  # at t=0 and t>=3; a third (t>=6) would pass the deadline
    assert clock.now - start < 5.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retry_after_past_deadline_is_not_shortened(server: FakeProviderServer, clock: FakeClock,
                                                    protocol: str) -> None:
    server.default = Fail(429, retry_after="120")
    err = expect_error(call_once(server, clock, protocol, deadline_s=60.0))  # type: ignore[arg-type]
    assert (err.kind, err.status, err.attempts) == ("deadline", 429, 1)
    assert len(server.requests) == 1 and clock.sleeps == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_network_error_is_retried(server: FakeProviderServer, clock: FakeClock,
                                  protocol: str) -> None:
    url = f"http://127.0.0.1:{_closed_port()}" + ("/v1" if protocol == "openai" else "")
    err = expect_error(call_once(server, clock, protocol, base_url=url,  # type: ignore[arg-type]
                                 max_attempts=3))
    assert (err.kind, err.attempts) == ("network", 3)
    assert len(clock.sleeps) == 2
