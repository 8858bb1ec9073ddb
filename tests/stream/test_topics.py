"""stream/topics.py against the real tansu broker."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream.demo.broker import LocalBroker
from stream.topics import ensure_topics, topic_message_limits, topic_partitions


async def _partition_count(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (desc,) = await admin.describe_topics([topic])
        return len(desc["partitions"])
    finally:
        await admin.close()


def test_ensure_topics_creates_partitions_and_is_idempotent(broker: LocalBroker) -> None:
    name = f"ensure.{time.monotonic_ns()}"
    asyncio.run(ensure_topics(broker.bootstrap, {name: 4, name + ".two": 2}))
    asyncio.run(ensure_topics(broker.bootstrap, {name: 4}))  # already exists: no error
    assert asyncio.run(_partition_count(broker.bootstrap, name)) == 4
    assert asyncio.run(_partition_count(broker.bootstrap, name + ".two")) == 2


def test_ensure_topics_refuses_zero_partitions(broker: LocalBroker) -> None:
    with pytest.raises(ValueError, match="partition"):
        asyncio.run(ensure_topics(broker.bootstrap, {"never.created": 0}))


def test_topic_partitions_counts_them(broker: LocalBroker) -> None:
    # (a topic that does not exist is not tested: tansu, like Kafka with auto.create.topics.enable,
    # creates it on the metadata request behind describe_topics)
    name = f"count.{time.monotonic_ns()}"
    asyncio.run(ensure_topics(broker.bootstrap, {name: 3}))
    assert asyncio.run(topic_partitions(broker.bootstrap, name)) == 3


async def _create_with_limit(bootstrap: str, topic: str, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": str(limit)})])
    finally:
        await admin.close()


def test_topic_message_limits_reads_what_the_broker_states(broker: LocalBroker) -> None:
    name = f"limits.{time.monotonic_ns()}"
    asyncio.run(_create_with_limit(broker.bootstrap, name, 123_456))
    asyncio.run(ensure_topics(broker.bootstrap, {name + ".plain": 1}))
    limits = asyncio.run(topic_message_limits(broker.bootstrap, [name, name + ".plain"]))
    assert limits[name] == 123_456
    assert name + ".plain" not in limits  # tansu states no limit for a topic created without one
