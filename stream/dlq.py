"""Dead-letter records: the original message, unchanged, plus why and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

DLQ_HEADER_PREFIX = "tracejudge.dlq."
REASON = "tracejudge.dlq.reason"
DETAIL = "tracejudge.dlq.detail"
SOURCE_TOPIC = "tracejudge.dlq.source.topic"
SOURCE_PARTITION = "tracejudge.dlq.source.partition"
SOURCE_OFFSET = "tracejudge.dlq.source.offset"
SOURCE_LAST_OFFSET = "tracejudge.dlq.source.last_offset"  # only on an ``unrecovered_offsets`` record
VALUE_OMITTED = "tracejudge.dlq.value_omitted"  # bytes left out of a dead letter too large (stream/delivery.py)
UNRECOVERED_OFFSETS = "unrecovered_offsets"
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
    headers = list(msg.headers) + _why(reason, detail, msg.topic, msg.partition, msg.offset)
    return OutRecord(topic, msg.key, msg.value, headers)


def unrecovered_offsets(topic: str, partition: int, first: int, last: int, dlq_topic: str, detail: str) -> OutRecord:
    """The dead letter of offsets the consumer skipped and could not read again
    (``gap_unrecovered: dead_letter``): no key and an empty value (Kafka needs one of the two), since
    the messages were never read; the headers say which offsets of which partition to read again once
    the broker serves them."""
    headers = _why(UNRECOVERED_OFFSETS, detail, topic, partition, first) + [(SOURCE_LAST_OFFSET, str(last).encode())]
    return OutRecord(dlq_topic, None, b"", headers)


def _why(reason: str, detail: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL] + "…"
    return [
        (REASON, reason.encode()),
        (DETAIL, detail.encode("utf-8", "replace")),
        (SOURCE_TOPIC, topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
    ]
