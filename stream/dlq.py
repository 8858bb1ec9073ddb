"""Dead-letter records: the original message, unchanged, plus why and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

REASON = "tracejudge.dlq.reason"
DETAIL = "tracejudge.dlq.detail"
SOURCE_TOPIC = "tracejudge.dlq.source.topic"
SOURCE_PARTITION = "tracejudge.dlq.source.partition"
SOURCE_OFFSET = "tracejudge.dlq.source.offset"
MAX_DETAIL = 2000


@dataclass(frozen=True, slots=True)
class InMessage:
    """A consumed Kafka message, independent of the client library that read it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def dead_letter(msg: InMessage, topic: str, reason: str, detail: str) -> OutRecord:
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL] + "…"
    headers = list(msg.headers) + [
        (REASON, reason.encode()),
        (DETAIL, detail.encode("utf-8", "replace")),
        (SOURCE_TOPIC, msg.topic.encode()),
        (SOURCE_PARTITION, str(msg.partition).encode()),
        (SOURCE_OFFSET, str(msg.offset).encode()),
    ]
    return OutRecord(topic, msg.key, msg.value, headers)
