"""Skipped offsets (stream/offset_gaps.py), in one process. A real broker cannot be made to skip
offsets on demand (tansu has no transactions or compaction), so the patched Faust methods are driven
directly, on a consumer shaped as Faust's own, and Faust's fetch loop is checked to still call them;
the re-read runs against the real broker and embedded ClickHouse. Worker processes under the
``skip_fetched`` / ``reread_*`` faults: test_offset_gaps_worker.py."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import socket
from collections import defaultdict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import faust
import faust.transport.consumer
import pytest
from aiokafka import AIOKafkaProducer
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from stream.app import EXIT_UNFINISHED_BATCH, create_app
from stream.config import Settings
from stream.demo.broker import LocalBroker
from stream.dlq import DETAIL, REASON, SOURCE_LAST_OFFSET, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC, InMessage
from stream.offset_gaps import GapNotRecovered, ReadOffsets, SkippedOffsetReader, perform_seek, watch_offset_gaps
from stream.pipeline import Pipeline
from stream.sink import ClickHouseSink
from stream.store import ClickHouseStore
from tests.factories import genai_trace, proto
from tests.stream.test_pipeline import ListProducer


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on return: nothing listens there


def faust_consumer(app: faust.App) -> Any:
    """What Faust's ``Consumer._add_gap`` reads of its consumer."""
    return SimpleNamespace(app=app, _committed_offset=defaultdict(lambda: None), _gap=defaultdict(IntervalTree))


async def produce(bootstrap: str, topic: str, traces: list[Any]) -> None:
    """One keyed message per trace on partition 0, in order."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await p.start()
    try:
        for t in traces:
            await p.send_and_wait(topic, proto(t), key=t[0].trace_id.hex().encode(), partition=0)
    finally:
        await p.stop()


def test_faust_fetch_loop_still_reports_gaps_through_add_gap() -> None:
    assert "self._add_gap(tp, r_offset + 1, offset)" in inspect.getsource(Consumer._drain_messages)


def test_a_gap_is_recovered_before_faust_records_it_and_then_only_the_gap_is_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    app = faust.App("gap-test", broker="kafka://127.0.0.1:1")
    consumer = faust_consumer(app)
    tp = TP("otlp_spans", 2)
    seen: list[tuple[Any, ...]] = []

    async def on_gap(topic: str, partition: int, first: int, last: int) -> None:
        await asyncio.sleep(0.05)  # the re-read: Faust has recorded nothing meanwhile, so cannot commit past it
        seen.append((topic, partition, first, last, len(consumer._gap[tp])))

    watch_offset_gaps(app, on_gap)
    with caplog.at_level(logging.WARNING, logger="stream.offset_gaps"):
        # the fetch loop read offset 61, then 64: Faust calls _add_gap(tp, 62, 64)
        asyncio.run(Consumer._add_gap(consumer, tp, 62, 64))
    assert seen == [("otlp_spans", 2, 62, 63, 0)]
    assert "offsets 62-63 of otlp_spans/2" in caplog.text
    # then Faust records the gap alone (its own call would also take in 64, not yet processed)
    assert sorted((i.begin, i.end) for i in consumer._gap[tp]) == [(62, 64)]


def test_after_a_seek_to_the_committed_offset_the_read_offset_is_the_one_before_it() -> None:
    # the copy follows Faust's own perform_seek (faust-streaming 0.15.3) but for the read offset
    source = inspect.getsource(faust.transport.consumer)
    assert "_committed_offsets = await self.seek_to_committed()" in source
    assert "tp: offset if offset is not None and offset >= 0 else None" in source
    assert "ensure_TP(tp): offset if offset else None" in source
    watch_offset_gaps(faust.App("seek-test", broker="kafka://127.0.0.1:1"), lambda *a: asyncio.sleep(0))
    assert Consumer.perform_seek is perform_seek

    async def seek_to_committed() -> dict[TP, int | None]:
        return {TP("t", 0): 10, TP("t", 1): 1, TP("t", 2): 0, TP("t", 3): None, TP("t", 4): None}

    asked: list[tuple[TP, ...]] = []

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:  # the broker's first offsets still there
        asked.append(tps)
        return {TP("t", 3): 0, TP("t", 4): 120}

    consumer = SimpleNamespace(seek_to_committed=seek_to_committed, earliest_offsets=earliest_offsets,
                               _read_offset=defaultdict(lambda: None), _committed_offset=defaultdict(lambda: None))  # fmt: skip
    asyncio.run(perform_seek(consumer))
    # a first message at 11 is now a gap from 10 (Faust's read offset 10 made it no gap at all); with
    # nothing committed, a first message past the partition's first offset is a gap from there
    assert dict(consumer._read_offset) == {TP("t", 0): 9, TP("t", 1): 0, TP("t", 2): -1, TP("t", 3): -1, TP("t", 4): 119}
    assert dict(consumer._committed_offset) == {TP("t", 0): 10, TP("t", 1): 1, TP("t", 2): None}
    assert asked == [(TP("t", 3), TP("t", 4))]  # one request, for the partitions without a commit only


def test_when_the_first_offsets_are_unknown_the_seek_leaves_those_partitions_as_faust_would(
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    async def seek_to_committed() -> dict[TP, int | None]:
        return {TP("t", 0): 5, TP("t", 1): None}

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        raise ConnectionError("broker gone")

    consumer = SimpleNamespace(seek_to_committed=seek_to_committed, earliest_offsets=earliest_offsets,
                               _read_offset=defaultdict(lambda: None), _committed_offset=defaultdict(lambda: None))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="stream.offset_gaps"):
        asyncio.run(perform_seek(consumer))
    assert dict(consumer._read_offset) == {TP("t", 0): 4, TP("t", 1): None}
    assert "first offsets of 1 partitions without a committed offset unknown" in caplog.text


def test_the_read_offsets_keep_0_as_a_read_offset_faust_checks_gaps_after() -> None:
    # Faust's fetch loop binds the mapping's methods as it starts and checks ``if gap > 1 and r_offset``
    source = inspect.getsource(faust.transport.consumer)
    assert "get_read_offset = self._read_offset.__getitem__" in source and "if gap > 1 and r_offset:" in source
    offsets = ReadOffsets({TP("t", 0): 0, TP("t", 1): 7, TP("t", 2): None})
    offsets.update({TP("t", 3): 0})
    offsets[TP("t", 4)] = 0
    assert dict(offsets) == {TP("t", 0): 0, TP("t", 1): 7, TP("t", 2): None, TP("t", 3): 0, TP("t", 4): 0}
    assert all(offsets[TP("t", p)] for p in (0, 3, 4)) and offsets[TP("t", 0)] + 1 == 1
    assert offsets[TP("t", 9)] is None  # unknown, as in Faust's defaultdict


def test_watching_twice_patches_once_and_follows_the_latest_app() -> None:
    first, second = faust.App("gap-a", broker="kafka://127.0.0.1:1"), faust.App("gap-b", broker="kafka://127.0.0.1:1")
    calls: list[str] = []

    def hook(name: str) -> Any:
        async def on_gap(*_: Any) -> None:
            calls.append(name)

        return on_gap

    watch_offset_gaps(first, hook("first"))
    patched = Consumer._add_gap
    watch_offset_gaps(second, hook("second"))
    assert Consumer._add_gap is patched
    for app in (first, second):
        asyncio.run(Consumer._add_gap(faust_consumer(app), TP("t", 0), 3, 5))
    assert calls == ["first", "second"]


def test_skipped_offsets_are_read_again_from_the_broker_and_stored(
    broker: LocalBroker, new_topic: Callable[..., str], store: ClickHouseStore,
) -> None:  # fmt: skip
    topic = new_topic(partitions=1)
    traces = [genai_trace(random.Random(40 + i), 3) for i in range(4)]
    asyncio.run(produce(broker.bootstrap, topic, traces))
    settings = Settings(clickhouse_database=store.database, input_topic=topic)
    pipeline = Pipeline(settings, ClickHouseSink(store), ListProducer())
    reader = SkippedOffsetReader(broker.bootstrap, {topic: lambda msgs: pipeline.handle_batch(msgs, repartition=True)})

    async def gap() -> tuple[list[InMessage], int, int]:
        msgs = await reader.read(topic, 0, 1, 2)
        handled = await reader.recover(topic, 0, 1, 2)
        other = await reader.recover("some.other.topic", 0, 1, 2)  # no handler: nothing to read
        return msgs, handled, other

    msgs, handled, other = asyncio.run(gap())
    assert [(m.offset, m.value) for m in msgs] == [(1, proto(traces[1])), (2, proto(traces[2]))]
    assert all(m.timestamp_ms and m.key == traces[m.offset][0].trace_id.hex().encode() for m in msgs)
    stored = {r[0] for r in store.query(f"SELECT DISTINCT trace_id FROM {store.database}.spans")[1]}
    assert stored == {traces[1][0].trace_id.hex(), traces[2][0].trace_id.hex()}
    assert (handled, other) == (2, 0)


def test_a_read_that_keeps_failing_is_retried_with_backoff_until_the_deadline() -> None:
    now = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    async def never(msgs: list[InMessage]) -> None:
        raise AssertionError("nothing was read, nothing may be handled")

    reader = SkippedOffsetReader(f"127.0.0.1:{closed_port()}", {"otlp_spans": never}, attempt_timeout=2,
                                 deadline=40, sleep=sleep, clock=lambda: now[0])  # fmt: skip
    with pytest.raises(GapNotRecovered, match="offsets 5-6 of otlp_spans/0 could not be read again within 40s"):
        asyncio.run(reader.recover("otlp_spans", 0, 5, 6))
    assert waits == [1, 2, 4, 8, 16]  # the next wait (30) would pass the deadline


def test_the_worker_app_recovers_a_gap_on_its_input_before_going_on(
    broker: LocalBroker, new_topic: Callable[..., str], store: ClickHouseStore,
) -> None:  # fmt: skip
    topic = new_topic(partitions=1)
    traces = [genai_trace(random.Random(50 + i), 2) for i in range(3)]

    async def main() -> Pipeline:
        await produce(broker.bootstrap, topic, traces)
        settings = Settings(clickhouse_database=store.database, input_topic=topic, kafka_bootstrap=broker.bootstrap,
                            consumer_group="g-" + topic)  # fmt: skip
        app, pipeline = create_app(settings, lambda app: Pipeline(settings, ClickHouseSink(store), ListProducer()))
        await Consumer._add_gap(faust_consumer(app), TP(topic, 0), 0, 2)  # read nothing before offset 2: 0 and 1 skipped
        return pipeline  # returned: the skipped messages were stored before Faust recorded the gap

    pipeline = asyncio.run(main())
    assert pipeline.counters.skipped_offsets == {topic: 2} and pipeline.counters.reread_messages == 2
    stored = {r[0] for r in store.query(f"SELECT DISTINCT trace_id FROM {store.database}.spans")[1]}
    assert stored == {traces[0][0].trace_id.hex(), traces[1][0].trace_id.hex()}


def test_the_worker_app_exits_without_committing_when_a_gap_cannot_be_read(
    store: ClickHouseStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    settings = Settings(clickhouse_database=store.database, kafka_bootstrap=f"127.0.0.1:{closed_port()}",
                        consumer_group="g-unreachable", gap_reread_deadline=0.5)  # fmt: skip
    app, _ = create_app(settings, lambda app: Pipeline(settings, ClickHouseSink(store), ListProducer()))
    consumer = faust_consumer(app)
    tp = TP(settings.input_topic, 0)

    def exit_(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", exit_)
    with caplog.at_level(logging.CRITICAL, logger="stream.app"), pytest.raises(SystemExit) as exited:
        asyncio.run(Consumer._add_gap(consumer, tp, 7, 9))
    assert exited.value.code == EXIT_UNFINISHED_BATCH
    assert "offsets 7-8 of otlp_spans/0 could not be read again" in caplog.text
    assert not consumer._gap[tp]  # never recorded: the committed offset stays before the gap


def test_told_to_dead_letter_them_the_worker_app_names_unreadable_offsets_in_one_record_and_goes_on(
    store: ClickHouseStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    settings = Settings(clickhouse_database=store.database, kafka_bootstrap=f"127.0.0.1:{closed_port()}",
                        consumer_group="g-unreachable", gap_reread_deadline=0.5, gap_unrecovered="dead_letter")  # fmt: skip
    producer = ListProducer()
    app, pipeline = create_app(settings, lambda app: Pipeline(settings, ClickHouseSink(store), producer))
    consumer = faust_consumer(app)
    tp = TP(settings.input_topic, 0)

    def exit_(code: int) -> None:
        raise AssertionError(f"the worker exited ({code}) although told to dead-letter the offsets")

    monkeypatch.setattr(os, "_exit", exit_)
    with caplog.at_level(logging.ERROR, logger="stream.app"):
        asyncio.run(Consumer._add_gap(consumer, tp, 7, 9))
    (record,) = producer.records
    headers = dict(record.headers)
    assert (record.topic, record.key, record.value) == (settings.dlq_topic, None, b"")
    assert headers[REASON] == b"unrecovered_offsets"
    assert (headers[SOURCE_TOPIC], headers[SOURCE_PARTITION]) == (b"otlp_spans", b"0")
    assert (headers[SOURCE_OFFSET], headers[SOURCE_LAST_OFFSET]) == (b"7", b"8")
    assert headers[DETAIL].startswith(b"offsets 7-8 of otlp_spans/0 could not be read again within 0s")
    assert pipeline.counters.unrecovered_offsets == {"otlp_spans": 2} == pipeline.counters.skipped_offsets
    assert "dead-lettered as a range" in caplog.text
    # recorded: the consumer goes on and its commits may pass the gap (the message at 9 is still to come)
    assert sorted((i.begin, i.end) for i in consumer._gap[tp]) == [(7, 9)]
