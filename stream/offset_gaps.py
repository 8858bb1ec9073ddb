"""Offsets a consumed partition skipped: Faust counts them as processed, so they must not go unseen.

Faust's fetch loop, given offset ``n + k`` right after ``n``, records ``n + 1 .. n + k`` as a gap and
treats it as acknowledged: the committed offset moves past it. On a compacted topic, or around the
control records of transactions, that is right. The OTLP input is neither (the Collector's kafka
exporter does not compact or use transactions), so a gap there means the broker left messages out
of its fetch responses: they are on the topic and were never ingested, and no replay brings them
back once the commit has passed them.

:func:`watch_offset_gaps` makes that visible: each gap is logged with its topic, partition and
offsets, and counted (``skipped_offsets`` on ``/api/status``, ``tracejudge_consumer_skipped_offsets``
on ``/metrics``). Faust's internals are patched once per process (faust-streaming 0.15,
``Consumer._add_gap``); a test checks the hook still fires.

:class:`SkippedOffsetReader` then reads the skipped offsets of the span topics again, with a plain
consumer outside the group, and ingests what it finds like any batch (the same topic, partition,
offset and timestamp, so the same deduplication tokens as a normal read). What it cannot bring back:
messages lost if the worker dies after Faust committed past the gap and before the re-read was
stored (a window of about a second), and gaps on other topics (only logged and counted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.consumer import Consumer

from stream.dlq import InMessage

log = logging.getLogger(__name__)

OnGap = Callable[[str, int, int, int], None]  # topic, partition, first skipped offset, last


def watch_offset_gaps(app: faust.App, on_gap: OnGap) -> None:
    """Call ``on_gap`` (after logging a warning) for every gap Faust records on ``app``'s consumer."""
    app._tracejudge_on_gap = on_gap  # type: ignore[attr-defined]
    if getattr(Consumer, "_tracejudge_gap_patched", False):
        return
    original = Consumer._add_gap

    async def add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        # Faust passes the offset of the message that follows the gap as ``offset_to``
        last = offset_to - 1
        if offset_from <= last:
            log.warning(
                "offsets %d-%d of %s/%d were skipped by the consumer's fetches: Faust counts them as "
                "processed and commits past them (right on a compacted or transactional topic; the span "
                "topics' skipped offsets are read again)", offset_from, last, tp.topic, tp.partition,
            )  # fmt: skip
            hook = getattr(self.app, "_tracejudge_on_gap", None)
            if hook is not None:
                hook(tp.topic, tp.partition, offset_from, last)
        await original(self, tp, offset_from, offset_to)

    Consumer._add_gap = add_gap  # type: ignore[method-assign]
    Consumer._tracejudge_gap_patched = True  # type: ignore[attr-defined]


class SkippedOffsetReader:
    """Reads skipped offsets of ``topics`` again and passes the messages to ``ingest``.

    Each gap gets a task of its own on the running loop; it gives up after ``timeout`` seconds
    (logged as an error with the offsets it did not read). Offsets that hold no message (a
    compacted key, a transaction marker) are simply not there to read.
    """

    def __init__(self, bootstrap: str, topics: set[str], ingest: Callable[[list[InMessage]], Awaitable[None]],
                 *, max_fetch_bytes: int = 64 * 1_048_576, timeout: float = 60.0) -> None:  # fmt: skip
        self.bootstrap = bootstrap
        self.topics = topics
        self.ingest = ingest
        self.max_fetch_bytes = max_fetch_bytes
        self.timeout = timeout
        self.recovered = 0  # messages read again and ingested
        self._tasks: set[asyncio.Task[None]] = set()

    def on_gap(self, topic: str, partition: int, first: int, last: int) -> None:
        if topic not in self.topics:
            return
        task = asyncio.get_running_loop().create_task(self.recover(topic, partition, first, last))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def recover(self, topic: str, partition: int, first: int, last: int) -> None:
        log.info("re-reading offsets %d-%d of %s/%d", first, last, topic, partition)
        try:
            msgs = await asyncio.wait_for(self.read(topic, partition, first, last), self.timeout)
        except Exception as exc:  # the gap stays lost; say so, with what to replay by hand
            log.error("re-reading offsets %d-%d of %s/%d failed: %r", first, last, topic, partition, exc)
            return
        log.info("read offsets %d-%d of %s/%d again: %d messages; ingesting", first, last, topic, partition, len(msgs))
        if msgs:
            await self.ingest(msgs)
            self.recovered += len(msgs)
        log.warning("re-read offsets %d-%d of %s/%d: %d messages ingested", first, last, topic, partition, len(msgs))

    async def read(self, topic: str, partition: int, first: int, last: int) -> list[InMessage]:
        """The messages at offsets ``first`` .. ``last`` of one partition."""
        tp = TopicPartition(topic, partition)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            max_partition_fetch_bytes=self.max_fetch_bytes, fetch_max_bytes=self.max_fetch_bytes,
        )  # fmt: skip
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, first)
            out: list[InMessage] = []
            while await consumer.position(tp) <= last:
                batch = await consumer.getmany(tp, timeout_ms=500)
                for r in batch.get(tp, ()):
                    if first <= r.offset <= last:
                        headers = tuple((k, v) for k, v in (r.headers or ()))
                        out.append(InMessage(topic, partition, r.offset, r.key, r.value, r.timestamp, headers))
            return out
        finally:
            await consumer.stop()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
