"""Rows ClickHouse refuses, at the pipeline level on real embedded ClickHouse: their messages are
dead-lettered and the rest stored; a table that refuses every row (a schema change) holds its
partition instead, also for a worker that has stored nothing yet (stream/refused_rows.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

import pytest

from stream.config import Settings
from stream.dlq import DETAIL, REASON, SOURCE_OFFSET, InMessage
from stream.events import EventJoiner
from stream.pipeline import Pipeline
from stream.sink import ClickHouseSink
from stream.store import ClickHouseStore
from tests.factories import genai_trace, proto
from tests.stream.test_pipeline import S, ListProducer, count, make, msg, no_sleep


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


def test_a_new_worker_asks_a_reference_row_about_a_constraint_when_the_table_holds_no_recent_row(
    store: ClickHouseStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A new or quiet deployment: nothing stored since start and no recent row to evaluate the
    refusal's CHECK constraint over. The reference row is asked instead: a constraint it breaks
    too refuses what the worker writes (held until mended); one it meets refuses bad data
    (dead-lettered). It dead-lettered both before."""
    settings = Settings(clickhouse_database=store.database, decision_wait=5)
    traces = [genai_trace(random.Random(97 + i), 4) for i in range(2)]
    held_by_a_new_worker(store, caplog, traces[0], "ADD CONSTRAINT expected CHECK name = 'expected'",
                         "DROP CONSTRAINT expected", "a reference row the worker builds from fixed content")  # fmt: skip
    assert count(store, "SELECT count() FROM {db}.spans FINAL") == 4

    store.command(f"TRUNCATE TABLE {store.database}.spans SYNC")  # no recent row again
    store.command(f"ALTER TABLE {store.database}.spans ADD CONSTRAINT no_poison CHECK name NOT LIKE 'poison%'")
    for s in traces[1]:
        s.name = "poison"
    dead_lettered_by_a_new_worker(store, traces[1])

    # product events the same way, on an empty action_events
    body = lambda t: json.dumps({"trace_id": t, "type": "regenerate", "ts": 1795341600}).encode()  # noqa: E731
    store.command(f"ALTER TABLE {store.database}.action_events ADD CONSTRAINT expected CHECK type = 'expected'")
    fresh = Pipeline(settings, ClickHouseSink(store), producer := ListProducer(),
                     sleep=FixAfter(1, "ALTER TABLE {db}.action_events DROP CONSTRAINT expected", store))  # fmt: skip
    fresh.events = EventJoiner(store, "events.dlq", ["regenerate"], 60)
    asyncio.run(fresh.handle_events([InMessage("events", 0, 0, None, body("ab" * 16))]))
    assert producer.records == [] and fresh.counters.write_retries == 1 and fresh.counters.action_events == 1

    store.command(f"TRUNCATE TABLE {store.database}.action_events SYNC")
    store.command(f"ALTER TABLE {store.database}.action_events ADD CONSTRAINT no_cd CHECK trace_id != repeat('cd', 16)")
    fresh = Pipeline(settings, ClickHouseSink(store), producer := ListProducer(), sleep=no_sleep)
    fresh.events = EventJoiner(store, "events.dlq", ["regenerate"], 60)
    asyncio.run(fresh.handle_events([InMessage("events", 0, 1, None, body("cd" * 16))]))
    assert [dict(r.headers)[REASON] for r in producer.records] == [b"insert_rejected"]
    assert fresh.counters.write_retries == 0 and fresh.counters.action_events == 0
