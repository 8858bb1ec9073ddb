"""Fixtures for provider tests: a fake clock and the fake provider server bound to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.judges.fake_provider import FakeClock, FakeProviderServer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[FakeProviderServer]:
    with FakeProviderServer(clock) as s:
        yield s
