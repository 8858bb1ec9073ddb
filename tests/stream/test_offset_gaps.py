"""Skipped offsets (stream/offset_gaps.py). A real broker cannot be made to skip offsets on demand
(tansu has no transactions or compaction), so the patched Faust method is driven directly, on a
consumer shaped as Faust's own, and Faust's fetch loop is checked to still call it; the re-read runs
against the real broker and embedded ClickHouse."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import random
import socket
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import faust.transport.consumer
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.structs import OffsetAndMetadata
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from stream.app import EXIT_UNFINISHED_BATCH, create_app
from stream.config import Settings
from stream.demo.broker import LocalBroker
from stream.dlq import DETAIL, REASON, SOURCE_LAST_OFFSET, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC, InMessage
from stream.faults import write_faults
from stream.offset_gaps import GapNotRecovered, ReadOffsets, SkippedOffsetReader, perform_seek, watch_offset_gaps
from stream.pipeline import Pipeline
from stream.sink import ClickHouseSink
from stream.store import ClickHouseStore
from tests.factories import genai_trace, proto
from tests.stream.conftest import Deployment, wait_for
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


class _AsFaust(RoundRobinPartitionAssignor):
    name = "faust"  # the group's protocol: tansu keeps it after the workers leave


async def _commit(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> None:
    """What an operator's ``kafka-consumer-groups --reset-offsets --to-offset`` does once the workers
    are stopped. tansu takes commits only from a member of the group, so this joins it."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         partition_assignment_strategy=(_AsFaust,))  # fmt: skip
    await c.start()
    try:
        c.subscribe([tp.topic])
        deadline = time.monotonic() + 60
        while tp not in c.assignment() and time.monotonic() < deadline:
            await c.getmany(timeout_ms=200, max_records=1)
        await c.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await c.stop()


def test_a_worker_that_dead_letters_unreadable_offsets_stores_the_rest_and_an_offset_reset_recovers_them(
    deployment: Callable[..., Deployment], tmp_path: Path, consume: Callable[..., list[Any]],
) -> None:  # fmt: skip
    faults = tmp_path / "faults.json"
    write_faults(faults, skip_fetched=2, reread_fail=True)  # 2 records lost in fetches, never served again
    d = deployment(partitions=1, faults_file=str(faults), gap_reread_deadline=1, gap_unrecovered="dead_letter")
    worker = d.start_worker()
    traces = [genai_trace(random.Random(80 + i), 3) for i in range(10)]
    d.produce([(t[0].trace_id.hex().encode(), proto(t), 0) for t in traces])

    def stored(w: Any) -> int:
        return int(w.sql("SELECT count() FROM tracejudge.traces FINAL")[0][0])

    assert wait_for(lambda: stored(worker) == 8, 90), f"{stored(worker)} of 8 traces stored"
    counters = worker.status()["counters"]
    assert counters["unrecovered_offsets"] == {d.input_topic: 2} == counters["skipped_offsets"]
    assert counters["reread_messages"] == 0 and worker.proc.poll() is None  # went on, did not exit
    named: set[int] = set()
    for r in consume(d.dlq_topic, idle=2.0, timeout=30):
        h = {k: v.decode() for k, v in r.headers}
        assert (h["tracejudge.dlq.reason"], h["tracejudge.dlq.source.topic"]) == ("unrecovered_offsets", d.input_topic)
        named |= set(range(int(h["tracejudge.dlq.source.offset"]), int(h["tracejudge.dlq.source.last_offset"]) + 1))
    assert len(named) == 2 and named <= set(range(len(traces)))
    assert "fault injected: re-read of offsets" in d.workers[0].log_path.read_text()

    # the runbook (README "Delivery guarantees"): once the broker serves them, stop the group, move its
    # committed offset back to the first offset named, start again; what follows is replayed idempotently
    worker.stop(timeout=30)
    write_faults(faults)
    asyncio.run(_commit(d.broker.bootstrap, "tj-" + d.input_topic, TopicPartition(d.input_topic, 0), min(named)))
    worker = d.start_worker()
    assert wait_for(lambda: stored(worker) == len(traces), 90), f"{stored(worker)} of {len(traces)} traces stored"
    assert int(worker.sql("SELECT count() FROM tracejudge.spans FINAL")[0][0]) == 3 * len(traces)
    assert int(worker.sql("SELECT count() FROM tracejudge.traces")[0][0]) >= len(traces)


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
    assert log.count("fault injected: fetched record") == 3 and "3 messages handled" in log


def test_a_worker_killed_while_it_reads_skipped_offsets_again_loses_nothing(
    deployment: Callable[..., Deployment], tmp_path: Path,
) -> None:  # fmt: skip
    faults = tmp_path / "faults.json"
    write_faults(faults, skip_fetched=2, reread_pause=30)  # the re-read waits: the worker is killed meanwhile
    d = deployment(partitions=1, faults_file=str(faults))
    worker = d.start_worker()
    traces = [genai_trace(random.Random(70 + i), 3) for i in range(8)]
    d.produce([(t[0].trace_id.hex().encode(), proto(t), 0) for t in traces])
    assert wait_for(lambda: worker.status()["counters"]["skipped_offsets"] == {d.input_topic: 2}, 60)
    time.sleep(3)  # Faust commits every second: had it recorded the gap, the commit would now be past it
    worker.proc.kill()
    worker.proc.wait(30)
    write_faults(faults)  # no faults for the next worker
    worker = d.start_worker()

    def stored() -> int:
        return int(worker.sql("SELECT count() FROM tracejudge.traces FINAL")[0][0])

    assert wait_for(lambda: stored() == len(traces), 90), f"{stored()} of {len(traces)} traces stored"
    assert int(worker.sql("SELECT count() FROM tracejudge.spans FINAL")[0][0]) == 3 * len(traces)
    assert worker.status()["counters"]["skipped_offsets"] == {}  # read the normal way from the committed offset


def test_a_worker_whose_fetches_skip_product_events_still_stores_every_event(
    deployment: Callable[..., Deployment], tmp_path: Path,
) -> None:  # fmt: skip
    faults = tmp_path / "faults.json"
    write_faults(faults, skip_fetched=2)
    d = deployment(partitions=1, faults_file=str(faults))
    worker = d.start_worker()
    topic = d.settings["TRACEJUDGE_EVENTS_TOPIC"]
    events = [json.dumps({"trace_id": f"{i:032x}", "type": "regenerate", "ts": 1795341600 + i}).encode() for i in range(6)]

    async def send() -> None:
        p = AIOKafkaProducer(bootstrap_servers=d.broker.bootstrap)
        await p.start()
        try:
            for e in events:
                await p.send_and_wait(topic, e, partition=0)
        finally:
            await p.stop()

    asyncio.run(send())

    def stored() -> int:
        return int(worker.sql("SELECT count() FROM tracejudge.action_events FINAL")[0][0])

    assert wait_for(lambda: stored() == len(events), 60), f"{stored()} of {len(events)} events stored"
    counters = worker.status()["counters"]
    assert counters["skipped_offsets"] == {topic: 2} and counters["reread_messages"] == 2


@pytest.mark.parametrize("before", [4, 1], ids=["committed-4", "committed-1"])
def test_a_restarted_worker_whose_first_fetch_skips_the_committed_offset_stores_every_trace(
    deployment: Callable[..., Deployment], tmp_path: Path, before: int,
) -> None:  # fmt: skip
    # committed 4: Faust's own seek would take offset 4 as read (7 of 8 traces stored with it);
    # committed 1: the read offset is 0, after which Faust's check sees no gap without ReadOffsets
    faults = tmp_path / "faults.json"
    write_faults(faults)  # none for the first worker
    d = deployment(partitions=1, faults_file=str(faults))
    worker = d.start_worker()
    traces = [genai_trace(random.Random(80 + i), 3) for i in range(8)]
    d.produce([(t[0].trace_id.hex().encode(), proto(t), 0) for t in traces[:before]])

    def stored() -> int:
        return int(worker.sql("SELECT count() FROM tracejudge.traces FINAL")[0][0])

    assert wait_for(lambda: stored() == before, 60), f"{stored()} of {before} traces stored"
    assert worker.stop() == 0  # a clean stop commits offset `before`: what it stored
    write_faults(faults, skip_fetched=1)  # the restarted worker's first fetched record: offset `before`
    d.produce([(t[0].trace_id.hex().encode(), proto(t), 0) for t in traces[before:]])
    worker = d.start_worker()
    assert wait_for(lambda: stored() == len(traces), 90), f"{stored()} of {len(traces)} traces stored"
    counters = worker.status()["counters"]
    assert counters["skipped_offsets"] == {d.input_topic: 1} and counters["reread_messages"] == 1
    assert f"fetched record {d.input_topic}/0@{before} skipped" in worker.log_path.read_text()


def test_a_new_group_whose_first_fetch_skips_the_head_of_the_partition_stores_every_trace(
    deployment: Callable[..., Deployment], tmp_path: Path,
) -> None:  # fmt: skip
    faults = tmp_path / "faults.json"
    write_faults(faults, skip_fetched=2)  # nothing committed yet: the first two records, offsets 0 and 1
    d = deployment(partitions=1, faults_file=str(faults))
    traces = [genai_trace(random.Random(90 + i), 3) for i in range(6)]
    d.produce([(t[0].trace_id.hex().encode(), proto(t), 0) for t in traces])
    worker = d.start_worker()

    def stored() -> int:
        return int(worker.sql("SELECT count() FROM tracejudge.traces FINAL")[0][0])

    assert wait_for(lambda: stored() == len(traces), 90), f"{stored()} of {len(traces)} traces stored"
    counters = worker.status()["counters"]
    assert counters["skipped_offsets"] == {d.input_topic: 2} and counters["reread_messages"] == 2
    log = worker.log_path.read_text()
    assert f"fetched record {d.input_topic}/0@0 skipped" in log and f"offsets 0-1 of {d.input_topic}/0" in log
