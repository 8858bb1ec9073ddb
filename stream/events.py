"""Product events -> action signals, joined to traces through ClickHouse.

Events and traces are keyed differently (an event may only know its conversation), so they are
not co-partitioned; ClickHouse is the join point:

* when a trace completes, the pipeline asks :meth:`EventJoiner.signals_for` for the events of that
  trace id, or of its conversation within ``action_join_window`` after the trace ended; they take
  part in the sampling decision (a ``thumbs_down`` makes the trace a suspected failure), and the
  decision's ``signals`` rows name each one it saw (``signal_key`` = event id);
* every valid event is stored in ``action_events`` (idempotent by event id); an event that came
  after the decision of a trace it is about is linked to that trace (to each such trace of a
  conversation, as a decision would have joined it), marked late, and written to ``signals``.

The two sides run concurrently, so each writes before it reads: the events side stores an event,
then looks for decided traces (:meth:`EventJoiner.write`); the pipeline stores a trace row, then
looks again for events its decision did not see (:meth:`EventJoiner.link_missed`). Whichever
reads second finds the other's row, so an event stored while its trace is being decided is linked
late by one of them (or by both: the rows are the same and deduplicated) and is never lost between
the decision and the late path. A decision's own ``signals`` rows, written before its trace row,
tell the two apart: an event a decision saw is not linked late to that trace. A worker killed
between a chunk's trace rows and that re-check leaves such an event unlinked; whoever recovers
the trace's partition looks again (:meth:`EventJoiner.sweep`).

Malformed events and unknown types go to the events dead-letter topic with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from schemas.model import Trace
from stream.constraint_check import stored_rows_violate
from stream.decision_rows import SIGNAL_COLUMNS
from stream.dlq import InMessage, OutRecord, dead_letter
from stream.provenance import token
from stream.signals.actions import KNOWN_TYPES, ActionEvent, EventError, parse_event
from stream.signals.base import Signal
from stream.store import ClickHouseStore
from stream.stored_events import EVENT_COLUMNS, STORED_COLUMNS, EventsCopy, StoredEvent, newest
from stream.table_copy import NullCopy, each_taken

log = logging.getLogger(__name__)

# the sweep of a recovered partition reads the events stored since its oldest decision less this
# (workers' clocks differ), and the decisions' signals rows back to this before that
SWEEP_CLOCK_SKEW_MS = 60_000
SWEEP_TS_SLACK_MS = 3_600_000
# an event about a trace is stored after the trace started: a chunk's reads look at the events
# stored since its oldest start (or first span seen, if earlier) less this (how far an agent's
# clock may run ahead of the workers')
AGENT_CLOCK_SKEW_MS = 600_000
# ... unless that reaches back further than this: a worker catching up on a backlog, or a
# policy-diff of past traffic, looks the events up by trace and conversation instead (0009's
# projections), which costs what the keys cost rather than everything stored since
BOUNDED_READ_MAX_MS = 3_600_000


class AboutTrace(Protocol):
    """What the joins ask of a trace: an assembled :class:`Trace`, or a stored trace row."""

    @property
    def trace_id(self) -> str: ...
    @property
    def conversation_id(self) -> str | None: ...
    @property
    def start_ns(self) -> int: ...
    @property
    def end_ns(self) -> int: ...


class EventJoiner:
    def __init__(
        self,
        store: ClickHouseStore,
        dlq_topic: str,
        negative_types: Sequence[str],
        window_s: float,
        known_types: frozenset[str] = KNOWN_TYPES,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store = store
        self.clock = clock
        self.db = store.database
        self.dlq_topic = dlq_topic
        self.negative = frozenset(negative_types)
        self.known = known_types | self.negative
        self.window_ms = int(window_s * 1000)
        self.late_events = 0  # linked late by this joiner (either side)

    def parse(self, msgs: Sequence[InMessage]) -> tuple[list[tuple[InMessage, ActionEvent]], list[OutRecord]]:
        good, bad = [], []
        for m in msgs:
            try:
                good.append((m, parse_event(m.value, self.known)))
            except EventError as exc:
                log.warning("dead-letter event %s/%d@%d: %s", m.topic, m.partition, m.offset, exc)
                bad.append(dead_letter(m, self.dlq_topic, exc.reason, exc.detail))
            except Exception as exc:  # noqa: BLE001 - a bug or an input nobody foresaw: never the whole batch
                log.exception("dead-letter event %s/%d@%d: unexpected %r", m.topic, m.partition, m.offset, exc)
                bad.append(dead_letter(m, self.dlq_topic, "invalid_event", f"{type(exc).__name__}: {exc}"[:500]))
        return good, bad

    def joins(self, t: AboutTrace, e: ActionEvent) -> bool:
        """Whether ``e`` is about ``t``: its trace id, or its conversation from the trace's start
        to ``action_join_window`` after its end."""
        if e.trace_id:
            return e.trace_id == t.trace_id
        return (
            bool(e.conversation_id)
            and e.conversation_id == t.conversation_id
            and t.start_ns // 1_000_000 <= e.ts_ms <= t.end_ns // 1_000_000 + self.window_ms
        )

    # ---- the events side -------------------------------------------------------------------
    def write(self, batch: Sequence[tuple[InMessage, ActionEvent]], now_ms: int, dedup_token: str) -> None:
        """Store ``batch``, then link late the events whose trace was decided without them — in
        this order, so that a decision reading the events before this insert has written its trace
        row by the time :meth:`link_late` looks (or else finds the event in :meth:`link_missed`).
        Runs on the ClickHouse thread; a replay is deduplicated (``dedup_token``)."""
        stored = [StoredEvent.of(m, e, now_ms) for m, e in batch]
        self.store.insert("action_events", [s.row() for s in stored], EVENT_COLUMNS, dedup_token=dedup_token)
        self.link_late(stored)

    def copy(self, now_ms: int) -> EventsCopy:
        """A copy of ``action_events`` that keeps nothing, taking events as :meth:`write` does: where
        the events of a refused insert are told apart (stream/refused_rows.py)."""
        return EventsCopy(NullCopy(self.store, "action_events", EVENT_COLUMNS), now_ms)

    async def probe(self, batch: Sequence[tuple[InMessage, ActionEvent]], now_ms: int) -> list[Exception | None]:
        """Each event inserted alone into :meth:`copy`: what each insert raised (``KnownGood``)."""
        return await each_taken(lambda: self.copy(now_ms), batch)

    async def stored_refused(self, names: Sequence[str]) -> bool | None:
        """Whether every event stored in the last day (the ``ingested_at`` index finds them) breaks
        one of the CHECK constraints ``names`` (``KnownGood``)."""
        return await stored_rows_violate(self.store, "action_events", names, "ingested_at >= now() - INTERVAL 1 DAY")

    def link_late(self, stored: Sequence[StoredEvent]) -> int:
        """Link each of ``stored`` to the decided traces it came late for (:meth:`find_decided`):
        a late ``signals`` row per trace, then the linked ``action_events`` row. Returns how many
        events were linked."""
        found = self.find_decided([s.event for s in stored])
        late = [(s, found[s.event.event_id]) for s in stored if s.event.event_id in found]
        if not late:
            return 0
        signals = []
        for s, traces in late:
            x = s.event.signal(self.negative)
            for trace_id, version in traces:
                signals.append((
                    trace_id, "action", x.type, x.polarity, x.rule, s.event.event_id, x.evidence or "", "", -1, "",
                    1, version, s.event.ts_ms,
                ))  # fmt: skip
        # the same links give the same token, whichever side writes them (deduplicated)
        tok = token("late", (f"{s.event.event_id}/{t}/{s.ingested_ms}" for s, traces in late for t, _ in traces))
        self.store.insert("signals", signals, SIGNAL_COLUMNS, dedup_token=tok + ":signals")
        # one row per event: it names the latest started of the traces it is linked to (each has
        # its late ``signals`` row)
        rows = [s.row(traces[-1][0]) for s, traces in late]
        self.store.insert("action_events", rows, EVENT_COLUMNS, dedup_token=tok)
        self.late_events += len(late)
        return len(late)

    def find_decided(self, events: Sequence[ActionEvent]) -> dict[str, list[tuple[str, str]]]:
        """event id -> [(trace id, policy version)]: for each event, every decided trace it is
        about (:meth:`joins`: its trace, or each trace of its conversation in the window, as the
        decisions join it) whose decision did not see it, the earliest started first. Events every
        such decision saw, or with none decided, are absent."""
        ids = sorted({e.trace_id for e in events if e.trace_id})
        convs = sorted({e.conversation_id for e in events if e.conversation_id and not e.trace_id})
        # without FINAL, so that the conversation lookup reads the table's by_conversation projection
        # (schemas/sql/0009): every stored version of a trace row, the newest kept here
        cols = (
            "SELECT trace_id, conversation_id, policy_version, toUnixTimestamp64Milli(start_time), "
            f"toUnixTimestamp64Milli(end_time), completed_at FROM {self.db}.traces WHERE "
        )
        rows: list[tuple[Any, ...]] = []
        if ids:  # by the table's key
            rows += self.store.query(cols + "trace_id IN {ids:Array(String)}", {"ids": ids})[1]
        if convs:
            rows += self.store.query(cols + "conversation_id IN {c:Array(String)}", {"c": convs})[1]
        newest: dict[str, tuple[Any, ...]] = {}
        for r in rows:
            if r[0] not in newest or r[5] > newest[r[0]][5]:
                newest[r[0]] = r
        by_id = {r[0]: (r[0], r[2]) for r in newest.values()}
        by_conv: dict[str, list[tuple[Any, ...]]] = {}
        for r in sorted(newest.values(), key=lambda r: (r[3], r[0])):  # by start time
            by_conv.setdefault(r[1], []).append(r)
        candidates: dict[str, list[tuple[str, str]]] = {}  # event id -> [(trace id, version)], oldest first
        for e in events:
            if e.trace_id:
                found = [by_id[e.trace_id]] if e.trace_id in by_id else []
            else:
                found = [(r[0], r[2]) for r in by_conv.get(e.conversation_id, ())
                         if r[3] <= e.ts_ms <= r[4] + self.window_ms]  # fmt: skip
            if found:
                candidates[e.event_id] = found
        if not candidates:
            return {}
        seen = self.action_pairs(sorted({t for c in candidates.values() for t, _ in c}), sorted(candidates), late=False)
        out = {}
        for event_id, traces in candidates.items():
            missed = [(t, v) for t, v in traces if (t, event_id) not in seen]
            if missed:
                out[event_id] = missed
        return out

    def action_pairs(self, trace_ids: Collection[str], event_ids: Collection[str], late: bool) -> set[tuple[str, str]]:
        """(trace id, event id) for each of these events that a decision of these traces saw (the
        decision's own ``signals`` rows; ``late`` False) or that is linked late to one of them
        (``late`` True). Read without FINAL, which would let a late row of the same key stand in
        for a decision's."""
        _, rows = self.store.query(
            f"SELECT DISTINCT trace_id, signal_key FROM {self.db}.signals WHERE source = 'action' AND is_late = {{l:UInt8}} "
            "AND trace_id IN {t:Array(String)} AND signal_key IN {e:Array(String)}",
            {"t": list(trace_ids), "e": list(event_ids), "l": int(late)},
        )
        return {(str(t), str(k)) for t, k in rows}

    # ---- the pipeline side -----------------------------------------------------------------
    def stored_for(self, traces: Sequence[AboutTrace]) -> list[tuple[StoredEvent, bool]]:
        """The stored events of these traces' ids and conversations (not yet windowed), each with
        whether it is stored as late. An event about a trace is stored after the trace started, so
        only the events stored since the traces' oldest start (less ``AGENT_CLOCK_SKEW_MS``;
        :func:`_earliest_ns`) are read, in one query that the table's ``ingested_at`` index
        (schemas/sql/0010) keeps to the parts stored since: for traces completing now, what the
        last minutes stored, whatever the table holds. When that start is more than
        ``BOUNDED_READ_MAX_MS`` ago, the events are looked up by trace id and by conversation (a
        granule per key in every part of 0009's projections) instead."""
        if not traces:
            return []
        since_ms = min(map(_earliest_ns, traces)) // 1_000_000 - AGENT_CLOCK_SKEW_MS
        ids = sorted({t.trace_id for t in traces})
        convs = sorted({c for t in traces if (c := t.conversation_id)})
        sql = f"SELECT {STORED_COLUMNS} FROM {self.db}.action_events "
        if self.clock() // 1_000_000 - since_ms <= BOUNDED_READ_MAX_MS:
            sql += ("PREWHERE ingested_at >= fromUnixTimestamp64Milli({s:Int64}) WHERE trace_id IN {ids:Array(String)} "
                    "OR (trace_id = '' AND conversation_id IN {c:Array(String)})")  # fmt: skip
            return newest(self.store.query(sql, {"s": since_ms, "ids": ids, "c": convs})[1])
        # two lookups without FINAL, each read from its projection
        rows = self.store.query(sql + "WHERE trace_id IN {ids:Array(String)}", {"ids": ids})[1]
        if convs:
            rows += self.store.query(sql + "WHERE trace_id = '' AND conversation_id IN {c:Array(String)}", {"c": convs})[1]
        return newest(rows)

    def stored_since(self, since_ms: int) -> list[tuple[StoredEvent, bool]]:
        """The events stored (``ingested_at``) since ``since_ms``, each with whether it is stored as
        late: one scan of the table's ``ingested_at`` column, the other columns of those rows only."""
        sql = f"SELECT {STORED_COLUMNS} FROM {self.db}.action_events PREWHERE ingested_at >= fromUnixTimestamp64Milli({{s:Int64}})"
        return newest(self.store.query(sql, {"s": since_ms})[1])

    def signals_for(self, traces: Sequence[Trace], as_decided: bool = False) -> dict[str, list[Signal]]:
        """Action signals for traces about to be decided (trace id, or conversation + window).

        ``as_decided``: for stored traces re-decided (``Trace.completed_ns`` set), only the events
        their decision saw. An event stored as late came after the decisions of the traces it is
        linked to (its late ``signals`` rows), so it is left out for those and for any other trace
        completed before the event was stored (``ingested_at``); a later trace of the
        conversation, decided after it came, saw it. Events not stored as late came before every
        decision that joins them."""
        if not traces:
            return {}
        out: dict[str, list[Signal]] = {}
        stored = self.stored_for(traces)
        linked: set[tuple[str, str]] = set()
        if as_decided and (late_ids := sorted(s.event.event_id for s, late in stored if late)):
            linked = self.action_pairs(sorted({t.trace_id for t in traces}), late_ids, late=True)
        for t in traces:
            decided_ms = t.completed_ns // 1_000_000
            for s, late in stored:
                if as_decided and late and (s.linked == t.trace_id or s.ingested_ms > decided_ms
                                            or (t.trace_id, s.event.event_id) in linked):  # fmt: skip
                    continue
                if self.joins(t, s.event):
                    out.setdefault(t.trace_id, []).append(s.event.signal(self.negative))
        return out

    def link_missed(self, traces: Sequence[Trace], seen: Mapping[str, Collection[str]]) -> int:
        """After the trace rows of ``traces`` are stored: link late the events about them that
        their decisions did not see (``seen``: trace id -> the event ids its decision saw) —
        events stored while they were being decided, which the events side may have looked for
        decided traces too early to find. Returns how many were linked."""
        about = self.about(traces)
        missed = [s for s, _ in self.stored_for(traces)
                  if any(s.event.event_id not in seen.get(t.trace_id, ()) for t in about(s.event))]  # fmt: skip
        return self.link_late(missed) if missed else 0

    def sweep(self, traces: Sequence[AboutTrace], oldest_decision_ms: int) -> int:
        """For decided traces whose partitions a worker takes over (a restart, a rebalance): link
        late the events about them that no decision of theirs saw and nothing linked to them —
        what a worker killed between a chunk's trace rows and :meth:`link_missed` leaves (also an
        event of a conversation that the events side linked, meanwhile, to the conversation's
        other decided traces only). Such an event was stored while its trace was decided, so only
        events stored since the oldest of these decisions (less the clocks' skew) are read: one
        time-bounded scan, not a lookup per trace. Returns how many were linked."""
        since_ms = oldest_decision_ms - SWEEP_CLOCK_SKEW_MS
        about = self.about(traces)
        pairs = {(t.trace_id, s.event.event_id): s for s, _ in self.stored_since(since_ms) for t in about(s.event)}
        if not pairs:
            return 0
        # what the decisions saw and what is linked, for a start: the action-signal rows since
        # the events' oldest time (``ts`` is the event's). An event older than that bound is
        # checked by link_late, which asks for exactly these traces and events (find_decided).
        oldest = max(min(s.event.ts_ms for s in pairs.values()), since_ms - SWEEP_TS_SLACK_MS)
        _, rows = self.store.query(
            f"SELECT trace_id, signal_key FROM {self.db}.signals PREWHERE ts >= fromUnixTimestamp64Milli({{o:Int64}}) "
            "WHERE source = 'action'", {"o": oldest},
        )  # fmt: skip
        seen = {(str(t), str(k)) for t, k in rows}
        missed = {s.event.event_id: s for key, s in pairs.items() if key not in seen}
        linked = self.link_late(list(missed.values())) if missed else 0
        if linked:
            log.warning("linked %d product event(s) late to decided traces taken over (left unlinked by a worker "
                        "stopped between a trace row and its events re-check)", linked)  # fmt: skip
        return linked

    def about(self, traces: Sequence[AboutTrace]) -> Callable[[ActionEvent], list[AboutTrace]]:
        """event -> those of ``traces`` it is about (:meth:`joins`), indexed by id and conversation."""
        by_id: dict[str, AboutTrace] = {t.trace_id: t for t in traces}
        by_conv: dict[str, list[AboutTrace]] = {}
        for t in traces:
            if t.conversation_id:
                by_conv.setdefault(t.conversation_id, []).append(t)

        def of(e: ActionEvent) -> list[AboutTrace]:
            if e.trace_id:
                return [by_id[e.trace_id]] if e.trace_id in by_id else []
            return [t for t in by_conv.get(e.conversation_id, ()) if self.joins(t, e)]

        return of


def _earliest_ns(t: AboutTrace) -> int:
    """When an event about ``t`` may first have been stored: its start, or when a worker first saw
    a span of it if that is earlier (the agent's clock ahead of the workers'; a stored trace row
    has no such time)."""
    seen = getattr(t, "first_seen_ns", 0)
    return min(t.start_ns, seen) if seen > 0 else t.start_ns
