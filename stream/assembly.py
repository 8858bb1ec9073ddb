"""Trace assembly: spans in, complete traces out. Pure logic; the caller passes the time.

A trace is complete when
* its root span has arrived (spans are exported when they end) and no span arrived for
  ``decision_wait`` — :attr:`CompletionReason.ROOT_ENDED_IDLE`; or
* it has been open for ``max_trace_age`` — :attr:`CompletionReason.MAX_AGE`; or
* ``max_open_traces`` would be exceeded — the oldest open traces are completed first with
  :attr:`CompletionReason.EVICTED`.

Completed trace ids stay in a bounded *decided cache* together with the highest source offset
that went into them. A span for a decided trace from a message at or below that offset is a replay
of data already included (not late); from a newer message it is *late*: it is stored and counted
but never re-opens the trace.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from schemas.model import CompletionReason, Span, Trace

TP = tuple[str, int]  # (topic, partition) that owns a trace's state


@dataclass(slots=True)
class OpenTrace:
    trace_id: str
    tp: TP
    first_seen_ns: int
    last_seen_ns: int
    spans: dict[str, Span] = field(default_factory=dict)
    root_seen: bool = False
    max_offset: int = -1
    spans_not_held: int = 0
    resumed_ns: int = 0  # when this owner restored it from the store (0: never restored)


@dataclass(frozen=True, slots=True)
class Decided:
    tp: TP
    max_offset: int
    completed_ns: int


@dataclass(frozen=True, slots=True)
class CompletedTrace:
    trace: Trace
    tp: TP
    max_offset: int
    spans_not_held: int


@dataclass(slots=True)
class AddResult:
    late: list[Span] = field(default_factory=list)  # spans of already-completed traces
    replayed: int = 0  # spans already part of a trace (redelivered messages)
    not_held: int = 0  # spans past max_spans_per_trace (stored, not kept in memory)
    evicted: list[CompletedTrace] = field(default_factory=list)


class TraceAssembler:
    def __init__(
        self,
        decision_wait: float,
        max_trace_age: float,
        max_open_traces: int,
        max_spans_per_trace: int = 10_000,
        decided_cache_size: int = 200_000,
    ) -> None:
        self.decision_wait_ns = int(decision_wait * 1e9)
        self.max_age_ns = int(max_trace_age * 1e9)
        self.max_open = max_open_traces
        self.max_spans = max_spans_per_trace
        self.decided_size = decided_cache_size
        self._open: dict[str, OpenTrace] = {}  # insertion order == first seen
        self._idle: OrderedDict[str, None] = OrderedDict()  # root seen; by max(last_seen, resumed)
        self._decided: OrderedDict[str, Decided] = OrderedDict()  # ordered by completion
        self._restored: dict[str, OpenTrace] = {}  # restored, not yet resumed (see resume)
        self.late_total = 0

    # ---- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._open)

    def is_open(self, trace_id: str) -> bool:
        return trace_id in self._open

    def decided(self, trace_id: str) -> Decided | None:
        return self._decided.get(trace_id)

    @property
    def decided_horizon_ns(self) -> int | None:
        """Completion time of the oldest decided entry still cached (None if the cache never filled)."""
        if len(self._decided) < self.decided_size:
            return None
        return next(iter(self._decided.values())).completed_ns

    def open_tps(self) -> set[TP]:
        return {t.tp for t in self._open.values()}

    # ---- updates ---------------------------------------------------------------------------
    def add(self, spans: list[Span], tp: TP, offset: int, now_ns: int) -> AddResult:
        """Add the spans of one source message (``offset`` in ``tp``)."""
        result = AddResult()
        again: dict[str, bool] = {}  # per open trace: is this message one it has already had?
        for span in spans:
            tid = span.trace_id
            ot = self._open.get(tid)
            if ot is None:
                decided = self._decided.get(tid)
                if decided is not None:
                    if decided.tp == tp and offset <= decided.max_offset:
                        result.replayed += 1
                    else:
                        result.late.append(span)
                        self.late_total += 1
                    continue
                ot = OpenTrace(tid, tp, now_ns, now_ns)
                self._open[tid] = ot
                again[tid] = False
            elif tid not in again:  # before this message moves max_offset
                again[tid] = ot.tp == tp and offset <= ot.max_offset
            self._hold(ot, span, offset, now_ns, result, again[tid])
        self._evict_over_limit(now_ns, result)
        return result

    def restore(self, spans: list[tuple[Span, int, int]], tp: TP, now_ns: int) -> list[CompletedTrace]:
        """Re-open traces from stored spans: (span, source offset, ingested_at ns) tuples.
        Returns traces evicted to stay within ``max_open_traces``."""
        result = AddResult()
        restored: dict[str, OpenTrace] = {}
        for span, offset, ingested_ns in sorted(spans, key=lambda x: x[2]):
            ot = self._open.get(span.trace_id)
            if ot is None:
                ot = OpenTrace(span.trace_id, tp, ingested_ns, ingested_ns)
                self._open[span.trace_id] = ot
            restored[span.trace_id] = ot
            self._hold(ot, span, offset, ingested_ns, result)
        for tid, ot in restored.items():  # quiet from now at the earliest (see resume)
            ot.resumed_ns = now_ns
            if tid in self._idle:
                self._idle.move_to_end(tid)
        self._restored.update(restored)
        self._evict_over_limit(now_ns, result)
        return result.evicted

    def resume(self, now_ns: int) -> None:
        """The time no consumer read a partition (a crash, a restart, a handover) is not quiet time:
        the rest of a trace may be waiting in the log right after the committed offset. So the
        traces restored since the last call wait ``decision_wait`` from ``now_ns`` (call it when
        consumption resumes, after every assigned partition is restored) before completing as idle."""
        for tid, ot in self._restored.items():
            if self._open.get(tid) is ot:
                ot.resumed_ns = max(ot.resumed_ns, now_ns)
                if tid in self._idle:
                    self._idle.move_to_end(tid)
        self._restored.clear()

    def remember_decided(self, trace_id: str, decided: Decided) -> None:
        self._decided[trace_id] = decided
        self._decided.move_to_end(trace_id)
        while len(self._decided) > self.decided_size:
            self._decided.popitem(last=False)

    def revoke(self, tps: set[TP]) -> int:
        """Forget open traces owned by revoked partitions (their new owner restores them)."""
        gone = [tid for tid, ot in self._open.items() if ot.tp in tps]
        for tid in gone:
            del self._open[tid]
            self._idle.pop(tid, None)
        return len(gone)

    def expire(self, now_ns: int, limit: int | None = None) -> list[CompletedTrace]:
        """Complete the traces that are due at ``now_ns`` (at most ``limit``, oldest first)."""
        done: list[CompletedTrace] = []
        while self._idle and (limit is None or len(done) < limit):
            tid = next(iter(self._idle))
            ot = self._open[tid]
            if max(ot.last_seen_ns, ot.resumed_ns) + self.decision_wait_ns > now_ns:
                break
            done.append(self._complete(tid, CompletionReason.ROOT_ENDED_IDLE, now_ns))
        while self._open and (limit is None or len(done) < limit):
            tid, ot = next(iter(self._open.items()))
            if ot.first_seen_ns + self.max_age_ns > now_ns:
                break
            done.append(self._complete(tid, CompletionReason.MAX_AGE, now_ns))
        return done

    # ---- internals -------------------------------------------------------------------------
    def _hold(self, ot: OpenTrace, span: Span, offset: int, now_ns: int, result: AddResult,
              redelivered: bool = False) -> None:  # fmt: skip
        ot.max_offset = max(ot.max_offset, offset)
        ot.last_seen_ns = max(ot.last_seen_ns, now_ns)
        if span.span_id in ot.spans:
            result.replayed += 1
            ot.spans[span.span_id] = span
        elif len(ot.spans) >= self.max_spans and not (span.is_root and not ot.root_seen):
            # past the cap, spans are stored but not held — except the first root (one span more
            # at most): without it the trace row would name a child as the root. One of a message
            # the trace already had (redelivered after a restart or a rebalance) was counted then.
            if redelivered:
                result.replayed += 1
                return
            ot.spans_not_held += 1
            result.not_held += 1
        else:
            ot.spans[span.span_id] = span
        if span.is_root:
            ot.root_seen = True
        if ot.root_seen:
            self._idle[ot.trace_id] = None
            self._idle.move_to_end(ot.trace_id)

    def _evict_over_limit(self, now_ns: int, result: AddResult) -> None:
        while len(self._open) > self.max_open:
            tid = next(iter(self._open))
            result.evicted.append(self._complete(tid, CompletionReason.EVICTED, now_ns))

    def _complete(self, tid: str, reason: CompletionReason, now_ns: int) -> CompletedTrace:
        ot = self._open.pop(tid)
        self._idle.pop(tid, None)
        spans = sorted(ot.spans.values(), key=lambda s: (s.start_ns, s.span_id))
        trace = Trace.fast(
            trace_id=tid,
            spans=spans,
            completion_reason=reason,
            first_seen_ns=ot.first_seen_ns,
            last_seen_ns=ot.last_seen_ns,
            completed_ns=now_ns,
        )
        self.remember_decided(tid, Decided(ot.tp, ot.max_offset, now_ns))
        return CompletedTrace(trace, ot.tp, ot.max_offset, ot.spans_not_held)
