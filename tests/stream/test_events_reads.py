"""Which stored product events a trace's join reads, on real embedded ClickHouse: the newest
stored version of a trace and of an event, reads bounded by the time since the chunk's traces
started (a backlog's by key), and a store upgraded past migration 0010."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from schemas.model import Trace
from stream.events import AGENT_CLOCK_SKEW_MS, EventJoiner
from stream.policy import load_policy
from stream.signals.actions import parse_event
from stream.store import ClickHouseStore
from stream.stored_events import EVENT_COLUMNS, StoredEvent
from tests.factories import genai_trace
from tests.stream.test_events import NOW_MS, S, action_rows, as_trace, event_msg, pipeline, start


def test_the_newest_stored_version_of_a_trace_and_of_an_event_is_the_one_joined(store: ClickHouseStore) -> None:
    """The joins read without FINAL (so that projections serve them) and keep the newest version
    themselves: a trace row stored again later, an event linked late, then sent again."""
    p, _, clock = pipeline(store)
    trace = genai_trace(random.Random(5), 3)
    tid = trace[0].trace_id.hex()
    start(p, clock, trace)
    assert asyncio.run(p.tick()) == 1
    [(completed,)] = store.query(f"SELECT completed_at FROM {store.database}.traces")[1]
    # the trace completed again (a replay after a crash, say), decided by a newer policy,
    for years, version in ((1, "policy-2"), (-1, "policy-0")):  # and a stale copy stored last
        store.insert("traces", [[tid, completed.replace(year=completed.year + years), version]],
                     ["trace_id", "completed_at", "policy_version"])  # fmt: skip
    joiner = p.events
    assert joiner is not None
    m = event_msg(11, trace, "trace")
    stored = StoredEvent.of(m, parse_event(m.value, joiner.known), NOW_MS)
    store.insert("action_events", [stored.row()], EVENT_COLUMNS)
    assert joiner.link_late([stored]) == 1
    assert action_rows(store, "signals", "trace_id, signal_key, is_late, policy_version") == [
        (tid, "ev-11", 1, "policy-2")]  # fmt: skip
    [(e, late)] = joiner.stored_for([as_trace(trace)])
    assert (e.linked, late) == (tid, True)  # the linked row, stored after the unlinked one
    # the same event sent again (a new message): stored later, unlinked, and that is what is read
    again = StoredEvent.of(event_msg(12, trace, "trace"), stored.event, NOW_MS + 1_000)
    store.insert("action_events", [again.row()], EVENT_COLUMNS)
    [(e, late)] = joiner.stored_for([as_trace(trace)])
    assert (e.offset, e.linked, late) == (12, "", False)


def test_a_chunk_reads_only_the_events_stored_since_its_traces_started(store: ClickHouseStore) -> None:
    """The chunk reads (before the decision, and the re-check) ask for the events stored since the
    chunk's oldest trace start less AGENT_CLOCK_SKEW_MS: the parts stored before are not read, so
    the read does not grow with the table. An event stored before that is not read — the clock
    assumption README's "Known limits" states. A chunk of traces that started long ago (a backlog)
    looks its events up by key, with no time bound."""
    trace = genai_trace(random.Random(7), 3)
    t = as_trace(trace)
    start_ms, tid, conv = t.start_ns // 1_000_000, t.trace_id, t.conversation_id
    assert conv
    joiner = EventJoiner(store, "events.dlq", load_policy(None).action_signals, 60, clock=lambda: t.start_ns + 60 * S)
    day = 86_400_000
    for k in range(3):  # history: 3 inserts (parts) of events about other traces, days before
        store.insert("action_events", [(f"old-{k}-{i}", f"{i:032x}", f"conv-{i}", "regenerate", start_ms - (k + 2) * day,
                                        "{}", "", 0, "events", 0, i, start_ms - (k + 2) * day) for i in range(4_000)],
                     EVENT_COLUMNS)  # fmt: skip

    def event(event_id: str, by_trace: bool, ingested_ms: int) -> tuple[Any, ...]:
        return (event_id, tid if by_trace else "", conv, "thumbs_down", start_ms + 1_000, "{}", "", 0, "events", 0, 0,
                ingested_ms)  # fmt: skip

    skew = AGENT_CLOCK_SKEW_MS
    store.insert("action_events", [event("by-trace", True, start_ms + 2_000), event("by-conv", False, start_ms - skew),
                                   event("too-early", True, start_ms - skew - 1)], EVENT_COLUMNS)  # fmt: skip
    calls: list[tuple[str, dict[str, Any]]] = []
    query = store.query

    def spy(sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> Any:
        calls.append((sql, parameters or {}))
        return query(sql, parameters, settings)

    def read(j: EventJoiner, x: Trace) -> list[str]:
        calls.clear()
        store.query = spy  # type: ignore[method-assign]
        try:
            return sorted(s.event.event_id for s, _ in j.stored_for([x]))
        finally:
            store.query = query  # type: ignore[method-assign]

    assert read(joiner, t) == ["by-conv", "by-trace"] and len(calls) == 1
    assert [x.type for x in joiner.signals_for([t])[tid]] == ["thumbs_down", "thumbs_down"]
    # the same read again, with what ClickHouse says it read: the newest part's rows, not the 12,000 before
    sql, params = calls[0]
    summary = store._executor.submit(lambda: store._client.query(sql, parameters=params).summary).result()
    assert int(summary["read_rows"]) <= 3, summary
    # an agent whose clock runs 30 minutes ahead: the worker saw its first span at what the agent
    # calls start - 30 min, and the events stored since then less the skew are read
    ahead = Trace.fast(trace_id=tid, spans=t.spans, completion_reason="timeout", first_seen_ns=t.start_ns - 1_800 * S)
    assert read(joiner, ahead) == ["by-conv", "by-trace", "too-early"] and len(calls) == 1
    # the same trace decided two hours after it started (a backlog): looked up by trace and by
    # conversation, with no time bound
    late = EventJoiner(store, "events.dlq", load_policy(None).action_signals, 60, clock=lambda: t.start_ns + 7_200 * S)
    assert read(late, t) == ["by-conv", "by-trace", "too-early"] and len(calls) == 2


def test_an_upgraded_store_reads_the_events_it_held_before_migration_0010(
    chdb_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store migrated up to 0009 (projections, no ingested_at index) with events in it, then
    upgraded: 0010 indexes the rows already stored (the projections stay), and both forms of the
    chunk read find the old events."""
    import stream.store

    every = stream.store.load_migrations()
    store = ClickHouseStore(chdb_dsn, database=f"t_up_{random.getrandbits(40):010x}")
    try:
        monkeypatch.setattr(stream.store, "load_migrations", lambda: [m for m in every if m[0] <= 9])
        store.migrate()
        trace = genai_trace(random.Random(9), 3)
        t = as_trace(trace)
        joiner = EventJoiner(store, "events.dlq", load_policy(None).action_signals, 60, clock=lambda: t.start_ns + 60 * S)
        m = event_msg(4, trace, "conversation")
        stored = StoredEvent.of(m, parse_event(m.value, joiner.known), t.start_ns // 1_000_000 + 5)
        store.insert("action_events", [stored.row()], EVENT_COLUMNS)
        projections = f"SELECT name FROM system.projections WHERE database = '{store.database}' AND table = 'action_events'"
        assert sorted(r[0] for r in store.query(projections)[1]) == ["by_conversation", "by_trace"]
        monkeypatch.setattr(stream.store, "load_migrations", lambda: every)
        assert store.migrate() == ["events_by_time"]
        assert sorted(r[0] for r in store.query(projections)[1]) == ["by_conversation", "by_trace"]
        [(index_type,)] = store.query(
            "SELECT type FROM system.data_skipping_indices WHERE database = {d:String} AND table = 'action_events' "
            "AND name = 'ix_ingested'", {"d": store.database})[1]  # fmt: skip
        assert index_type == "minmax"
        assert [s.event.event_id for s, _ in joiner.stored_for([t])] == ["ev-4"]
        assert [x.type for x in joiner.signals_for([t])[t.trace_id]] == ["regenerate"]
        backlog = EventJoiner(store, "events.dlq", load_policy(None).action_signals, 60, clock=lambda: t.start_ns + 7_200 * S)
        assert [s.event.event_id for s, _ in backlog.stored_for([t])] == ["ev-4"]
    finally:
        store.command(f"DROP DATABASE IF EXISTS {store.database} SYNC")
        store.close()
