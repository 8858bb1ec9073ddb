"""Ack a batch only once it is stored, while the agent already works on the next one.

An ingest batch ends with its last span inserts running on the store thread. Waiting for them
before taking the next batch left the event loop idle for about a quarter of the time at full load
(the inserts of a 500-message batch's last chunk take about as long as decoding a chunk). So the
ingest agents split a batch in two (``Pipeline.start_batch`` / ``Pipeline.finish_batch``) and
hand the second half to a :class:`BatchChain`: it finishes the batch in the background and then
acks its events, while the agent starts the next batch.

* Events are taken with Faust's ``noack_take`` and acked only here, after the batch's finish
  returned. An exception or a cancellation never acks (``take_events`` acks in a ``finally``,
  which would commit a batch that was never stored).
* Batches finish and ack in the order they were added; at most one finishes in the background
  (:meth:`add` waits for the previous one first), so memory and replay stay bounded by two batches.
* A failed finish is logged and its events stay unacked, and so does every later batch: its
  offsets are never committed and the batch is replayed after a restart or a rebalance (writes
  are idempotent). The chain stops acking and reports the failure from the next :meth:`add`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)


class BatchChain:
    """``await chain.add(finish, events)`` per batch; ``await chain.drain()`` when the stream ends."""

    def __init__(self, ack: Callable[[Any], Awaitable[Any]]) -> None:
        self._ack = ack
        self._tail: asyncio.Future[None] | None = None
        self.failed: BaseException | None = None

    async def add(self, finish: Awaitable[None], events: Sequence[Any]) -> None:
        """Finish ``finish`` in the background, then ack ``events``. Waits for the previous batch."""
        try:
            await self.drain()
            if self.failed is not None:
                raise RuntimeError("an earlier batch failed to finish; its events were not acked") from self.failed
        except BaseException:  # also a cancellation while waiting: this batch is never started
            if inspect.iscoroutine(finish):
                finish.close()  # so no "never awaited" warning; its events stay unacked
            raise
        self._tail = asyncio.ensure_future(self._finish(finish, events))

    async def drain(self) -> None:
        """Wait until the batch finishing in the background (if any) is done and acked."""
        tail = self._tail
        if tail is not None:
            await asyncio.shield(tail)  # a cancelled caller must not cancel the batch's finish
            self._tail = None

    async def _finish(self, finish: Awaitable[None], events: Sequence[Any]) -> None:
        try:
            await finish
        except BaseException as exc:  # noqa: BLE001 - recorded, re-raised by the next add
            self.failed = exc
            if not isinstance(exc, asyncio.CancelledError):
                log.error("a batch did not finish; its %d events stay unacked: %r", len(events), exc)
            return
        for event in events:
            await self._ack(event)
