"""stream/worker.py: the start-up check of the topics' size limits against the worker's settings."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream.config import Settings
from stream.demo.broker import LocalBroker
from stream.worker import RECORD_OVERHEAD, message_size_warnings, warn_message_sizes


def test_a_setting_over_its_topics_limit_is_named_with_the_value_that_fits() -> None:
    s = Settings(max_repartition_message_bytes=900_000, max_judge_message_bytes=2_000_000)
    limits = {s.repartition_topic: 1_048_588, s.judge_topic: 1_048_588, s.input_topic: 1_048_588,
              s.dlq_topic: 1_048_588}  # Apache Kafka's default everywhere  # fmt: skip
    (judge, dlq) = message_size_warnings(s, limits)
    assert "max_judge_message_bytes is 2000000" in judge and f"to {1_048_588 - RECORD_OVERHEAD} or less" in judge
    assert s.dlq_topic in dlq and "without the original message" in dlq
    limits[s.dlq_topic] = 17_000_000
    assert message_size_warnings(s, limits) == [judge]
    assert message_size_warnings(Settings(), limits) == []  # the defaults fit Kafka's default limit
    assert message_size_warnings(s, {}) == []  # a broker that states no limit: nothing to say
    at = {s.repartition_topic: 900_000 + RECORD_OVERHEAD}
    assert message_size_warnings(s, at) == []  # exactly fits
    at[s.repartition_topic] -= 1
    assert "max_repartition_message_bytes" in message_size_warnings(s, at)[0]


async def _create(bootstrap: str, limits: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 1, 1, topic_configs={"max.message.bytes": str(n)}) for t, n in limits.items()])
    finally:
        await admin.close()


def test_the_worker_reads_the_limits_from_the_broker_and_logs_each_mismatch(
    broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    p = f"sizes{time.monotonic_ns()}"
    s = Settings(kafka_bootstrap=broker.bootstrap, input_topic=p + ".in", repartition_topic=p + ".rep",
                 judge_topic=p + ".judge", dlq_topic=p + ".dlq")  # fmt: skip
    asyncio.run(_create(broker.bootstrap, {s.repartition_topic: 500_000, s.judge_topic: 2_000_000}))
    with caplog.at_level(logging.WARNING, logger="stream.worker"):
        warnings = asyncio.run(warn_message_sizes(s))
    assert len(warnings) == 1 and s.repartition_topic in warnings[0] and "500000" in warnings[0]
    assert warnings[0] in caplog.text


def test_a_broker_that_cannot_be_asked_leaves_the_check_out(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings(kafka_bootstrap="127.0.0.1:1")  # nothing listens there
    with caplog.at_level(logging.INFO, logger="stream.worker"):
        assert asyncio.run(warn_message_sizes(s)) == []
    assert "topic size limits not checked" in caplog.text
