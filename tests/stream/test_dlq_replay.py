"""stream/dlq_replay.py on the real broker: reading a dead-letter topic back and replaying it —
whole dead letters, ones that name source offsets instead (sent without their value, or
``unrecovered_offsets``), offsets that are gone, dry runs. The command line, with a worker, is in
test_cli_dlq.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from stream import dlq
from stream.delivery import without_value
from stream.demo.broker import LocalBroker
from stream.dlq import InMessage, OutRecord
from stream.dlq_replay import replay, replay_log, replayed, scan

REASONS = {"message_too_large", dlq.UNRECOVERED_OFFSETS}


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await p.start()
    try:
        for key, value, headers in records:
            await p.send_and_wait(topic, value, key=key, partition=0, headers=headers or None)
    finally:
        await p.stop()


def setup(broker: LocalBroker, new_topic: Callable[..., str]) -> tuple[str, str, str]:
    """A source topic of 6 messages, and a dead-letter topic naming some of them."""
    src, dead, dest = new_topic(1), new_topic(1), new_topic(1)
    source = [(b"k%d" % i, b"value %d" % i, [("h", b"%d" % i)]) for i in range(6)]
    asyncio.run(_produce(broker.bootstrap, src, source))

    def letter(offset: int, reason: str) -> OutRecord:
        key, value, headers = source[offset]
        return dlq.dead_letter(InMessage(src, 0, offset, key, value, None, tuple(headers)), dead, reason, "why")

    records = [
        letter(1, "message_too_large"),  # whole
        without_value(letter(2, "message_too_large")),  # names offset 2
        dlq.unrecovered_offsets(src, 0, 3, 4, dead, "fetch skipped them"),  # names 3-4
        letter(5, "undecodable"),  # another reason: not replayed
        dlq.unrecovered_offsets(src, 0, 10, 11, dead, "never there"),  # gone
    ]
    asyncio.run(_produce(broker.bootstrap, dead, [(r.key, r.value or b"", r.headers) for r in records]))
    return src, dead, dest


async def _scan(bootstrap: str, topic: str) -> list[Any]:
    return [d async for d in scan(bootstrap, topic)]


def test_scan_reads_every_dead_letter_with_its_headers(broker: LocalBroker, new_topic: Callable[..., str]) -> None:
    src, dead, _ = setup(broker, new_topic)
    got = asyncio.run(_scan(broker.bootstrap, dead))
    assert [d.reason for d in got] == ["message_too_large"] * 2 + ["unrecovered_offsets", "undecodable", "unrecovered_offsets"]
    assert [d.source for d in got] == [(src, 0, 1, 1), (src, 0, 2, 2), (src, 0, 3, 4), (src, 0, 5, 5), (src, 0, 10, 11)]
    assert [d.names_offsets for d in got] == [False, True, True, False, True]
    assert got[1].omitted_bytes == len(b"value 2") + len("h") + 1 and got[0].omitted_bytes is None
    assert got[0].value == b"value 1" and got[0].original_headers == [("h", b"1")]


def test_replay_sends_the_messages_and_reads_the_named_offsets(broker: LocalBroker, new_topic: Callable[..., str],
                                                               consume: Any) -> None:  # fmt: skip
    src, dead, dest = setup(broker, new_topic)
    calls: list[tuple[int, str, int]] = []
    result = asyncio.run(replay(broker.bootstrap, dead, REASONS, to=dest, on_send=lambda d, t, n: calls.append((d.offset, t, n))))
    assert result.dead_letters == 4 and result.sent == 4
    assert result.missing == [(src, 0, 10), (src, 0, 11)] and result.unreplayable == []
    assert calls == [(0, dest, 1), (1, dest, 1), (2, dest, 2), (4, dest, 0)]
    out = consume(dest, expect=4, timeout=20)
    assert [(r.key, r.value) for r in out] == [(b"k1", b"value 1"), (b"k2", b"value 2"), (b"k3", b"value 3"), (b"k4", b"value 4")]
    assert [list(r.headers) for r in out] == [[("h", b"1")], [("h", b"2")], [("h", b"3")], [("h", b"4")]]  # no tracejudge.dlq.*


def test_a_dry_run_sends_nothing_and_the_default_destination_is_the_source_topic(
    broker: LocalBroker, new_topic: Callable[..., str], consume: Any,
) -> None:  # fmt: skip
    src, dead, _ = setup(broker, new_topic)
    targets: list[str] = []
    result = asyncio.run(replay(broker.bootstrap, dead, {"undecodable"}, dry_run=True, on_send=lambda d, t, n: targets.append(t)))
    assert result.dead_letters == 1 and result.sent == 1 and targets == [src]
    assert len(consume(src, idle=1.0)) == 6  # nothing was sent
    result = asyncio.run(replay(broker.bootstrap, dead, {"undecodable"}))
    assert result.sent == 1
    assert [r.value for r in consume(src, expect=7)][-1] == b"value 5"


def test_a_replay_is_recorded_and_not_repeated_unless_asked_again(
    broker: LocalBroker, new_topic: Callable[..., str], consume: Any,
) -> None:  # fmt: skip
    src, dead, dest = setup(broker, new_topic)
    before = int(time.time() * 1000)
    first = asyncio.run(replay(broker.bootstrap, dead, REASONS, to=dest))
    assert first.sent == 4 and first.already == []
    log = asyncio.run(replayed(broker.bootstrap, dead))
    # dlq offsets 0-2 recorded; 4 is not: its offsets were not found, so a later run tries it again
    assert sorted(log) == [(0, 0), (0, 1), (0, 2)]
    assert log[0, 2].to == dest and log[0, 2].messages == 2 and log[0, 0].at_ms >= before
    assert [r.key for r in consume(replay_log(dead), expect=3)] == [b"0@0", b"0@1", b"0@2"]

    second = asyncio.run(replay(broker.bootstrap, dead, REASONS, to=dest))
    assert second.dead_letters == 4 and second.sent == 0 and [d.offset for d, _ in second.already] == [0, 1, 2]
    assert second.missing == [(src, 0, 10), (src, 0, 11)]  # the incomplete one was tried again
    assert len(consume(dest, idle=1.0)) == 4  # nothing sent twice
    dry = asyncio.run(replay(broker.bootstrap, dead, REASONS, to=dest, dry_run=True, again=True))
    assert dry.sent == 4 and dry.already == []
    again = asyncio.run(replay(broker.bootstrap, dead, REASONS, to=dest, again=True))
    assert again.sent == 4 and len(consume(dest, expect=8)) == 8
    assert asyncio.run(replayed(broker.bootstrap, new_topic(1))) == {}  # never replayed


def test_replay_since_leaves_older_dead_letters_alone(broker: LocalBroker, new_topic: Callable[..., str]) -> None:
    _, dead, dest = setup(broker, new_topic)
    later = int(time.time() * 1000) + 3_600_000
    assert asyncio.run(replay(broker.bootstrap, dead, REASONS, to=dest, dry_run=True, since_ms=later)).dead_letters == 0
    assert asyncio.run(replay(broker.bootstrap, dead, REASONS, to=dest, dry_run=True, since_ms=0)).dead_letters == 4



def test_a_batch_of_several_records_is_read_whole(broker: LocalBroker, new_topic: Callable[..., str]) -> None:
    """tansu answers ListOffsets with the last batch's base offset + 1: a scan bounded by it would
    miss all but the first record of a batch (the demo's two dead letters, sent together)."""
    topic, empty = new_topic(1), new_topic(4)

    async def batch() -> None:
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50)
        await p.start()
        try:
            futures = [await p.send(topic, b"v%d" % i, partition=0, headers=[(dlq.REASON, b"r")]) for i in range(3)]
            assert [(await f).offset for f in futures] == [0, 1, 2]
        finally:
            await p.stop()

    asyncio.run(batch())
    assert [d.value for d in asyncio.run(_scan(broker.bootstrap, topic))] == [b"v0", b"v1", b"v2"]
    started = time.monotonic()
    assert asyncio.run(_scan(broker.bootstrap, empty)) == []
    assert time.monotonic() - started < 5  # empty partitions end at their first fetch, not after idling
