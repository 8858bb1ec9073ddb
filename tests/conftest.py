"""Shared fixtures: a real Kafka-protocol broker (tansu) for the whole session, unique topics per test."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from stream.demo.broker import LocalBroker
from stream.topics import ensure_topics

if TYPE_CHECKING:
    from stream.store import ClickHouseStore


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """One tansu broker (in-memory storage) on a free port for the test session."""
    with LocalBroker(tmp_path_factory.mktemp("tansu")) as b:
        yield b


@pytest.fixture
def new_topic(broker: LocalBroker, request: pytest.FixtureRequest) -> Callable[..., str]:
    """``new_topic(partitions=4)`` creates a topic named after the test, unique within the session."""

    def make(partitions: int = 4) -> str:
        base = re.sub(r"[^a-zA-Z0-9_.-]", "_", request.node.name)[:80]
        name = f"{base}.{uuid.uuid4().hex[:8]}"
        asyncio.run(ensure_topics(broker.bootstrap, {name: partitions}))
        return name

    return make


async def _consume(bootstrap: str, topic: str, expect: int | None, idle: float,
                   timeout: float) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_seen = loop.time()
    try:
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            for part in batch.values():
                records.extend(part)
            if batch:
                last_seen = loop.time()
            if expect is not None and len(records) >= expect:
                break
            if expect is None and loop.time() - last_seen > idle:
                break
    finally:
        await consumer.stop()
    return records


@pytest.fixture
def consume(broker: LocalBroker) -> Callable[..., list[ConsumerRecord[bytes, bytes]]]:
    """``consume(topic, expect=None, idle=1.0, timeout=20.0)``: read a topic from the start.

    Stops after ``expect`` records, or (without ``expect``) after ``idle`` seconds without new records.
    """

    def read(topic: str, expect: int | None = None, idle: float = 1.0,
             timeout: float = 20.0) -> list[ConsumerRecord[bytes, bytes]]:
        return asyncio.run(_consume(broker.bootstrap, topic, expect, idle, timeout))

    return read


# ---- ClickHouse: one embedded chDB engine per process, so one data dir for the session and a
# fresh database per test -------------------------------------------------------------------
@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def store(chdb_dsn: str) -> Iterator[ClickHouseStore]:
    from stream.store import ClickHouseStore

    s = ClickHouseStore(chdb_dsn, database=f"t_{uuid.uuid4().hex[:12]}")
    s.migrate()
    yield s
    # SYNC: a plain DROP leaves the tables to the engine until database_atomic_delay_before_drop_table_sec,
    # and each one left behind makes the next migration slower (0.5 s -> 2.6 s after 60 tests)
    s.command(f"DROP DATABASE IF EXISTS {s.database} SYNC")
    s.close()


# ---- figures the fault scenarios record (tests/reliability/conftest.py: ``figures``) -----------
# They travel with each test's report, so a run split over xdist workers prints them here, in the
# process that reports.
_FIGURES: list[dict[str, Any]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _FIGURES.extend(value for name, value in report.user_properties if name == "figures")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        from tests.reliability.report import format_table

        terminalreporter.section("reliability figures")
        terminalreporter.write_line(format_table(_FIGURES))
