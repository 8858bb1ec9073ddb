"""Pipeline logic with an injected clock, on real embedded ClickHouse (the Kafka side is covered
end to end in test_worker_e2e.py; here a list stands in for the producer)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Sequence
from typing import Any

import pytest

from stream.config import Settings
from stream.dlq import REASON, InMessage, OutRecord
from stream.pipeline import Pipeline
from stream.sink import ClickHouseSink
from stream.store import ClickHouseStore
from tests.factories import T0, genai_trace, otlp_json, proto

S = 1_000_000_000
TOPIC = "otlp_spans"


class ListProducer:
    def __init__(self) -> None:
        self.records: list[OutRecord] = []

    async def send_all(self, records: Sequence[OutRecord]) -> None:
        self.records.extend(records)


class FlakySink(ClickHouseSink):
    """The real sink, failing the first ``failures`` span writes (a ClickHouse outage)."""

    def __init__(self, store: ClickHouseStore, failures: int) -> None:
        super().__init__(store)
        self.failures = failures

    async def write_spans(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("ClickHouse unavailable")
        await super().write_spans(rows, dedup_token)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000 * S

    def __call__(self) -> int:
        return self.now


async def no_sleep(_: float) -> None:
    return None


def make(store: ClickHouseStore, sink: ClickHouseSink | None = None, **kw: Any) -> tuple[Pipeline, ListProducer, Clock]:
    settings = Settings(clickhouse_database=store.database, decision_wait=5, **kw)
    producer, clock = ListProducer(), Clock()
    return Pipeline(settings, sink or ClickHouseSink(store), producer, clock=clock, sleep=no_sleep), producer, clock


def msg(value: bytes, offset: int, key: bytes | None = None, partition: int = 0, ts_ms: int | None = None) -> InMessage:
    return InMessage(TOPIC, partition, offset, key, value, ts_ms)


def count(store: ClickHouseStore, sql: str) -> int:
    return int(store.query(sql.format(db=store.database))[1][0][0])


def test_keyed_messages_are_ingested_and_completed(store: ClickHouseStore) -> None:
    p, producer, clock = make(store)
    traces = [genai_trace(random.Random(i), 6) for i in range(3)]
    batch = [msg(proto(t), i, key=t[0].trace_id.hex().encode()) for i, t in enumerate(traces)]
    asyncio.run(p.handle_batch(batch))
    assert producer.records == []
    assert count(store, "SELECT count() FROM {db}.spans FINAL") == 18
    assert asyncio.run(p.tick()) == 0
    clock.now += 5 * S
    assert asyncio.run(p.tick()) == 3
    assert count(store, "SELECT count() FROM {db}.traces FINAL WHERE span_count = 6") == 3


@pytest.mark.parametrize("encode", [proto, otlp_json])
def test_unkeyed_batches_are_split_per_trace_for_repartitioning(store: ClickHouseStore, encode: Any) -> None:
    """OTLP/JSON too: read straight into spans, its parts are cut from the request parsed again."""
    p, producer, _ = make(store)
    traces = [genai_trace(random.Random(i), 4) for i in range(3)]
    asyncio.run(p.handle_batch([msg(encode([s for t in traces for s in t]), 0)]))
    assert count(store, "SELECT count() FROM {db}.spans") == 0  # nothing stored here...
    keys = sorted(r.key for r in producer.records)  # ...one keyed message per trace instead
    assert keys == sorted(t[0].trace_id.hex().encode() for t in traces)
    assert {r.topic for r in producer.records} == {p.settings.repartition_topic}
    # the repartitioned messages are what partition_traces_by_id would have produced
    p2, producer2, _ = make(store)
    asyncio.run(p2.handle_batch([msg(r.value, i, r.key) for i, r in enumerate(producer.records)], repartition=False))
    assert count(store, "SELECT count() FROM {db}.spans FINAL") == 12 and producer2.records == []


@pytest.mark.parametrize("encode", [proto, otlp_json])
def test_a_large_trace_goes_to_the_repartition_topic_in_parts_under_the_limit(store: ClickHouseStore, encode: Any) -> None:
    limit = 60_000
    p, producer, _ = make(store, max_repartition_message_bytes=limit)
    big, small = genai_trace(random.Random(30), 10), genai_trace(random.Random(31), 3)
    for s in big:  # ~20 KB of conversation per span
        s.attrs["gen_ai.input.messages"] = '[{"role":"user","parts":[{"type":"text","content":"' + "q" * 20_000 + '"}]}]'
    asyncio.run(p.handle_batch([msg(encode(big + small), 0)]))
    parts = [r for r in producer.records if r.key == big[0].trace_id.hex().encode()]
    assert len(parts) >= 4 and all(len(r.value) <= limit for r in parts)
    assert len([r for r in producer.records if r.key == small[0].trace_id.hex().encode()]) == 1
    # read back as the repartition topic's messages: every span once, one trace of 10 spans
    p2, _, clock2 = make(store)
    asyncio.run(p2.handle_batch([msg(r.value, i, r.key) for i, r in enumerate(producer.records)], repartition=False))
    clock2.now += 10 * S
    assert asyncio.run(p2.tick()) == 2
    assert count(store, "SELECT count() FROM {db}.spans FINAL") == 13
    assert count(store, "SELECT span_count FROM {db}.traces FINAL WHERE trace_id = '%s'" % big[0].trace_id.hex()) == 10


def test_otlp_json_not_in_the_collectors_shape_is_stored_counted_and_logged_once(
    store: ClickHouseStore, caplog: pytest.LogCaptureFixture
) -> None:
    """snake_case keys are valid protobuf JSON but not what the fast reader reads: the message takes
    protobuf's JSON parser (~10x the CPU), which an operator must be able to see."""
    def snake_case(trace: Any) -> bytes:
        doc = json.loads(otlp_json(trace))
        for span in doc["resourceSpans"][0]["scopeSpans"][0]["spans"]:
            span["span_id"] = span.pop("spanId")
        return json.dumps(doc).encode()

    p, producer, _ = make(store)
    traces = [genai_trace(random.Random(70 + i), 3) for i in range(4)]
    values = [otlp_json(traces[0]), proto(traces[1]), snake_case(traces[2]), snake_case(traces[3])]
    with caplog.at_level(logging.WARNING, logger="stream.input_message"):
        asyncio.run(p.handle_batch([msg(v, i, t[0].trace_id.hex().encode()) for i, (v, t) in enumerate(zip(values, traces))]))
    assert p.counters.otlp_json_slow_messages == 2  # not the Collector-shaped JSON, not protobuf
    assert caplog.text.count("is not in the shape") == 1 and f"{TOPIC}/0@2 " in caplog.text
    assert count(store, "SELECT count() FROM {db}.spans FINAL") == 12 and producer.records == []


def test_bad_messages_are_dead_lettered_and_good_ones_still_stored(store: ClickHouseStore) -> None:
    p, producer, _ = make(store)
    good = genai_trace(random.Random(1), 3)
    asyncio.run(p.handle_batch([msg(b"\xffjunk", 0), msg(proto(good), 1, good[0].trace_id.hex().encode()), msg(b"", 2)]))
    reasons = [dict(r.headers)[REASON] for r in producer.records]
    assert reasons == [b"undecodable", b"empty_message"]
    assert [r.value for r in producer.records] == [b"\xffjunk", b""]
    assert count(store, "SELECT count() FROM {db}.spans FINAL") == 3
    assert p.counters.dead_lettered == 2


def test_clickhouse_outage_is_retried_until_stored(store: ClickHouseStore, caplog: pytest.LogCaptureFixture) -> None:
    sink = FlakySink(store, failures=3)
    p, _, _ = make(store, sink=sink)
    t = genai_trace(random.Random(2), 5)
    with caplog.at_level(logging.WARNING, logger="stream.retry"):
        asyncio.run(p.handle_batch([msg(proto(t), 0, t[0].trace_id.hex().encode())]))
    assert p.counters.write_retries == 3
    assert caplog.text.count(f"insert spans of {TOPIC}[0]@0 failed") == 3  # the offsets to look at
    assert count(store, "SELECT count() FROM {db}.spans") == 5


def test_a_replay_is_stored_once_and_new_messages_at_reused_offsets_are_stored(store: ClickHouseStore) -> None:
    """Offsets restart at 0 when a topic is recreated or a memory-only broker restarts: the new
    messages must not be dropped as duplicates of the old inserts at the same offsets."""
    def batch(seed: int, ts_ms: int) -> list[InMessage]:
        traces = [genai_trace(random.Random(seed + i), 4) for i in range(2)]
        return [msg(proto(t), i, t[0].trace_id.hex().encode(), ts_ms=ts_ms + i) for i, t in enumerate(traces)]

    first = batch(20, 1_700_000_000_000)
    asyncio.run(make(store)[0].handle_batch(first))
    asyncio.run(make(store)[0].handle_batch(first))  # redelivered after a crash: same messages
    assert count(store, "SELECT count() FROM {db}.spans") == 8  # the second insert was dropped
    # the topic was recreated: other messages, written later, at the same offsets
    asyncio.run(make(store)[0].handle_batch(batch(30, 1_700_000_600_000)))
    assert count(store, "SELECT uniqExact(trace_id) FROM {db}.spans FINAL") == 4
    assert count(store, "SELECT count() FROM {db}.spans FINAL") == 16


def test_state_is_recovered_from_clickhouse_by_the_next_owner(store: ClickHouseStore) -> None:
    p, _, clock = make(store)
    open_trace = genai_trace(random.Random(3), 5)
    done_trace = genai_trace(random.Random(4), 3)
    asyncio.run(p.handle_batch([
        msg(proto(done_trace), 0, done_trace[0].trace_id.hex().encode()),
        msg(proto(open_trace[1:]), 1, open_trace[0].trace_id.hex().encode()),  # no root yet
    ]))  # fmt: skip
    clock.now += 6 * S
    assert asyncio.run(p.tick()) == 1

    # a new worker (same store) gets the partition: the open trace comes back from ClickHouse
    p2, _, clock2 = make(store)
    clock2.now = clock.now
    asyncio.run(p2.on_partitions_assigned({(TOPIC, 0), ("other", 0)}))
    assert p2.counters.traces_recovered == 1 and len(p2.assembler) == 1
    assert p2.assembler.decided(done_trace[0].trace_id.hex()) is not None
    # a redelivered old message is a replay; the root completes the recovered trace
    asyncio.run(p2.handle_batch([
        msg(proto(done_trace), 0, done_trace[0].trace_id.hex().encode()),
        msg(proto(open_trace[:1]), 2, open_trace[0].trace_id.hex().encode()),
    ]))  # fmt: skip
    assert p2.counters.late_spans == 0 and p2.counters.replayed_spans == 3
    clock2.now += 6 * S
    assert asyncio.run(p2.tick()) == 1
    rows = dict(store.query(f"SELECT trace_id, span_count FROM {store.database}.traces FINAL")[1])
    assert rows == {open_trace[0].trace_id.hex(): 5, done_trace[0].trace_id.hex(): 3}


def test_late_span_is_stored_flagged_and_does_not_reopen(store: ClickHouseStore) -> None:
    p, _, clock = make(store)
    t = genai_trace(random.Random(5), 4)
    key = t[0].trace_id.hex().encode()
    asyncio.run(p.handle_batch([msg(proto(t[:3]), 0, key)]))
    clock.now += 6 * S
    asyncio.run(p.tick())
    asyncio.run(p.handle_batch([msg(proto(t[3:]), 1, key)]))
    assert p.counters.late_spans == 1 and len(p.assembler) == 0
    assert count(store, "SELECT countIf(is_late = 1) FROM {db}.spans FINAL") == 1
    assert count(store, "SELECT span_count FROM {db}.traces FINAL") == 3


def test_a_copy_of_a_stored_span_delivered_again_after_its_trace_completed_is_not_late(store: ClickHouseStore) -> None:
    """A Collector retrying a batch Kafka had taken, or a dead letter replayed, delivers the
    spans again at a new offset after the trace was decided. Stored as late, a copy replaced the
    on-time row (the table keeps the last row of a key): recovery, judging by reference and
    export-cases, which read on-time spans, lost it. A truly new span is still late."""
    p, _, clock = make(store)
    t = genai_trace(random.Random(6), 4)
    key = t[0].trace_id.hex().encode()
    asyncio.run(p.handle_batch([msg(proto(t[:3]), 0, key)]))
    clock.now += 6 * S
    asyncio.run(p.tick())
    assert len(p.assembler) == 0  # decided
    asyncio.run(p.handle_batch([msg(proto(t), 1, key)]))  # the first 3 again, and one new span
    assert (p.counters.late_spans, p.counters.replayed_spans) == (1, 3)
    on_time = "SELECT count() FROM {db}.spans FINAL WHERE is_late = 0"
    assert count(store, on_time) == 3 and count(store, "SELECT countIf(is_late = 1) FROM {db}.spans FINAL") == 1
    store.command(f"OPTIMIZE TABLE {store.database}.spans FINAL")
    assert count(store, on_time) == 3  # merged: still on time


def test_a_late_span_of_a_trace_the_decided_cache_forgot_is_looked_up_and_does_not_reopen(
    store: ClickHouseStore,
) -> None:
    """Only the latest ``decided_cache_size`` decisions are remembered. A span older than the oldest
    of them (less ``max_trace_age``) whose trace is neither open nor remembered may belong to a
    trace decided long ago: its decision is looked up in ClickHouse, and the span is late."""
    p, _, clock = make(store, decided_cache_size=2)
    clock.now = T0 + 2_200 * S  # the workers' clock, well after the traces' spans
    first, *others = [genai_trace(random.Random(20 + i), 3) for i in range(3)]
    for i, t in enumerate([first, *others]):  # decided one after the other: the cache keeps the last two
        asyncio.run(p.handle_batch([msg(proto(t[:2]), i, t[0].trace_id.hex().encode())]))
        clock.now += 6 * S
        assert asyncio.run(p.tick()) == 1
    tid = first[0].trace_id.hex()
    assert p.assembler.decided(tid) is None and p.assembler.decided_horizon_ns is not None
    [(completed,)] = store.query(f"SELECT completed_at FROM {store.database}.traces FINAL WHERE trace_id = {{t:String}}",
                                 {"t": tid})[1]  # fmt: skip
    asyncio.run(p.handle_batch([msg(proto(first[2:]), 3, tid.encode())]))
    assert p.counters.late_spans == 1 and len(p.assembler) == 0  # not opened again
    assert p.assembler.decided(tid) is not None  # remembered from the store
    clock.now += 6 * S
    assert asyncio.run(p.tick()) == 0
    assert store.query(f"SELECT span_count, completed_at FROM {store.database}.traces FINAL WHERE trace_id = {{t:String}}",
                       {"t": tid})[1] == [(2, completed)]  # fmt: skip
    assert count(store, "SELECT countIf(is_late = 1) FROM {db}.spans FINAL") == 1


@pytest.mark.parametrize("policy,stored,dead", [("truncate", 2, 0), ("dead_letter", 0, 1)])
def test_oversize_attribute_policy(store: ClickHouseStore, policy: str, stored: int, dead: int) -> None:
    p, producer, _ = make(store, max_attribute_bytes=1024, oversize_attribute_policy=policy)
    t = genai_trace(random.Random(6), 2)
    t[1].attrs["huge"] = "y" * 5000
    asyncio.run(p.handle_batch([msg(proto(t), 0, t[0].trace_id.hex().encode())]))
    assert count(store, "SELECT count() FROM {db}.spans FINAL") == stored
    assert len(producer.records) == dead
