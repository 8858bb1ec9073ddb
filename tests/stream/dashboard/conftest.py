"""Dashboard fixtures: a seeded store (real embedded ClickHouse) and its Dashboard handler."""

from __future__ import annotations

import time

import pytest

from stream.dashboard import Dashboard
from stream.store import ClickHouseStore
from tests.stream.dashboard.seed import Seeded, seed


@pytest.fixture
def now() -> float:
    return time.time()


@pytest.fixture
def seeded(store: ClickHouseStore, now: float) -> Seeded:
    return seed(store, now)


@pytest.fixture
def dash(store: ClickHouseStore, now: float) -> Dashboard:
    return Dashboard(store, clock=lambda: now)
