"""Kafka topics the worker and the CLI create or inspect, through the admin API (Apache Kafka in
production, tansu in tests and the demo). ``client``: the connection's authentication and TLS
(:func:`stream.kafka_auth.client_options`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code


async def ensure_topics(bootstrap: str, topics: dict[str, int], *, replication_factor: int = 1,
                        timeout: float = 10.0, client: Mapping[str, Any] | None = None) -> None:
    """Create each topic with its partition count; topics that already exist are left as they are.

    Raises :class:`aiokafka.errors.KafkaError` (the broker's error for that topic) on any other failure.
    Partition counts below 1 are refused here: tansu would create a topic with no partitions.
    """
    bad = {name: n for name, n in topics.items() if n < 1}
    if bad:
        raise ValueError(f"partition counts must be >= 1: {bad}")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000), **(client or {}))
    await admin.start()
    try:
        new = [NewTopic(name, num_partitions=n, replication_factor=replication_factor)
               for name, n in topics.items()]
        response = await admin.create_topics(new, timeout_ms=int(timeout * 1000))
        for topic, code, *message in response.topic_errors:  # the call itself does not raise per topic
            if code in (0, TopicAlreadyExistsError.errno):
                continue
            error = for_code(code)
            raise error(f"creating topic {topic!r}: {message[0] if message else error.message}")
    finally:
        await admin.close()


async def topic_partitions(bootstrap: str, topic: str, timeout: float = 10.0,
                           client: Mapping[str, Any] | None = None) -> int:
    """How many partitions ``topic`` has (it must exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000), **(client or {}))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    parts = [p for t in described if t.get("topic") == topic for p in t.get("partitions") or []]
    if not parts:
        raise RuntimeError(f"topic {topic!r} has no partitions (does it exist?)")
    return len(parts)


async def topic_message_limits(bootstrap: str, topics: list[str], timeout: float = 10.0,
                               client: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Each topic's ``max.message.bytes`` (the largest record batch the broker takes for it), for
    the topics whose broker states it; a broker that does not (or a topic it errs on) is left out."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000), **(client or {}))
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    finally:
        await admin.close()
    limits: dict[str, int] = {}
    for response in responses:
        for code, _message, _type, name, entries, *_ in response.resources:
            for key, value, *_ in entries if code == 0 else ():
                if key == "max.message.bytes" and value is not None and value.isdigit():
                    limits[name] = int(value)
    return limits
