"""Product events joined to traces, on real embedded ClickHouse: an event reaches a trace's decision
or is linked to it late — also when it is stored while that trace is being decided, whichever
side (the events consumer, the pipeline completing traces) looks second."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from schemas.decode import decode_message
from schemas.model import Trace
from stream.config import Settings
from stream.decide import TraceDecider
from stream.dlq import InMessage
from stream.events import EventJoiner
from stream.stored_events import EVENT_COLUMNS, StoredEvent
from stream.pipeline import Pipeline
from stream.policy import load_policy
from stream.signals.actions import parse_event
from stream.sink import ClickHouseSink
from stream.store import ClickHouseStore
from tests.factories import T0, SpanSpec, genai_trace, proto
from tests.stream.test_pipeline import TOPIC, Clock, ListProducer, count, msg, no_sleep

S = 1_000_000_000
NOW_MS = (T0 + 2_000 * S) // 1_000_000  # the workers' clock: after the traces' spans (factories)


class HookedSink(ClickHouseSink):
    """The real sink, running ``before`` / ``after`` around its trace-row writes: what another
    consumer does meanwhile."""

    def __init__(self, store: ClickHouseStore) -> None:
        super().__init__(store)
        self.before: Callable[[], Awaitable[None]] | None = None
        self.after: Callable[[], Awaitable[None]] | None = None

    async def write_traces(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        if self.before is not None:
            await self.before()
        await super().write_traces(rows, dedup_token)
        if self.after is not None:
            await self.after()


def pipeline(store: ClickHouseStore) -> tuple[Pipeline, HookedSink, Clock]:
    policy = load_policy(None)
    sink, clock = HookedSink(store), Clock()
    clock.now = NOW_MS * 1_000_000
    settings = Settings(clickhouse_database=store.database, decision_wait=5)
    p = Pipeline(settings, sink, ListProducer(), clock=clock, sleep=no_sleep, decider=TraceDecider(policy),
                 events=EventJoiner(store, "events.dlq", policy.action_signals, 60, clock=clock))  # fmt: skip
    return p, sink, clock


def event_msg(offset: int, trace: list[SpanSpec], by: str, kind: str = "regenerate") -> InMessage:
    """A product event naming the trace by id, or only by its conversation (at its start)."""
    root = trace[0]
    about = ({"trace_id": root.trace_id.hex()} if by == "trace" else
             {"conversation_id": root.attrs["gen_ai.conversation.id"]})  # fmt: skip
    body = {**about, "event_id": f"ev-{offset}", "type": kind, "ts": (root.start + S) / 1e9}
    return InMessage("events", 0, offset, None, json.dumps(body).encode())


def start(p: Pipeline, clock: Clock, trace: list[SpanSpec]) -> None:
    asyncio.run(p.handle_batch([msg(proto(trace), 0, trace[0].trace_id.hex().encode())]))
    clock.now += 6 * S


def action_rows(store: ClickHouseStore, table: str, cols: str, final: bool = True) -> list[tuple[Any, ...]]:
    where = "" if table == "action_events" else " WHERE source = 'action'"
    return store.query(f"SELECT {cols} FROM {store.database}.{table}{' FINAL' if final else ''}{where} ORDER BY 1")[1]


@pytest.mark.parametrize("by", ["trace", "conversation"])
def test_an_event_stored_while_its_trace_is_decided_is_linked_late(store: ClickHouseStore, by: str) -> None:
    """The decision has read the events, the trace row is not written yet: the events side finds no
    decided trace, the pipeline finds the event once its trace row is in."""
    p, sink, clock = pipeline(store)
    trace = genai_trace(random.Random(1), 4)
    tid = trace[0].trace_id.hex()
    start(p, clock, trace)
    sink.before = lambda: p.handle_events([event_msg(7, trace, by)])
    assert asyncio.run(p.tick()) == 1
    [(signals,)] = store.query(f"SELECT signals FROM {store.database}.traces FINAL")[1]
    assert signals == []  # the decision did not see it...
    # ...so it is linked late to the trace, and is in signals as such
    assert action_rows(store, "action_events", "event_id, linked_trace_id, is_late") == [("ev-7", tid, 1)]
    assert action_rows(store, "signals", "trace_id, type, signal_key, is_late") == [(tid, "regenerate", "ev-7", 1)]
    assert p.counters.action_events == 1 and p.counters.action_events_late == 1
    # re-deciding it as decided (policy-diff) leaves the late event out, as the decision did
    stored = Trace.fast(trace_id=tid, spans=[], completion_reason="timeout", completed_ns=clock.now)
    assert p.events is not None and p.events.signals_for([stored], as_decided=True) == {}


def test_an_event_the_decision_saw_is_not_linked_late_by_a_slower_events_consumer(store: ClickHouseStore) -> None:
    """The other interleaving, across two processes: the event is stored before the decision reads
    the events, and its consumer looks for decided traces only after the trace row is written."""
    p, _, clock = pipeline(store)
    trace = genai_trace(random.Random(2), 4)
    tid = trace[0].trace_id.hex()
    start(p, clock, trace)
    m = event_msg(3, trace, "conversation", "thumbs_down")
    stored = StoredEvent.of(m, parse_event(m.value, p.events.known), NOW_MS)  # type: ignore[union-attr]
    store.insert("action_events", [stored.row()], EVENT_COLUMNS)
    assert asyncio.run(p.tick()) == 1
    [(signals, sample_class)] = store.query(f"SELECT signals, sample_class FROM {store.database}.traces FINAL")[1]
    assert signals == ["thumbs_down"] and sample_class == "suspected_failure"  # the decision saw it
    other = EventJoiner(store, "events.dlq", load_policy(None).action_signals, 60)  # the other process
    assert other.link_late([stored]) == 0
    assert action_rows(store, "action_events", "event_id, linked_trace_id, is_late") == [("ev-3", "", 0)]
    assert action_rows(store, "signals", "trace_id, signal_key, is_late") == [(tid, "ev-3", 0)]


def test_when_both_sides_link_an_event_it_is_linked_once(store: ClickHouseStore) -> None:
    """Stored after the decision read the events; the events side looks after the trace row is
    written, and so does the pipeline: both link it, with the same rows, deduplicated."""
    p, sink, clock = pipeline(store)
    trace = genai_trace(random.Random(3), 4)
    tid = trace[0].trace_id.hex()
    start(p, clock, trace)
    m = event_msg(5, trace, "trace", "thumbs_down")
    assert p.events is not None
    stored = StoredEvent.of(m, parse_event(m.value, p.events.known), NOW_MS)

    async def events_side_insert() -> None:
        store.insert("action_events", [stored.row()], EVENT_COLUMNS)

    async def events_side_link() -> None:
        assert EventJoiner(store, "events.dlq", load_policy(None).action_signals, 60).link_late([stored]) == 1

    sink.before, sink.after = events_side_insert, events_side_link
    assert asyncio.run(p.tick()) == 1
    assert action_rows(store, "action_events", "event_id, linked_trace_id, is_late") == [("ev-5", tid, 1)]
    assert action_rows(store, "signals", "trace_id, signal_key, is_late", final=False) == [(tid, "ev-5", 1)]
    assert count(store, "SELECT count() FROM {db}.action_events") == 2  # stored, then linked (once)


class Killed(BaseException):
    """The worker dying where it is (not an error the pipeline retries)."""


async def killed() -> None:
    raise Killed


@pytest.mark.parametrize("by", ["trace", "conversation"])
def test_an_event_a_killed_worker_left_unlinked_is_linked_by_whoever_recovers_the_partition(
    store: ClickHouseStore, by: str
) -> None:
    """Killed between writing the trace row and re-checking the events stored while it decided:
    the event is stored, not linked, not in signals. The worker that recovers the trace's
    partition links it late; one seen by its decision, and one already linked, are left alone."""
    p, sink, clock = pipeline(store)
    rng = random.Random(6)
    missed, seen = genai_trace(rng, 4), genai_trace(rng, 3)
    tid, seen_tid = missed[0].trace_id.hex(), seen[0].trace_id.hex()
    start(p, clock, seen)
    asyncio.run(p.handle_events([event_msg(20, seen, by, "thumbs_down")]))  # before its decision
    assert asyncio.run(p.tick()) == 1
    start(p, clock, missed)
    sink.before, sink.after = (lambda: p.handle_events([event_msg(21, missed, by)])), killed
    with pytest.raises(Killed):
        asyncio.run(p.tick())
    unlinked = [("ev-20", "", 0), ("ev-21", "", 0)]
    assert action_rows(store, "action_events", "event_id, linked_trace_id, is_late") == unlinked
    assert action_rows(store, "signals", "trace_id, signal_key, is_late") == [(seen_tid, "ev-20", 0)]
    take_over_twice(store, [(seen_tid, "ev-20", 0), (tid, "ev-21", 1)])
    assert action_rows(store, "action_events", "event_id, linked_trace_id, is_late") == [("ev-20", "", 0),
                                                                                         ("ev-21", tid, 1)]  # fmt: skip
    assert count(store, "SELECT count() FROM {db}.signals WHERE source = 'action'") == 2


def take_over_twice(store: ClickHouseStore, signals: list[tuple[str, str, int]]) -> None:
    """A new worker takes the partition over and links one event late, after which the action
    ``signals`` rows are ``signals``; one more takes it over and finds nothing left to link."""
    p2, _, _ = pipeline(store)
    asyncio.run(p2.on_partitions_assigned({(TOPIC, 0)}))
    assert action_rows(store, "signals", "trace_id, signal_key, is_late") == sorted(signals)
    assert p2.counters.action_events_late == 1
    p3, _, _ = pipeline(store)
    asyncio.run(p3.on_partitions_assigned({(TOPIC, 0)}))
    assert p3.counters.action_events_late == 0


def conversation(rng: random.Random, n: int) -> list[list[SpanSpec]]:
    """``n`` traces of one conversation (``conv-a``), each starting 10 s after the one before."""
    traces = [genai_trace(rng, 3) for _ in range(n)]
    for i, t in enumerate(traces):
        t[0].attrs["gen_ai.conversation.id"] = "conv-a"
        shift = traces[0][0].start + i * 10 * S - t[0].start
        for s in t:
            s.start, s.end = s.start + shift, s.end + shift
    return traces


def test_a_conversation_event_links_to_every_trace_that_missed_it(store: ClickHouseStore) -> None:
    """Two traces of one conversation, decided before the event came: it is linked late to both, as
    a decision would have joined it to both (its row names the latest started); the decision of a
    third, completed after it came, sees it and is a suspected failure."""
    p, _, clock = pipeline(store)
    traces = conversation(random.Random(4), 3)
    first, second, third = (t[0].trace_id.hex() for t in traces)
    for t in traces[:2]:
        start(p, clock, t)
    assert asyncio.run(p.tick()) == 2
    ev = event_msg(9, traces[2], "conversation", "thumbs_down")  # during the third trace
    asyncio.run(p.handle_events([ev]))
    assert action_rows(store, "action_events", "event_id, linked_trace_id, is_late") == [("ev-9", second, 1)]
    start(p, clock, traces[2])
    assert asyncio.run(p.tick()) == 1
    decided = {r[0]: r[1:] for r in store.query(
        f"SELECT trace_id, signals, sample_rule FROM {store.database}.traces FINAL")[1]}  # fmt: skip
    assert decided[third] == (["thumbs_down"], "signal:thumbs_down")
    assert decided[first][0] == decided[second][0] == []
    assert action_rows(store, "signals", "trace_id, signal_key, is_late") == sorted([(first, "ev-9", 1),
                                                                                    (second, "ev-9", 1),
                                                                                    (third, "ev-9", 0)])  # fmt: skip
    # the late link stays where it was: the third trace saw the event
    assert action_rows(store, "action_events", "event_id, linked_trace_id, is_late") == [("ev-9", second, 1)]
    assert p.counters.action_events_late == 1



def test_a_conversation_event_stored_while_its_traces_are_decided_is_left_out_of_each_when_re_decided(
    store: ClickHouseStore,
) -> None:
    """Stored while two traces of its conversation are decided in one chunk, after the decisions
    read the events: linked late to both. Re-decided as decided (policy-diff), each leaves it out,
    though both completed after it was stored and the event's row names one of them only."""
    p, sink, clock = pipeline(store)
    traces = conversation(random.Random(8), 2)
    for t in traces:
        start(p, clock, t)
    sink.before = lambda: p.handle_events([event_msg(8, traces[1], "conversation", "thumbs_down")])
    assert asyncio.run(p.tick()) == 2
    first, second = (t[0].trace_id.hex() for t in traces)
    assert store.query(f"SELECT signals FROM {store.database}.traces FINAL")[1] == [([],), ([],)]
    assert action_rows(store, "signals", "trace_id, signal_key, is_late") == sorted([(first, "ev-8", 1),
                                                                                    (second, "ev-8", 1)])  # fmt: skip
    assert action_rows(store, "action_events", "event_id, linked_trace_id, is_late") == [("ev-8", second, 1)]
    assert p.events is not None
    decided = []
    for t in traces:
        t = as_trace(t)
        decided.append(Trace.fast(trace_id=t.trace_id, spans=t.spans, completion_reason="timeout",
                                  completed_ns=clock.now))  # fmt: skip
    assert p.events.signals_for(decided, as_decided=True) == {}
    # a trace of the conversation decided after the event was stored, and not linked to it, saw it
    later = Trace.fast(trace_id="f" * 32, spans=decided[1].spans, completion_reason="timeout", completed_ns=clock.now)
    assert [x.type for x in p.events.signals_for([later], as_decided=True)[later.trace_id]] == ["thumbs_down"]


def test_a_conversation_event_the_events_side_linked_to_one_trace_is_linked_to_a_killed_worker_s_by_its_successor(
    store: ClickHouseStore,
) -> None:
    """The second trace of a conversation is decided; the first is being decided when an event of
    the conversation comes: the events side links it to the second (the first's row is not in yet),
    and the worker deciding the first is killed before its re-check. The worker that takes the
    partition over links the event to the first as well, though it is stored as late already."""
    p, sink, clock = pipeline(store)
    traces = conversation(random.Random(9), 2)
    first, second = (t[0].trace_id.hex() for t in traces)
    start(p, clock, traces[1])
    assert asyncio.run(p.tick()) == 1
    start(p, clock, traces[0])
    sink.before, sink.after = (lambda: p.handle_events([event_msg(9, traces[1], "conversation")])), killed
    with pytest.raises(Killed):
        asyncio.run(p.tick())
    assert action_rows(store, "signals", "trace_id, signal_key, is_late") == [(second, "ev-9", 1)]
    take_over_twice(store, [(first, "ev-9", 1), (second, "ev-9", 1)])


def as_trace(spans: list[SpanSpec]) -> Trace:
    """What the joins read of a trace: id, conversation, start and end."""
    return Trace.fast(trace_id=spans[0].trace_id.hex(), spans=decode_message(proto(spans)), completion_reason="timeout")


def test_one_event_no_parser_foresaw_is_dead_lettered_not_the_whole_batch(store: ClickHouseStore,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """``"ts": NaN`` (Python's json reads it) raised a plain ValueError: the events agent crashed
    and Faust acked the whole batch (take_events acks in a ``finally``), stored nowhere."""
    import stream.events as events_module

    joiner = EventJoiner(store, "events.dlq", load_policy(None).action_signals, 60)
    good = json.dumps({"trace_id": "ab" * 16, "type": "regenerate", "ts": 1795341600}).encode()
    nan = b'{"trace_id": "' + b"ab" * 16 + b'", "type": "regenerate", "ts": NaN}'
    batch = [InMessage("events", 0, i, None, v, 1) for i, v in enumerate([good, nan, good])]
    ok, bad = joiner.parse(batch)
    assert [m.offset for m, _ in ok] == [0, 2] and len(bad) == 1
    assert dict(bad[0].headers)["tracejudge.dlq.reason"] == b"invalid_ts"
    real = events_module.parse_event

    def buggy(value: bytes | None, known: Any) -> Any:  # any other failure of the parser
        if value == nan:
            raise OverflowError("a bug")
        return real(value, known)

    monkeypatch.setattr(events_module, "parse_event", buggy)
    ok, bad = joiner.parse(batch)
    assert len(ok) == 2 and dict(bad[0].headers)["tracejudge.dlq.reason"] == b"invalid_event"
