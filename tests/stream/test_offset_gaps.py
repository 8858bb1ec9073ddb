"""Skipped offsets (stream/offset_gaps.py). A real broker cannot be made to skip offsets on demand
(tansu has no transactions or compaction), so the patched Faust method is driven directly, on a
consumer shaped as Faust's own, and Faust's fetch loop is checked to still call it; the re-read runs
against the real broker and embedded ClickHouse."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaProducer
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from stream.app import create_app
from stream.config import Settings
from stream.counters import Counters
from stream.demo.broker import LocalBroker
from stream.dlq import InMessage
from stream.faults import write_faults
from stream.offset_gaps import SkippedOffsetReader, watch_offset_gaps
from stream.pipeline import Pipeline
from stream.sink import ClickHouseSink
from stream.store import ClickHouseStore
from tests.factories import genai_trace, proto
from tests.stream.conftest import Deployment, wait_for
from tests.stream.test_pipeline import ListProducer


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


def test_a_gap_is_logged_counted_and_still_acked_by_faust(caplog: pytest.LogCaptureFixture) -> None:
    app = faust.App("gap-test", broker="kafka://127.0.0.1:1")
    counters = Counters()
    seen: list[tuple[Any, ...]] = []

    def on_gap(topic: str, partition: int, first: int, last: int) -> None:
        seen.append((topic, partition, first, last))
        counters.count_skipped(topic, first, last)

    watch_offset_gaps(app, on_gap)
    consumer = faust_consumer(app)
    tp = TP("otlp_spans", 2)
    with caplog.at_level(logging.WARNING, logger="stream.offset_gaps"):
        # the fetch loop read offset 61, then 64: Faust calls _add_gap(tp, 62, 64)
        asyncio.run(Consumer._add_gap(consumer, tp, 62, 64))
    assert seen == [("otlp_spans", 2, 62, 63)]
    assert counters.skipped_offsets == {"otlp_spans": 2}
    assert "offsets 62-63 of otlp_spans/2" in caplog.text
    assert sorted((i.begin, i.end) for i in consumer._gap[tp]) == [(62, 65)]  # Faust's own bookkeeping is kept


def test_watching_twice_patches_once_and_follows_the_latest_app() -> None:
    first, second = faust.App("gap-a", broker="kafka://127.0.0.1:1"), faust.App("gap-b", broker="kafka://127.0.0.1:1")
    calls: list[str] = []
    watch_offset_gaps(first, lambda *a: calls.append("first"))
    patched = Consumer._add_gap
    watch_offset_gaps(second, lambda *a: calls.append("second"))
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
    reader = SkippedOffsetReader(broker.bootstrap, {topic}, lambda msgs: pipeline.reingest(msgs, repartition=True))

    async def gap() -> list[InMessage]:
        msgs = await reader.read(topic, 0, 1, 2)
        reader.on_gap(topic, 0, 1, 2)  # as the Faust hook calls it: a task on the running loop
        reader.on_gap("some.other.topic", 0, 1, 2)  # not a span topic: only counted by the caller
        await asyncio.wait_for(asyncio.gather(*reader._tasks), 30)
        return msgs

    msgs = asyncio.run(gap())
    assert [(m.offset, m.value) for m in msgs] == [(1, proto(traces[1])), (2, proto(traces[2]))]
    assert all(m.timestamp_ms and m.key == traces[m.offset][0].trace_id.hex().encode() for m in msgs)
    stored = {r[0] for r in store.query(f"SELECT DISTINCT trace_id FROM {store.database}.spans")[1]}
    assert stored == {traces[1][0].trace_id.hex(), traces[2][0].trace_id.hex()}
    assert reader.recovered == 2 and pipeline.counters.reread_messages == 2


def test_the_worker_app_counts_a_gap_on_its_input_and_stores_what_was_skipped(
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while pipeline.counters.reread_messages < 2 and loop.time() < deadline:
            await asyncio.sleep(0.1)
        return pipeline

    pipeline = asyncio.run(main())
    assert pipeline.counters.skipped_offsets == {topic: 2} and pipeline.counters.reread_messages == 2
    stored = {r[0] for r in store.query(f"SELECT DISTINCT trace_id FROM {store.database}.spans")[1]}
    assert stored == {traces[0][0].trace_id.hex(), traces[1][0].trace_id.hex()}


def test_a_worker_whose_fetches_skip_records_still_stores_every_trace(
    deployment: Callable[..., Deployment], tmp_path: Path,
) -> None:  # fmt: skip
    faults = tmp_path / "faults.json"
    write_faults(faults, skip_fetched=3)  # the next 3 fetched span records never reach the streams
    d = deployment(partitions=1, faults_file=str(faults))
    worker = d.start_worker()
    traces = [genai_trace(random.Random(60 + i), 3) for i in range(12)]
    d.produce([(t[0].trace_id.hex().encode(), proto(t), 0) for t in traces])

    def stored() -> int:
        return int(worker.sql("SELECT count() FROM tracejudge.traces FINAL")[0][0])

    assert wait_for(lambda: stored() == len(traces), 90), f"{stored()} of {len(traces)} traces stored"
    assert int(worker.sql("SELECT count() FROM tracejudge.spans FINAL")[0][0]) == 3 * len(traces)
    counters = worker.status()["counters"]
    assert counters["skipped_offsets"] == {d.input_topic: 3} and counters["reread_messages"] == 3
    log = d.workers[0].log_path.read_text()
    assert log.count("fault injected: fetched record") == 3 and "messages ingested" in log
