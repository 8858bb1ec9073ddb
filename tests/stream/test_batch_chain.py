"""BatchChain: a batch is acked only after its finish returned, in order, at most one behind."""

from __future__ import annotations

import asyncio

import pytest

from stream.batch_chain import BatchChain


class Acks:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def __call__(self, event: str) -> bool:
        self.events.append(event)
        return True


def test_the_next_batch_starts_while_the_previous_finishes_and_acks_follow_in_order() -> None:
    async def main() -> None:
        acks = Acks()
        chain = BatchChain(acks)
        first_done = asyncio.Event()

        async def finish_first() -> None:
            await first_done.wait()

        await chain.add(finish_first(), ["a1", "a2"])  # returns at once: the finish runs behind
        assert acks.events == []
        second = asyncio.ensure_future(chain.add(asyncio.sleep(0), ["b1"]))
        await asyncio.sleep(0.01)
        assert not second.done() and acks.events == []  # waits for the first batch: one behind at most
        first_done.set()
        await second
        assert acks.events == ["a1", "a2"]
        await chain.drain()
        assert acks.events == ["a1", "a2", "b1"]

    asyncio.run(main())


def test_a_failed_finish_acks_nothing_then_or_later() -> None:
    async def main() -> None:
        acks = Acks()
        chain = BatchChain(acks)

        async def broken() -> None:
            raise ValueError("store said no")

        await chain.add(broken(), ["a1"])
        with pytest.raises(RuntimeError, match="earlier batch failed") as info:
            await chain.add(asyncio.sleep(0), ["b1"])
        assert isinstance(info.value.__cause__, ValueError)
        await chain.drain()
        assert acks.events == []

    asyncio.run(main())


def test_cancelling_the_drainer_does_not_cancel_the_finish() -> None:
    async def main() -> None:
        acks = Acks()
        chain = BatchChain(acks)
        release = asyncio.Event()

        async def slow() -> None:
            await release.wait()

        await chain.add(slow(), ["a1"])
        drainer = asyncio.ensure_future(chain.drain())
        await asyncio.sleep(0.01)
        drainer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await drainer
        release.set()
        await chain.drain()  # the finish went on and acked
        assert acks.events == ["a1"]

    asyncio.run(main())
