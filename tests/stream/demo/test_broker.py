"""LocalBroker against the real tansu binary."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream.demo.broker import BrokerError, LocalBroker


def _listening(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def test_session_broker_is_up(broker: LocalBroker) -> None:
    assert broker.running
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.startup_seconds is not None and broker.startup_seconds < 10
    assert _listening(broker.bootstrap)
    assert "tansu" in broker.log_tail()


def test_produce_and_consume_with_group_and_commit(broker: LocalBroker, new_topic) -> None:
    topic = new_topic(4)

    async def roundtrip() -> tuple[dict[int, int], int]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            for i in range(40):
                await producer.send(topic, key=f"k{i % 8}".encode(), value=f"v{i}".encode())
            await producer.flush()
        finally:
            await producer.stop()
        # tansu holds the first JoinGroup for about session_timeout / 2: keep it short
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=f"g-{topic}",
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    session_timeout_ms=2000, heartbeat_interval_ms=500)
        await consumer.start()
        per_partition: dict[int, int] = {}
        try:
            seen = 0
            while seen < 40:
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 20)
                for tp, records in batch.items():
                    per_partition[tp.partition] = per_partition.get(tp.partition, 0) + len(records)
                    seen += len(records)
            await consumer.commit()
            committed = sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(4)])
        finally:
            await consumer.stop()
        return per_partition, committed

    per_partition, committed = asyncio.run(roundtrip())
    assert sum(per_partition.values()) == 40
    assert len(per_partition) > 1  # keys spread over several of the 4 partitions
    assert committed == 40


def test_stop_is_idempotent_and_frees_the_port(tmp_path: Path) -> None:
    with LocalBroker(tmp_path) as b:
        bootstrap = b.bootstrap
        assert _listening(bootstrap)
    assert not b.running
    assert not _listening(bootstrap)
    b.stop()  # second stop is a no-op
    assert (tmp_path / f"tansu-{b.port}.log").exists()


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-tansu"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    binary = _script(tmp_path, 'echo "boom: storage engine not compiled in" >&2\nexit 3')
    broker = LocalBroker(tmp_path, binary=binary, start_timeout=5)
    with pytest.raises(BrokerError, match="exited with code 3") as err:
        broker.start()
    assert "boom: storage engine not compiled in" in str(err.value)
    assert not broker.running


def test_start_times_out_and_kills_a_silent_process(tmp_path: Path) -> None:
    binary = _script(tmp_path, "exec sleep 60")
    broker = LocalBroker(tmp_path, binary=binary, start_timeout=0.5)
    began = time.monotonic()
    with pytest.raises(BrokerError, match="did not listen"):
        broker.start()
    # far below the 60 s the process would live; stop() may need its 5 s SIGINT -> SIGKILL grace
    # (once, on a loaded CI machine, the SIGINT did not end the script: 5.5 s)
    assert time.monotonic() - began < 15
    assert not broker.running
