"""Pipeline logic with an injected clock, on real embedded ClickHouse (the Kafka side is covered
end to end in test_worker_e2e.py; here a list stands in for the producer)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import pytest

from stream.config import Settings
from stream.dlq import DETAIL, REASON, SOURCE_OFFSET, InMessage, OutRecord
from stream.events import EventJoiner
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


def test_a_span_clickhouse_refuses_dead_letters_its_message_and_every_other_span_is_stored(
    store: ClickHouseStore,
) -> None:
    """A real refusal: a CHECK constraint on ``spans`` (as an unforeseen value would meet one). The
    partition goes on: the message is dead-lettered (``insert_rejected``), its other spans stored."""
    store.command(f"ALTER TABLE {store.database}.spans ADD CONSTRAINT no_poison CHECK name != 'poison'")
    p, producer, clock = make(store, insert_chunk_spans=100_000)
    traces = [genai_trace(random.Random(60 + i), 4) for i in range(3)]
    traces[1][2].name = "poison"
    batch = [msg(proto(t), i, t[0].trace_id.hex().encode()) for i, t in enumerate(traces)]
    asyncio.run(p.handle_batch(batch))
    [letter] = producer.records
    headers = dict(letter.headers)
    assert headers[REASON] == b"insert_rejected" and headers[SOURCE_OFFSET] == b"1" and letter.value == batch[1].value
    detail = headers[DETAIL].decode()
    assert f"span {traces[1][2].span_id.hex()} of trace {traces[1][2].trace_id.hex()}" in detail
    assert "refused 1 of the message's 4 spans" in detail and "VIOLATED_CONSTRAINT" in detail
    assert count(store, "SELECT count() FROM {db}.spans FINAL") == 11
    assert count(store, "SELECT count() FROM {db}.spans FINAL WHERE name = 'poison'") == 0
    assert (p.counters.refused_rows, p.counters.spans_stored, p.counters.dead_lettered) == ({"spans": 1}, 11, 1)
    assert p.counters.dead_letter_reasons == {"insert_rejected": 1} and p.counters.write_retries == 0
    # the trace still completes, judged on all of its spans (the refused one is in the dead letter)
    clock.now += 5 * S
    assert asyncio.run(p.tick()) == 3
    # once the schema takes it, the dead letter replayed stores the refused span (and the others once)
    store.command(f"ALTER TABLE {store.database}.spans DROP CONSTRAINT no_poison")
    p2, producer2, _ = make(store)
    asyncio.run(p2.handle_batch([msg(letter.value or b"", 7, letter.key)]))
    assert producer2.records == [] and count(store, "SELECT count() FROM {db}.spans FINAL") == 12


def test_product_events_clickhouse_refuses_are_dead_lettered_and_the_others_stored_in_one_insert(
    store: ClickHouseStore,
) -> None:
    """The refused events are found in one query over a scratch copy of `action_events` (a violated
    CHECK constraint): the table itself gets the whole insert (refused) and one insert of the rest."""
    store.command(f"ALTER TABLE {store.database}.action_events ADD CONSTRAINT no_poison CHECK conversation_id != 'x'")
    events = EventJoiner(store, "events.dlq", ["regenerate"], 60)
    p, producer, _ = make(store)
    p.events = events
    body = lambda i, conv: json.dumps({"trace_id": f"{i:032x}", "type": "regenerate", "ts": 1795341600,  # noqa: E731
                                       "conversation_id": conv}).encode()  # fmt: skip
    poison = {2, 9, 10, 23, 39}
    batch = [InMessage("events", 0, i, None, body(i, "x" if i in poison else "c")) for i in range(40)]
    asyncio.run(p.handle_events(batch))
    assert [int(dict(r.headers)[SOURCE_OFFSET]) for r in producer.records] == sorted(poison)
    letter = producer.records[0]
    headers = dict(letter.headers)
    assert letter.topic == "events.dlq" and letter.value == batch[2].value
    assert headers[REASON] == b"insert_rejected" and b"VIOLATED_CONSTRAINT" in headers[DETAIL]
    assert b"action_events" in headers[DETAIL] and b"_copy_" not in headers[DETAIL]  # names the table
    assert count(store, "SELECT count() FROM {db}.action_events") == 35  # raw: one part, no duplicate
    assert count(store, "SELECT count() FROM {db}.action_events FINAL WHERE conversation_id = 'x'") == 0
    assert (p.counters.action_events, p.counters.dead_lettered, p.counters.write_retries) == (35, 5, 0)
    assert p.counters.refused_rows == {"action_events": 5}
    stats = store.insert_stats()
    assert (stats["action_events"]["inserts"], stats["action_events"]["failures"]) == (1, 1)
    assert stats["action_events (constraints)"]["inserts"] == 1 and "action_events (copy)" not in stats
    tables = "SELECT count() FROM system.tables WHERE database = '{db}' AND match(name, '_(copy|check)_')"
    assert count(store, tables) == 0  # the copy and the scratch table are gone


class FixAfter:
    """A retry's sleep that runs ``fix`` (the operator mending the schema) at its ``n``-th call."""

    def __init__(self, n: int, fix: str, store: ClickHouseStore) -> None:
        self.n, self.fix, self.store, self.calls = n, fix, store, 0

    async def __call__(self, _: float) -> None:
        self.calls += 1
        if self.calls == self.n:
            self.store.command(self.fix.format(db=self.store.database))


def test_at_low_traffic_a_table_refusing_every_row_holds_its_partition_instead_of_dead_lettering(
    store: ClickHouseStore, caplog: pytest.LogCaptureFixture
) -> None:
    """One message per insert, too few rows to tell a schema problem by refused parts: once `spans`
    (and `action_events`) take no row the worker writes, the rows they took before are refused too,
    so the inserts wait, retried, and nothing is dead-lettered."""
    settings = Settings(clickhouse_database=store.database, decision_wait=5)
    fix = FixAfter(2, "ALTER TABLE {db}.spans DROP CONSTRAINT expected", store)
    p = Pipeline(settings, ClickHouseSink(store), producer := ListProducer(), sleep=fix)
    p.events = EventJoiner(store, "events.dlq", ["regenerate"], 60)
    traces = [genai_trace(random.Random(70 + i), 4) for i in range(2)]
    asyncio.run(p.handle_batch([msg(proto(traces[0]), 0, traces[0][0].trace_id.hex().encode())]))
    store.command(f"ALTER TABLE {store.database}.spans ADD CONSTRAINT expected CHECK name = 'expected'")
    with caplog.at_level(logging.ERROR, logger="stream.refused_rows"):
        asyncio.run(p.handle_batch([msg(proto(traces[1]), 1, traces[1][0].trace_id.hex().encode())]))
    assert producer.records == [] and p.counters.write_retries == 2 and p.counters.refused_rows == {}
    assert count(store, "SELECT count() FROM {db}.spans FINAL") == 8
    assert "refuses each of the 4 rows of insert spans of otlp_spans[0]@1" in caplog.text

    body = lambda i: json.dumps({"trace_id": f"{i:032x}", "type": "regenerate", "ts": 1795341600}).encode()  # noqa: E731
    asyncio.run(p.handle_events([InMessage("events", 0, 0, None, body(0))]))
    store.command(f"ALTER TABLE {store.database}.action_events ADD CONSTRAINT expected CHECK type = 'expected'")
    p.sleep = FixAfter(1, "ALTER TABLE {db}.action_events DROP CONSTRAINT expected", store)
    asyncio.run(p.handle_events([InMessage("events", 0, 1, None, body(1))]))
    assert producer.records == [] and p.counters.write_retries == 3 and p.counters.action_events == 2
    assert count(store, "SELECT count() FROM {db}.action_events FINAL") == 2
    tables = "SELECT count() FROM system.tables WHERE database = '{db}' AND position(name, '_copy_') > 0"
    assert count(store, tables) == 0  # the copies asked are gone


def held_by_a_new_worker(store: ClickHouseStore, caplog: pytest.LogCaptureFixture, trace: list[Any], change: str,
                         undo: str, evidence: str) -> None:  # fmt: skip
    """After ``ALTER TABLE spans {change}``, a worker that has stored nothing holds ``trace``'s
    insert, saying why (``evidence``), until the operator runs ``{undo}`` (at the second retry)."""
    store.command(f"ALTER TABLE {store.database}.spans {change}")
    settings = Settings(clickhouse_database=store.database, decision_wait=5)
    fix = FixAfter(2, f"ALTER TABLE {{db}}.spans {undo}", store)
    fresh = Pipeline(settings, ClickHouseSink(store), producer := ListProducer(), sleep=fix)
    with caplog.at_level(logging.ERROR, logger="stream.refused_rows"):
        asyncio.run(fresh.handle_batch([msg(proto(trace), 1, trace[0].trace_id.hex().encode())]))
    assert producer.records == [] and fresh.counters.write_retries == 2 and fresh.counters.refused_rows == {}
    assert f"{evidence} (nothing stored since start)" in caplog.text


def dead_lettered_by_a_new_worker(store: ClickHouseStore, trace: list[Any]) -> None:
    """A worker that has stored nothing dead-letters ``trace``'s message: its spans are bad data."""
    settings = Settings(clickhouse_database=store.database, decision_wait=5)
    fresh = Pipeline(settings, ClickHouseSink(store), producer := ListProducer(), sleep=no_sleep)
    asyncio.run(fresh.handle_batch([msg(proto(trace), 2, trace[0].trace_id.hex().encode())]))
    assert [dict(r.headers)[REASON] for r in producer.records] == [b"insert_rejected"]
    assert fresh.counters.refused_rows == {"spans": len(trace)} and fresh.counters.write_retries == 0


def test_a_new_worker_tells_a_constraint_newer_than_the_stored_data_from_bad_data(
    store: ClickHouseStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that has stored nothing since it started knows no row the table took: the spans
    an earlier worker stored tell it instead. A constraint they all break refuses what the table
    took before (held, retried until mended); one they meet refuses bad data (dead-lettered)."""
    settings = Settings(clickhouse_database=store.database, decision_wait=5)
    traces = [genai_trace(random.Random(90 + i), 4) for i in range(3)]
    shift = time.time_ns() - 3_600_000_000_000 - min(s.start for t in traces for s in t)
    for s in (s for t in traces for s in t):  # recent spans: the rows a new worker looks at
        s.start, s.end = s.start + shift, s.end + shift
    asyncio.run(make(store)[0].handle_batch([msg(proto(traces[0]), 0, traces[0][0].trace_id.hex().encode())]))
    held_by_a_new_worker(store, caplog, traces[1], "ADD CONSTRAINT expected CHECK name = 'expected'",
                         "DROP CONSTRAINT expected", "recent rows it holds break the same CHECK constraint")  # fmt: skip
    assert count(store, "SELECT count() FROM {db}.spans FINAL") == 8

    store.command(f"ALTER TABLE {store.database}.spans ADD CONSTRAINT no_poison CHECK name NOT LIKE 'poison%'")
    for s in traces[2]:
        s.name = "poison"
    dead_lettered_by_a_new_worker(store, traces[2])

    # product events the same way: events an earlier worker stored tell a new one
    body = lambda i: json.dumps({"trace_id": f"{i:032x}", "type": "regenerate", "ts": 1795341600}).encode()  # noqa: E731
    earlier = Pipeline(settings, ClickHouseSink(store), ListProducer())  # the real clock: stored now
    earlier.events = EventJoiner(store, "events.dlq", ["regenerate"], 60)
    asyncio.run(earlier.handle_events([InMessage("events", 0, 0, None, body(0))]))
    store.command(f"ALTER TABLE {store.database}.action_events ADD CONSTRAINT expected CHECK type = 'expected'")
    fresh = Pipeline(settings, ClickHouseSink(store), producer := ListProducer(),
                     sleep=FixAfter(1, "ALTER TABLE {db}.action_events DROP CONSTRAINT expected", store))  # fmt: skip
    fresh.events = EventJoiner(store, "events.dlq", ["regenerate"], 60)
    asyncio.run(fresh.handle_events([InMessage("events", 0, 1, None, body(1))]))
    assert producer.records == [] and fresh.counters.write_retries == 1 and fresh.counters.action_events == 1


def test_a_new_worker_tells_a_column_type_change_from_bad_data_by_a_reference_row(
    store: ClickHouseStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing stored yet, and a refusal that names no CHECK constraint (a column's type changed):
    the worker asks the table's copy for a row it builds from fixed content (stream/reference_rows.py).
    Refused too: the table no longer takes what the worker writes (held, retried until mended).
    Taken: the refused rows are bad data (dead-lettered)."""
    settings = Settings(clickhouse_database=store.database, decision_wait=5)
    traces = [genai_trace(random.Random(95 + i), 4) for i in range(2)]
    # the operator changed a column's type: no span name the worker writes fits any more
    held_by_a_new_worker(store, caplog, traces[0], "MODIFY COLUMN name UInt64", "MODIFY COLUMN name String",
                         "a reference row the worker builds from fixed content")  # fmt: skip
    assert count(store, "SELECT count() FROM {db}.spans FINAL") == 4

    # names of at most 16 bytes fit (the reference row's is 16): longer ones are bad data
    store.command(f"TRUNCATE TABLE {store.database}.spans SYNC")  # the stored names are longer
    store.command(f"ALTER TABLE {store.database}.spans MODIFY COLUMN name FixedString(16)")
    for s in traces[1]:
        s.name = "a span name longer than sixteen bytes"
    dead_lettered_by_a_new_worker(store, traces[1])

    # product events the same way: a reference event, refused too, holds the insert
    store.command(f"ALTER TABLE {store.database}.action_events MODIFY COLUMN type UInt64")
    fresh = Pipeline(settings, ClickHouseSink(store), producer := ListProducer(),
                     sleep=FixAfter(1, "ALTER TABLE {db}.action_events MODIFY COLUMN type LowCardinality(String)", store))  # fmt: skip
    fresh.events = EventJoiner(store, "events.dlq", ["regenerate"], 60)
    body = json.dumps({"trace_id": "ab" * 16, "type": "regenerate", "ts": 1795341600}).encode()
    asyncio.run(fresh.handle_events([InMessage("events", 0, 0, None, body)]))
    assert producer.records == [] and fresh.counters.write_retries == 1 and fresh.counters.action_events == 1


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
