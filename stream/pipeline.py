"""The stream processor as plain async functions; the Faust agents in :mod:`stream.app` only feed it.

Per batch of input messages:

1. decode + validate each message; a bad one becomes a dead-letter record with its reason;
2. a message already partitioned by trace (key == the trace id of every span in it) is ingested
   here; any other (unkeyed, mixed) is split per trace and sent to the repartition topic keyed by
   trace id, so one worker sees a whole trace;
3. dead letters and repartitioned parts are delivered (acknowledged by Kafka) first;
4. ingest: spans are added to the assembler and written to ClickHouse, retried until ClickHouse
   acknowledges. Only then does the handler return — and only then does Faust ack the messages,
   so offsets are committed after the data is stored.

None of the handlers raise (a Faust agent that raises acks its events — data loss): failures are
retried or dead-lettered. An ``asyncio.Lock`` orders ingest, completion and rebalance handling, so
a trace row is written only after all of its held spans are stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.decode import DecodeError
from schemas.model import Span
from stream.assembly import TP, CompletedTrace, TraceAssembler
from stream.config import Settings
from stream.counters import Counters
from stream.decide import TraceDecider
from stream.decision_rows import encode_for_judges, gate_rows, signal_rows
from stream.delivery import DeliveryCounts, Producer, deliver
from stream.dlq import InMessage, OutRecord, dead_letter, unrecovered_offsets
from stream.events import EventJoiner
from stream.input_message import MessageReader
from stream.provenance import message_token, sources, token
from stream.reference_rows import reference_events, reference_span_rows
from stream.refused_rows import INSERT_REJECTED, KnownGood, Refusal, by_source, insert_isolating
from stream.retry import retry_forever
from stream.rows import span_row, trace_row
from stream.sink import DecidedTrace, Sink
from stream.table_copy import each_taken

log = logging.getLogger(__name__)

# Spans decoded, turned into rows and inserted per ingest step. Batches are counted in messages,
# and a message may hold thousands of spans (the Collector's batch processor sends up to 8192), so
# a batch is stored in steps of this many spans (~5 KB of peak memory each); the batch is still
# acked only when all of it is stored.
INGEST_CHUNKS_IN_FLIGHT = 2  # inserts running while the next chunk is decoded (bounds memory too)
DECIDE_SLICE = 10  # traces decided between yields to the event loop


@dataclass(slots=True)
class Stored:
    """A chunk of a batch whose span insert has started."""

    insert: asyncio.Future[Any]
    rows: int
    evicted: list[CompletedTrace]

Clock = Callable[[], int]  # nanoseconds
Sleep = Callable[[float], Awaitable[None]]
OnComplete = Callable[[list[CompletedTrace]], Awaitable[None]]


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        producer: Producer,
        clock: Clock = time.time_ns,
        sleep: Sleep = asyncio.sleep,
        on_complete: OnComplete | None = None,
        decider: TraceDecider | None = None,
        events: EventJoiner | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.producer = producer
        self.clock = clock
        self.sleep = sleep
        self.on_complete = on_complete
        self.decider = decider
        self.events = events
        # the last rows each table took, to tell a schema problem from bad data in a small insert
        now_ms = lambda: self.clock() // 1_000_000  # noqa: E731
        self._known_spans = KnownGood(lambda rows: each_taken(sink.spans_copy, rows), stored=sink.stored_spans_refused,
                                      reference=lambda: reference_span_rows(now_ms()))  # fmt: skip
        self._known_events = KnownGood(lambda batch: self.events.probe(batch, now_ms()),  # type: ignore[union-attr]
                                       stored=lambda names: self.events.stored_refused(names),  # type: ignore[union-attr]
                                       reference=lambda: reference_events(now_ms()))  # fmt: skip
        self.assembler = TraceAssembler(settings.decision_wait, settings.max_trace_age, settings.max_open_traces,
                                        settings.max_spans_per_trace, settings.decided_cache_size)  # fmt: skip
        self.counters = Counters()
        self.reader = MessageReader(settings, self.counters)
        self.lock = asyncio.Lock()
        self._inserts: set[asyncio.Future[Any]] = set()
        self.owned: set[TP] = set()
        self.rebalancing = False

    # ---- entry points ----------------------------------------------------------------------
    async def handle_batch(self, msgs: Sequence[InMessage], repartition: bool = True) -> None:
        """Process one batch of input messages. Returns only when every message is stored,
        dead-lettered or repartitioned (and so may be acked)."""
        await self.finish_batch(await self.start_batch(msgs, repartition))

    async def start_batch(self, msgs: Sequence[InMessage], repartition: bool = True) -> list[Stored]:
        """The first half of :meth:`handle_batch`: decode and assemble ``msgs``, start their span
        inserts, deliver dead letters and repartitioned records. Returns the inserts still running;
        the batch may be acked once :meth:`finish_batch` has returned for them. The worker starts
        the next batch in between, so the event loop decodes while the store thread inserts."""
        self.counters.messages_in += len(msgs)
        local: list[tuple[InMessage, list[Span]]] = []
        held = 0  # spans decoded and not yet ingested
        out: list[OutRecord] = []
        stored: list[Stored] = []  # chunks whose insert runs while the next chunk is decoded
        for i, msg in enumerate(msgs):
            if i and i % 50 == 0:
                await asyncio.sleep(0)  # long batches must not starve heartbeats and timers
            try:
                spans, to_split = self.reader.read(msg, repartition)
            except DecodeError as exc:
                out.append(self._dead_letter(msg, exc.reason, exc.detail))
                continue
            except Exception as exc:  # a decoder bug must not lose the message either
                log.exception("unexpected error decoding %s/%s@%s", msg.topic, msg.partition, msg.offset)
                out.append(self._dead_letter(msg, "internal_error", repr(exc)))
                continue
            if to_split is None:
                local.append((msg, spans))
                held += len(spans)
                if held >= self.settings.insert_chunk_spans:  # store in steps: memory per batch stays bounded
                    if len(stored) >= INGEST_CHUNKS_IN_FLIGHT:
                        await self._stored(stored.pop(0))
                    stored.append(await self._begin_ingest(local))
                    local, held = [], 0
            else:
                out.extend(self.reader.repartition(to_split))
        if local:
            stored.append(await self._begin_ingest(local))
        if out:
            await self._deliver(out, "produce")
        return stored

    async def finish_batch(self, stored: Sequence[Stored]) -> None:
        """Wait until the inserts :meth:`start_batch` returned are stored (and write the traces
        they evicted)."""
        for chunk in stored:
            await self._stored(chunk)

    async def ingest(self, items: Sequence[tuple[InMessage, list[Span]]]) -> None:
        """Assemble and store the spans of ``items``; returns once they are stored."""
        await self._stored(await self._begin_ingest(items))

    async def _begin_ingest(self, items: Sequence[tuple[InMessage, list[Span]]]) -> Stored:
        """Assemble ``items`` and start their insert; the caller awaits :meth:`_stored` (the insert
        runs on the store's thread while the event loop decodes the next chunk)."""
        async with self.lock:
            now = self.clock()
            await self._resolve_unknown(items, now)
            rows: list[tuple[Any, ...]] = []
            evicted: list[CompletedTrace] = []
            now_ms = now // 1_000_000
            resources: dict[int, Any] = {}  # spans of one ResourceSpans share their resource dict
            added = [(msg, spans, self.assembler.add(spans, (msg.topic, msg.partition), msg.offset, now))
                     for msg, spans in items]  # fmt: skip
            again = await self._stored_before([s for _, _, res in added for s in res.late])
            for msg, spans, res in added:
                late = {id(s) for s in res.late if (s.trace_id, s.span_id) not in again}
                rows.extend(
                    span_row(s, msg.topic, msg.partition, msg.offset, now_ms, id(s) in late, resources)
                    for s in spans
                )
                evicted.extend(res.evicted)
                c = self.counters
                c.spans_in += len(spans)
                c.late_spans += len(late)
                c.replayed_spans += res.replayed + len(res.late) - len(late)
                c.spans_not_held += res.not_held
            tok = message_token("spans", (m for m, _ in items))
            # The insert runs without the lock, so completed traces can be decided meanwhile;
            # trace rows wait for every insert that was in flight (see _spans_stored).
            insert = asyncio.ensure_future(self._insert_spans(items, rows, tok))
            self._inserts.add(insert)
            insert.add_done_callback(self._inserts.discard)
        return Stored(insert, len(rows), evicted)

    async def _insert_spans(self, items: Sequence[tuple[InMessage, list[Span]]], rows: list[Any], tok: str) -> int:
        """Store the spans of ``items`` (``rows``, in order). A span ClickHouse refuses dead-letters its
        message, whose other spans are stored. Returns how many spans were refused."""
        refused = await insert_isolating(self.sink.write_spans, rows, tok, f"insert spans of {sources(items)}",
                                         self._store_retry, known=self._known_spans, copy=self.sink.spans_copy)  # fmt: skip
        if refused:
            letters = []
            for i, bad in by_source([len(spans) for _, spans in items], refused).items():
                msg, spans = items[i]
                first = spans[bad[0].index]
                letters.append(self._dead_letter(msg, INSERT_REJECTED, (
                    f"ClickHouse refused {len(bad)} of the message's {len(spans)} spans (first: span {first.span_id}"
                    f" of trace {first.trace_id}); the others are stored: {bad[0].error}")))  # fmt: skip
            self.counters.count_refused("spans", len(refused))
            await self._deliver(letters, "produce")
        return len(refused)

    async def _stored(self, chunk: Stored) -> None:
        refused = await chunk.insert
        self.counters.spans_stored += chunk.rows - refused
        if chunk.evicted:
            await self._write_completed(chunk.evicted)

    async def _spans_stored(self) -> None:
        """Wait until every span insert started so far is acknowledged: a trace row must never be
        visible before the spans it counts."""
        pending = list(self._inserts)
        if pending:
            await asyncio.gather(*pending)

    async def handle_events(self, msgs: Sequence[InMessage]) -> None:
        """A batch from the product-events topic: dead-letter the bad, store (and link) the rest."""
        if self.events is None:
            return
        good, bad = self.events.parse(msgs)
        if bad:
            self.counters.dead_lettered += len(bad)
            await self._deliver(bad, "produce")
        if good:
            tok = message_token("events", (m for m, _ in good))
            now_ms = self.clock() // 1_000_000
            events = self.events
            write = lambda part, t: events.store.run(events.write, part, now_ms, t)  # noqa: E731
            refused = await insert_isolating(write, good, tok, "insert events", self._store_retry,
                                             known=self._known_events, copy=lambda: events.copy(now_ms))  # fmt: skip
            if refused:  # an event ClickHouse refuses is dead-lettered; the others are stored
                letters = [dead_letter(m, events.dlq_topic, INSERT_REJECTED, f"ClickHouse refused the event: {r.error}")
                           for r in refused for m in [good[r.index][0]]]  # fmt: skip
                log.warning("dead-letter %d event(s) ClickHouse refused: %s", len(letters), refused[0].error[:300])
                self.counters.dead_lettered += len(letters)
                self.counters.count_refused("action_events", len(letters))
                await self._deliver(letters, "produce")
            self.counters.action_events += len(good) - len(refused)
            self.counters.action_events_late = events.late_events

    async def tick(self) -> int:
        """Complete due traces; returns how many. Called periodically by the worker."""
        if self.rebalancing:
            return 0
        total = 0
        while True:  # in chunks, yielding between them: the event loop (heartbeats, fetches) keeps running
            async with self.lock:
                done = self.assembler.expire(self.clock(), limit=self.settings.completion_chunk)
            if done:
                await self._write_completed(done)
            total += len(done)
            if len(done) < self.settings.completion_chunk or self.rebalancing:
                return total
            await asyncio.sleep(0)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        # Eager rebalancing revokes everything and usually hands most of it back, so state is
        # only dropped in on_partitions_assigned, for partitions that really moved away.
        self.rebalancing = True

    async def on_partitions_assigned(self, assigned: set[TP]) -> None:
        topics = {self.settings.input_topic, self.settings.repartition_topic}
        mine = {tp for tp in assigned if tp[0] in topics}
        async with self.lock:
            lost = self.owned - mine
            if lost:
                dropped = self.assembler.revoke(lost)
                log.info("partitions moved away: %s (%d open traces handed over)", sorted(lost), dropped)
            decided = [d for tp in sorted(mine - self.owned) for d in await self._recover(tp)]
            if decided and (events := self.events) is not None and self.decider is not None:
                oldest = min(d.decided.completed_ns for d in decided) // 1_000_000  # what a killed worker left
                await self._retry(lambda: events.store.run(events.sweep, decided, oldest), "sweep events", "write_retries")
                self.counters.action_events_late = events.late_events
            self.assembler.resume(self.clock())  # restored traces wait decision_wait from here
            self.owned = mine
            self.rebalancing = False

    # ---- internals -------------------------------------------------------------------------
    async def _recover(self, tp: TP) -> list[DecidedTrace]:
        """Restore ``tp``'s open traces and remember its decided ones; returns those."""
        window = self.settings.max_trace_age + self.settings.decision_wait + 60.0
        decided = await self._retry(lambda: self.sink.load_decided(tp, window), "load decided", "write_retries")
        for d in decided:
            self.assembler.remember_decided(d.trace_id, d.decided)
        spans = await self._retry(lambda: self.sink.load_open_spans(tp, window), "load open", "write_retries")
        restored = len({s.trace_id for s, _, _ in spans})
        evicted = self.assembler.restore(spans, tp, self.clock())
        self.counters.traces_recovered += restored
        if spans:
            log.info("recovered %d open traces (%d spans) for %s/%d", restored, len(spans), *tp)
        if evicted:
            await self._write_completed(evicted)
        return decided

    async def _stored_before(self, late: list[Span]) -> set[tuple[str, str]]:
        """Those of ``late`` stored on time already: a copy delivered again (a Collector's retry, a
        dead letter replayed) is not late; stored as late, it replaced the on-time row, which every
        read of on-time spans (recovery, judging by reference, export-cases) then lost."""
        if not late:
            return set()
        keys = [(s.trace_id, s.span_id) for s in late]
        return await self._retry(lambda: self.sink.stored_on_time(keys), "look up late spans", "write_retries")

    async def _resolve_unknown(self, items: Sequence[tuple[InMessage, list[Span]]], now: int) -> None:
        """Look up traces the decided cache may have forgotten: unknown ids whose spans started
        before the cache's horizon could belong to a trace completed long ago."""
        horizon = self.assembler.decided_horizon_ns
        if horizon is None:
            return
        cutoff = horizon - int(self.settings.max_trace_age * 1e9)
        a = self.assembler
        unknown = {s.trace_id for _, spans in items for s in spans
                   if s.start_ns < cutoff and not a.is_open(s.trace_id) and a.decided(s.trace_id) is None}  # fmt: skip
        if unknown:
            found = await self._retry(lambda: self.sink.lookup_decided(sorted(unknown)), "lookup decided", "write_retries")
            for tid, d in found:
                self.assembler.remember_decided(tid, d)

    async def _write_completed(self, done: list[CompletedTrace]) -> None:
        """Decide, then store. Order matters for crash safety: traces chosen for judging are
        delivered first, then gate results and signals, and the trace row last — its presence is
        what marks a trace as decided (recovery re-opens traces without one, and re-decides them
        identically: gates and sampling are deterministic). Product events stored while the batch
        was being decided are linked late once its trace rows are in (:mod:`stream.events`)."""
        actions: dict[str, list[Any]] = {}
        traces = [c.trace for c in done]
        events = self.events if self.decider is not None else None
        if events is not None:
            actions = await self._retry(
                lambda: events.store.run(events.signals_for, traces), "join action events", "write_retries"
            )
        decided: list[tuple[CompletedTrace, Any]] = []
        for i, c in enumerate(done):
            if i and i % DECIDE_SLICE == 0:
                await asyncio.sleep(0)  # ~5 ms per trace: judge calls, heartbeats and fetches go on
            decided.append((c, self.decider.decide(c.trace, actions.get(c.trace.trace_id, ())) if self.decider else None))
        await self._spans_stored()
        to_judge = [
            OutRecord(self.settings.judge_topic, c.trace.trace_id.encode(),
                      encode_for_judges(c.trace, d, self.settings.max_judge_message_bytes))
            for c, d in decided
            if d is not None and d.decision.sampled
        ]
        if to_judge:
            await self._deliver(to_judge, "produce to_judge")
        if self.decider is not None:
            gates = [r for c, d in decided if d for r in gate_rows(c, d)]
            signals = [r for c, d in decided if d for r in signal_rows(c, d)]
            ids = [f"{c.trace.trace_id}/{c.max_offset}/{len(c.trace.spans)}" for c, _ in decided]
            if gates:
                tok = token("gates", ids)
                await self._retry(lambda: self.sink.write_gate_results(gates, tok), "insert gate results", "write_retries")
            if signals:
                tok = token("signals", ids)
                await self._retry(lambda: self.sink.write_signals(signals, tok), "insert signals", "write_retries")
        rows = [trace_row(c.trace, c.tp[0], c.tp[1], c.max_offset, c.spans_not_held, d) for c, d in decided]
        tok = token("traces", (f"{c.trace.trace_id}/{c.max_offset}/{len(c.trace.spans)}" for c in done))
        await self._retry(lambda: self.sink.write_traces(rows, tok), "insert traces", "write_retries")
        if events is not None:  # the events stored while deciding, which no decision saw
            seen = {tid: {s.key for s in signals} for tid, signals in actions.items()}
            await self._retry(lambda: events.store.run(events.link_missed, traces, seen), "link events", "write_retries")
            self.counters.action_events_late = events.late_events
        for c, d in decided:
            self.counters.count_completed(c, d)
        if self.on_complete is not None:
            await self.on_complete(done)

    async def dead_letter_offsets(self, topic: str, partition: int, first: int, last: int, detail: str) -> None:
        """Skipped offsets that could not be read again (``gap_unrecovered: dead_letter``): one
        dead-letter record names them, acknowledged by Kafka before the consumer goes past them."""
        record = unrecovered_offsets(topic, partition, first, last, self.settings.dlq_topic, detail)
        await self._deliver([record], "produce")
        u = self.counters.unrecovered_offsets
        u[topic] = u.get(topic, 0) + last - first + 1

    def _dead_letter(self, msg: InMessage, reason: str, detail: str) -> OutRecord:
        log.warning("dead-letter %s/%d@%d: %s: %s", msg.topic, msg.partition, msg.offset, reason, detail[:300])
        self.counters.dead_lettered += 1
        r = self.counters.dead_letter_reasons
        r[reason] = r.get(reason, 0) + 1
        return dead_letter(msg, self.settings.dlq_topic, reason, detail)

    async def _deliver(self, records: Sequence[OutRecord], what: str) -> None:
        counts = DeliveryCounts()
        await deliver(self.producer.send_all, records, lambda op, w: self._retry(op, w, "send_retries"), what, counts)
        self.counters.dead_letter_values_omitted += counts.values_omitted
        self.counters.send_refused += counts.refused

    async def _store_retry(self, op: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Retry through outages; a refusal of the rows (stream/refused_rows.py) is raised at once."""
        return await self._retry(op, what, "write_retries", stop_on=(Refusal,))

    async def _retry(self, op: Callable[[], Awaitable[Any]], what: str, counter: str,
                     stop_on: tuple[type[BaseException], ...] = ()) -> Any:  # fmt: skip
        def count() -> None:
            setattr(self.counters, counter, getattr(self.counters, counter) + 1)

        return await retry_forever(op, what, sleep=self.sleep, initial=self.settings.insert_retry_initial,
                                   maximum=self.settings.insert_retry_max, on_retry=count, stop_on=stop_on)  # fmt: skip
