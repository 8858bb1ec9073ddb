"""Offsets a consumed partition skipped: Faust counts them as processed, so they must not go unseen.

Faust's fetch loop, given offset ``n + k`` right after ``n``, records ``n + 1 .. n + k`` as a gap and
treats it as acknowledged: the committed offset moves past it. On a compacted topic, or around the
control records of transactions, that is right. tracejudge's topics are neither (the Collector's
kafka exporter does not compact or use transactions), so a gap there means the fetch responses left
messages out: they are on the topic and were never handled, and no replay brings them back once
the commit has passed them.

:func:`watch_offset_gaps` hooks Faust's ``Consumer._add_gap`` (faust-streaming 0.15, patched once
per process; a test checks the fetch loop still calls it). Each gap is logged and handed to the
app's ``on_gap`` coroutine, which the fetch loop awaits *before* Faust records the gap and before
the message after it is delivered. So while ``on_gap`` runs nothing at or past the gap is
acknowledged, and no commit can pass it: a worker that dies meanwhile restarts from an offset before
the gap and reads it the normal way.

Faust also misreads the head of a partition after it seeks to the committed offset ``c`` (on
assignment, after a rebalance): it sets the partition's read offset to ``c``, the offset it reads
*next*, as if ``c`` had been read. A fetch that skipped the message at ``c`` then went unnoticed (a
first message at ``c + 1`` is no gap to Faust, one at ``c + k`` a gap from ``c + 1``), and the commit
passed it. The same hook replaces ``Consumer.perform_seek`` with a copy that sets the read offset to
``c - 1``, the last offset read, so the gap starts at ``c``. A partition with nothing committed (a
group's first start) is read from its first offset still on the broker, ``s``: its read offset is
``s - 1``, so a fetch that skips the first records is a gap too, and offsets that retention deleted
before ``s`` are not. Faust's check ignores a gap after a read offset of 0 (``if gap > 1 and
r_offset``), so the hook also gives the fetch loop a read-offset mapping (:class:`ReadOffsets`)
that keeps 0 as an int that is true.

:class:`SkippedOffsetReader` is what the worker's ``on_gap`` runs: it reads the skipped offsets
again with a plain consumer outside the group, and hands the messages to the topic's handler (the
same code as a consumed batch: the same topic, partition, offset and timestamp, so the same
deduplication tokens). It retries a failed read with backoff until ``deadline``, then raises
:class:`GapNotRecovered`; the worker then exits without committing, or, with ``gap_unrecovered:
dead_letter``, sends a dead-letter record naming the offsets and goes on (stream/app.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.consumer import Consumer, ensure_TP

from stream.dlq import InMessage

log = logging.getLogger(__name__)

OnGap = Callable[[str, int, int, int], Awaitable[None]]  # topic, partition, first skipped offset, last
Handler = Callable[[list[InMessage]], Awaitable[Any]]  # handles messages read again, like a consumed batch


def watch_offset_gaps(app: faust.App, on_gap: OnGap) -> None:
    """Await ``on_gap`` (after logging a warning) for every gap Faust finds on ``app``'s consumer,
    before Faust records the gap as acknowledged."""
    app._tracejudge_on_gap = on_gap  # type: ignore[attr-defined]
    if getattr(Consumer, "_tracejudge_gap_patched", False):
        return
    original = Consumer._add_gap

    async def add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        # Faust passes the offset of the message that follows the gap as ``offset_to``
        last = offset_to - 1
        hook = getattr(self.app, "_tracejudge_on_gap", None)
        if offset_from <= last and hook is not None:
            log.warning(
                "offsets %d-%d of %s/%d were skipped by the consumer's fetches; reading them again before "
                "the consumer goes on", offset_from, last, tp.topic, tp.partition,
            )  # fmt: skip
            await hook(tp.topic, tp.partition, offset_from, last)
            offset_to = last  # Faust's gap would take in the message after it too, before it is processed
        await original(self, tp, offset_from, offset_to)

    original_drain = Consumer._drain_messages

    async def drain_messages(self: Any, fetcher: Any) -> None:
        # the fetch loop binds the read-offset mapping's methods once, as it starts
        if not isinstance(self._read_offset, ReadOffsets):
            self._read_offset = ReadOffsets(self._read_offset)
        await original_drain(self, fetcher)

    Consumer._add_gap = add_gap  # type: ignore[method-assign]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]
    Consumer._drain_messages = drain_messages  # type: ignore[method-assign]
    Consumer._tracejudge_gap_patched = True  # type: ignore[attr-defined]


class _ReadZero(int):
    """Offset 0 as a read offset that Faust's gap check sees: it checks ``if gap > 1 and r_offset``."""

    def __bool__(self) -> bool:
        return True


READ_ZERO = _ReadZero(0)


class ReadOffsets(defaultdict[Any, int | None]):
    """Faust's ``Consumer._read_offset`` (the last offset read per partition, ``None`` unknown), except
    that 0 is kept as :data:`READ_ZERO`, so that a fetch skipping the records right after offset 0 is
    a gap too."""

    def __init__(self, items: Mapping[Any, int | None] | None = None) -> None:
        super().__init__(lambda: None)
        self.update(items or {})

    def __setitem__(self, tp: Any, offset: int | None) -> None:
        super().__setitem__(tp, READ_ZERO if offset == 0 else offset)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for tp, offset in dict(*args, **kwargs).items():
            self[tp] = offset


async def perform_seek(self: Any) -> None:
    """Faust's ``Consumer.perform_seek`` (faust-streaming 0.15.3), except for the read offset, from
    which the fetch loop measures gaps: the offset before the one the partition is read from next
    (Faust's: the committed offset ``c`` itself, or nothing). That is ``c - 1``; for a partition with
    nothing committed, which the consumer reads from its first offset still on the broker (the
    worker's ``auto_offset_reset`` is ``earliest``), it is that offset minus 1, asked of the broker
    here (one request per seek, for those partitions only). Faust's check (``if gap > 1 and
    r_offset``) takes ``-1`` as a read offset, so a skip at offset 0 is seen (and 0 through
    :class:`ReadOffsets`)."""
    committed = await self.seek_to_committed()
    fresh = [tp for tp, c in committed.items() if c is None]
    starts: Mapping[Any, int] = {}
    if fresh:
        try:
            starts = await self.earliest_offsets(*fresh)
        except Exception as exc:  # no gap check at their head, as with Faust's own seek
            log.warning("first offsets of %d partitions without a committed offset unknown (%r): a fetch "
                        "that skips their first records goes unseen", len(fresh), exc)  # fmt: skip
    nxt = {tp: c if c is not None else starts.get(tp) for tp, c in committed.items()}
    self._read_offset.update({tp: n - 1 if n is not None else None for tp, n in nxt.items()})
    self._committed_offset.update({ensure_TP(tp): c if c else None for tp, c in committed.items() if c is not None})


class GapNotRecovered(Exception):
    """Skipped offsets that could not be read again and handled before the deadline."""


class SkippedOffsetReader:
    """Reads skipped offsets again and passes the messages to their topic's handler.

    A read that fails or takes longer than ``attempt_timeout`` is retried after 1, 2, 4 … up to 30
    seconds, until ``deadline`` seconds have passed; then :meth:`recover` raises
    :class:`GapNotRecovered`. A handler's own failure is not retried here: handlers retry their
    stores themselves. Offsets that hold no message (a compacted key, a transaction marker) are
    simply not there to read.
    """

    def __init__(self, bootstrap: str, handlers: Mapping[str, Handler], *, max_fetch_bytes: int = 64 * 1_048_576,
                 attempt_timeout: float = 30.0, deadline: float = 300.0,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic, client: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        self.bootstrap = bootstrap
        self.client = dict(client or {})  # authentication and TLS (stream/kafka_auth.py)
        self.handlers = dict(handlers)
        self.max_fetch_bytes = max_fetch_bytes
        self.attempt_timeout = attempt_timeout
        self.deadline = deadline
        self.sleep = sleep
        self.clock = clock

    async def recover(self, topic: str, partition: int, first: int, last: int) -> int:
        """Read offsets ``first`` .. ``last`` again and handle them; the number of messages handled
        (0 for a topic without a handler: nothing to do)."""
        handler = self.handlers.get(topic)
        if handler is None:
            return 0
        where = f"offsets {first}-{last} of {topic}/{partition}"
        give_up, backoff = self.clock() + self.deadline, 1.0
        while True:
            try:
                msgs = await asyncio.wait_for(self.read(topic, partition, first, last), self.attempt_timeout)
                break
            except Exception as exc:
                if self.clock() + backoff > give_up:
                    raise GapNotRecovered(f"{where} could not be read again within {self.deadline:.0f}s: {exc!r}") from exc
                log.error("re-reading %s failed (%r); retrying in %.0fs", where, exc, backoff)
                await self.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
        if msgs:
            # shielded: if the fetch loop is cancelled (a rebalance, shutdown), the handling still ends
            await asyncio.shield(asyncio.ensure_future(handler(msgs)))
        log.warning("re-read %s: %d messages handled", where, len(msgs))
        return len(msgs)

    async def read(self, topic: str, partition: int, first: int, last: int) -> list[InMessage]:
        """The messages at offsets ``first`` .. ``last`` of one partition."""
        tp = TopicPartition(topic, partition)
        # offsets retention deleted meanwhile are out of range: "earliest" goes on from the first one
        # still there (the default, "latest", would jump past what is left of the gap)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=self.max_fetch_bytes, fetch_max_bytes=self.max_fetch_bytes, **self.client,
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
