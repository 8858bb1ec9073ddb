"""Fixtures for end-to-end tests: real ``tracejudge worker`` processes on the session's tansu broker."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from stream.demo.broker import LocalBroker
from stream.demo.run import WorkerProcess
from stream.demo.store_server_process import StoreServerProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deployment:
    """Topics + data dir for one test; start/stop worker processes against them."""

    def __init__(self, broker: LocalBroker, input_topic: str, data_dir: Path, **settings: Any) -> None:
        self.broker = broker
        self.input_topic = input_topic
        self.dlq_topic = input_topic + ".dlq"
        self.data_dir = data_dir
        self.settings = {
            "TRACEJUDGE_KAFKA_BOOTSTRAP": broker.bootstrap,
            "TRACEJUDGE_DATA_DIR": str(data_dir),
            "TRACEJUDGE_INPUT_TOPIC": input_topic,
            "TRACEJUDGE_DLQ_TOPIC": self.dlq_topic,
            "TRACEJUDGE_REPARTITION_TOPIC": input_topic + ".by_trace",
            # every topic a worker writes or reads is unique to the deployment (a shared name would
            # feed one test's messages into another's worker)
            "TRACEJUDGE_JUDGE_TOPIC": input_topic + ".to_judge",
            "TRACEJUDGE_JUDGE_DLQ_TOPIC": input_topic + ".to_judge.dlq",
            "TRACEJUDGE_EVENTS_TOPIC": input_topic + ".events",
            "TRACEJUDGE_EVENTS_DLQ_TOPIC": input_topic + ".events.dlq",
            "TRACEJUDGE_CONSUMER_GROUP": "tj-" + input_topic,
            "TRACEJUDGE_DECISION_WAIT": "1.0",
            "TRACEJUDGE_TICK_INTERVAL": "0.2",
            "TRACEJUDGE_BATCH_WITHIN": "0.05",
            "TRACEJUDGE_KAFKA_SESSION_TIMEOUT": "6",
            "TRACEJUDGE_WEB_HOST": "127.0.0.1",
        }
        self.settings.update({f"TRACEJUDGE_{k.upper()}": str(v) for k, v in settings.items()})
        self.workers: list[WorkerProcess] = []

    def start_worker(self) -> WorkerProcess:
        env = dict(self.settings, TRACEJUDGE_WEB_PORT=str(free_port()))
        w = WorkerProcess(env, self.data_dir / f"worker-{len(self.workers)}.log")
        self.workers.append(w)
        w.wait_ready(timeout=120)
        return w

    def produce(self, messages: list[tuple[bytes | None, bytes, int | None]]) -> None:
        """(key, value, partition or None) tuples, delivered in order and acknowledged."""

        async def run() -> None:
            p = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap, max_request_size=64 * 1024 * 1024)
            await p.start()
            try:
                for key, value, partition in messages:
                    await p.send_and_wait(self.input_topic, value, key=key, partition=partition)
            finally:
                await p.stop()

        asyncio.run(run())

    def stop_all(self) -> None:
        for w in self.workers:
            w.stop(timeout=30)


def wait_for(fn: Callable[[], Any], timeout: float = 60.0, interval: float = 0.3) -> Any:
    """Poll ``fn`` until it returns a truthy value; return it (or the last value on timeout)."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = fn()
    return value


@pytest.fixture
def deployment(broker: LocalBroker, new_topic: Callable[..., str], tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    made: list[Deployment] = []

    def make(partitions: int = 4, **settings: Any) -> Deployment:
        d = Deployment(broker, new_topic(partitions), tmp_path / f"data{len(made)}", **settings)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop_all()


@pytest.fixture
def store_dsn(tmp_path: Path) -> Iterator[str]:
    """A ``tracejudge store-server`` (a test can change the schema under a running worker through
    it). Request it before ``deployment``, so that it stops after the workers."""
    server = StoreServerProcess(tmp_path / "store")
    yield server.dsn
    server.stop()


@pytest.fixture
def closes_services() -> Iterator[None]:
    """For the judging tests (``pytestmark = pytest.mark.usefixtures("closes_services")``): closes
    after each test the providers' pools of the services it made, on the loop they ran on."""
    from tests.stream.judging_support import OPEN, close_services, run

    since = len(OPEN)
    yield
    run(close_services(since))


async def produce_records(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]],
                          **producer: Any) -> None:  # fmt: skip
    """Send (key, value) pairs to partition 0 of ``topic`` in order, each acknowledged; ``producer``:
    more AIOKafkaProducer options (compression, authentication)."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer)
    await p.start()
    try:
        for key, value in messages:
            await p.send_and_wait(topic, value, key=key, partition=0)
    finally:
        await p.stop()
