"""Product events as ``action_events`` holds them: the row a stored event is, and reading rows back.

:class:`StoredEvent` is an event with where it came from and when it was stored; its row links it
(late) to a decided trace or not. :class:`EventsCopy` takes events into a ``Null`` copy of the
table (stream/refused_rows.py). :func:`newest` keeps, of rows read without ``FINAL``, each event's
newest version. The joins themselves are :mod:`stream.events`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stream.dlq import InMessage
from stream.signals.actions import ActionEvent
from stream.table_copy import NullCopy

EVENT_COLUMNS = (
    "event_id", "trace_id", "conversation_id", "type", "ts", "attributes", "linked_trace_id",
    "is_late", "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at",
)  # fmt: skip
STORED_COLUMNS = (
    "event_id, type, toUnixTimestamp64Milli(ts), trace_id, conversation_id, attributes, is_late, linked_trace_id, "
    "toUnixTimestamp64Milli(ingested_at), kafka_topic, kafka_partition, kafka_offset"
)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as ``action_events`` holds it: where it came from, and when it was stored."""

    event: ActionEvent
    topic: str
    partition: int
    offset: int
    ingested_ms: int
    linked: str = ""  # the decided trace it is linked to as late (the latest started of several), or ""

    @classmethod
    def of(cls, m: InMessage, e: ActionEvent, now_ms: int) -> StoredEvent:
        return cls(e, m.topic, m.partition, m.offset, now_ms)

    def row(self, linked: str = "") -> tuple[Any, ...]:
        """Its ``action_events`` row, linked (late) to ``linked``; ``ingested_at`` is the table's
        version, so a linked row stored after the unlinked one replaces it."""
        e = self.event
        return (
            e.event_id, e.trace_id, e.conversation_id, e.type, e.ts_ms, e.attributes_json, linked,
            1 if linked else 0, self.topic, self.partition, self.offset, self.ingested_ms,
        )  # fmt: skip


class EventsCopy:
    """A :class:`NullCopy` of ``action_events`` whose inserts take (message, event) pairs."""

    def __init__(self, inner: NullCopy, now_ms: int) -> None:
        self.inner, self.now_ms = inner, now_ms
        self.name = inner.name

    async def __aenter__(self) -> EventsCopy:
        await self.inner.__aenter__()
        return self

    async def insert(self, batch: Sequence[Any]) -> None:
        await self.inner.insert([StoredEvent.of(m, e, self.now_ms).row() for m, e in batch])

    async def violations(self, batch: Sequence[Any]) -> dict[int, str] | None:
        return await self.inner.violations([StoredEvent.of(m, e, self.now_ms).row() for m, e in batch])

    async def __aexit__(self, *exc: object) -> None:
        await self.inner.__aexit__(*exc)


def newest(rows: Sequence[tuple[Any, ...]]) -> list[tuple[StoredEvent, bool]]:
    """Rows of ``STORED_COLUMNS`` read without FINAL -> (event, stored as late), by the event's
    time. Of an event stored more than once (linked late, sent again) the newest version is kept,
    as FINAL would: the latest ``ingested_at``, and at equal ones the linked row, stored after."""
    newest: dict[str, tuple[Any, ...]] = {}
    for r in rows:
        if r[0] not in newest or (r[8], r[6], r[7]) > (newest[r[0]][8], newest[r[0]][6], newest[r[0]][7]):
            newest[r[0]] = r
    return [
        (StoredEvent(ActionEvent(r[0], r[1], int(r[2]), r[3], r[4], r[5]), r[9], int(r[10]), int(r[11]), int(r[8]),
                     str(r[7])), bool(r[6]))  # fmt: skip
        for r in sorted(newest.values(), key=lambda r: (r[2], r[0]))
    ]
