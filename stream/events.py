"""Product events -> action signals, joined to traces through ClickHouse.

Events and traces are keyed differently (an event may only know its conversation), so they are
not co-partitioned; ClickHouse is the join point:

* every valid event is stored in ``action_events`` (idempotent by event id); if its trace was
  already decided it is linked to it right away, marked late, and written to ``signals``;
* when a trace completes, the pipeline asks :meth:`EventJoiner.signals_for` for the events of that
  trace id, or of its conversation within ``action_join_window`` after the trace ended; they take
  part in the sampling decision (a ``thumbs_down`` makes the trace a suspected failure).

Malformed events and unknown types go to the events dead-letter topic with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from schemas.model import Trace
from stream.decision_rows import SIGNAL_COLUMNS
from stream.dlq import InMessage, OutRecord, dead_letter
from stream.signals.actions import KNOWN_TYPES, ActionEvent, EventError, parse_event
from stream.signals.base import Signal
from stream.store import ClickHouseStore
from stream.table_copy import NullCopy, each_taken

log = logging.getLogger(__name__)

EVENT_COLUMNS = (
    "event_id", "trace_id", "conversation_id", "type", "ts", "attributes", "linked_trace_id",
    "is_late", "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at",
)  # fmt: skip


def event_row(m: InMessage, e: ActionEvent, linked: str, now_ms: int) -> tuple[Any, ...]:
    """One ``action_events`` row; ``linked``: the decided trace it is linked to (late), or ""."""
    return (
        e.event_id, e.trace_id, e.conversation_id, e.type, e.ts_ms, e.attributes_json, linked,
        1 if linked else 0, m.topic, m.partition, m.offset, now_ms,
    )  # fmt: skip


class EventJoiner:
    def __init__(
        self,
        store: ClickHouseStore,
        dlq_topic: str,
        negative_types: Sequence[str],
        window_s: float,
        known_types: frozenset[str] = KNOWN_TYPES,
    ) -> None:
        self.store = store
        self.db = store.database
        self.dlq_topic = dlq_topic
        self.negative = frozenset(negative_types)
        self.known = known_types | self.negative
        self.window_ms = int(window_s * 1000)
        self.late_events = 0

    def parse(self, msgs: Sequence[InMessage]) -> tuple[list[tuple[InMessage, ActionEvent]], list[OutRecord]]:
        good, bad = [], []
        for m in msgs:
            try:
                good.append((m, parse_event(m.value, self.known)))
            except EventError as exc:
                log.warning("dead-letter event %s/%d@%d: %s", m.topic, m.partition, m.offset, exc)
                bad.append(dead_letter(m, self.dlq_topic, exc.reason, exc.detail))
        return good, bad

    def find_decided(self, events: Sequence[ActionEvent]) -> dict[str, tuple[str, str]]:
        """event id -> (trace id, policy version) for events whose trace is already decided."""
        ids = sorted({e.trace_id for e in events if e.trace_id})
        convs = sorted({e.conversation_id for e in events if e.conversation_id and not e.trace_id})
        out: dict[str, tuple[str, str]] = {}
        if ids:
            _, rows = self.store.query(
                f"SELECT trace_id, policy_version FROM {self.db}.traces FINAL WHERE trace_id IN {{ids:Array(String)}}",
                {"ids": ids},
            )
            decided = dict(rows)
            out.update({e.event_id: (e.trace_id, decided[e.trace_id]) for e in events if e.trace_id in decided})
        if convs:
            _, rows = self.store.query(
                "SELECT conversation_id, trace_id, policy_version, toUnixTimestamp64Milli(start_time), "
                f"toUnixTimestamp64Milli(end_time) FROM {self.db}.traces FINAL "
                "WHERE conversation_id IN {convs:Array(String)} ORDER BY start_time",
                {"convs": convs},
            )
            for e in events:
                if e.trace_id or not e.conversation_id:
                    continue
                # the latest trace of the conversation that started before the event, within the window
                match = [r for r in rows if r[0] == e.conversation_id and r[3] <= e.ts_ms <= r[4] + self.window_ms]
                if match:
                    out[e.event_id] = (match[-1][1], match[-1][2])
        return out

    def rows(self, batch: Sequence[tuple[InMessage, ActionEvent]], now_ms: int) -> tuple[list[Any], list[Any]]:
        """(action_events rows, signals rows for late events) — runs on the ClickHouse thread."""
        decided = self.find_decided([e for _, e in batch])
        events, signals = [], []
        for m, e in batch:
            linked, version = decided.get(e.event_id, ("", ""))
            late = 1 if linked else 0
            self.late_events += late
            events.append(event_row(m, e, linked, now_ms))
            if linked:
                s = e.signal(self.negative)
                signals.append((
                    linked, "action", s.type, s.polarity, s.rule, e.event_id, s.evidence or "", "", -1, "",
                    1, version, e.ts_ms,
                ))  # fmt: skip
        return events, signals

    def write(self, batch: Sequence[tuple[InMessage, ActionEvent]], now_ms: int, token: str) -> None:
        events, signals = self.rows(batch, now_ms)
        if signals:
            self.store.insert("signals", signals, SIGNAL_COLUMNS, dedup_token=token + ":signals")
        self.store.insert("action_events", events, EVENT_COLUMNS, dedup_token=token)

    async def probe(self, batch: Sequence[tuple[InMessage, ActionEvent]], now_ms: int) -> list[Exception | None]:
        """Each event's ``action_events`` row (unlinked) inserted alone into a copy of the table that
        keeps nothing: what each insert raised (stream/refused_rows.py, ``KnownGood``)."""
        rows = [event_row(m, e, "", now_ms) for m, e in batch]
        return await each_taken(lambda: NullCopy(self.store, "action_events", EVENT_COLUMNS), rows)

    def signals_for(self, traces: Sequence[Trace], as_decided: bool = False) -> dict[str, list[Signal]]:
        """Action signals for traces about to be decided (trace id, or conversation + window).

        ``as_decided``: for stored traces re-decided (``Trace.completed_ns`` set), only the events
        their decision saw. An event stored as late came after the decision of the trace it was
        linked to, so it is left out for that trace and for any other trace completed before the
        event was stored (``ingested_at``); a later trace of the conversation, decided after it
        came, saw it. Events not stored as late came before every decision that joins them."""
        if not traces:
            return {}
        ids = [t.trace_id for t in traces]
        convs = sorted({c for t in traces if (c := t.conversation_id)})
        _, rows = self.store.query(
            "SELECT event_id, type, toUnixTimestamp64Milli(ts), trace_id, conversation_id, attributes"
            + (", is_late, linked_trace_id, toUnixTimestamp64Milli(ingested_at)" if as_decided else "")
            + f" FROM {self.db}.action_events FINAL "
            "WHERE (trace_id IN {ids:Array(String)} OR (trace_id = '' AND conversation_id IN {convs:Array(String)}))",
            {"ids": ids, "convs": convs},
        )
        events = [ActionEvent(r[0], r[1], int(r[2]), r[3], r[4], r[5]) for r in rows]
        # per event: (trace it was linked to as late, when it was stored), None when not late
        late = [(str(r[7]), int(r[8])) if as_decided and r[6] else None for r in rows]
        out: dict[str, list[Signal]] = {}
        for t in traces:
            start_ms, end_ms = t.start_ns // 1_000_000, t.end_ns // 1_000_000
            decided_ms = t.completed_ns // 1_000_000
            for e, came_late in zip(events, late, strict=True):
                if came_late is not None and (came_late[0] == t.trace_id or came_late[1] > decided_ms):
                    continue
                by_trace = e.trace_id == t.trace_id
                by_conv = (
                    not e.trace_id
                    and e.conversation_id == t.conversation_id
                    and start_ms <= e.ts_ms <= end_ms + self.window_ms
                )
                if by_trace or by_conv:
                    out.setdefault(t.trace_id, []).append(e.signal(self.negative))
        return out
