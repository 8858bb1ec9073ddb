"""Trace assembly with an injected clock: completion rules, eviction, late spans, replays."""

from __future__ import annotations

import pytest

from schemas.model import CompletionReason, Span
from stream.assembly import Decided, TraceAssembler

S = 1_000_000_000  # one second in ns
TP = ("otlp_spans", 0)


def span(trace: int, span_id: int, parent: int | None = None) -> Span:
    return Span(
        trace_id=f"{trace:032x}",
        span_id=f"{span_id:016x}",
        parent_span_id=f"{parent:016x}" if parent else None,
        start_ns=1,
        end_ns=2,
    )


def assembler(**kw: float) -> TraceAssembler:
    args = {"decision_wait": 30, "max_trace_age": 600, "max_open_traces": 100, "max_spans_per_trace": 50}
    args.update(kw)
    return TraceAssembler(**args)  # type: ignore[arg-type]


def test_completes_after_root_and_quiet_period() -> None:
    a = assembler()
    a.add([span(1, 2, parent=1)], TP, 0, now_ns=0)
    a.add([span(1, 1)], TP, 1, now_ns=5 * S)  # root arrives (ended) at t=5
    assert a.expire(34 * S) == []  # 29 s of quiet: not yet
    a.add([span(1, 3, parent=1)], TP, 2, now_ns=20 * S)  # any span resets the quiet period
    assert a.expire(49 * S) == []
    (done,) = a.expire(50 * S)
    assert done.trace.completion_reason == CompletionReason.ROOT_ENDED_IDLE
    assert [s.span_id for s in done.trace.spans] == [f"{i:016x}" for i in (1, 2, 3)]
    assert done.max_offset == 2 and done.tp == TP
    assert len(a) == 0


def test_trace_without_root_completes_at_max_age() -> None:
    a = assembler(max_trace_age=60)
    a.add([span(1, 2, parent=1)], TP, 0, now_ns=0)
    assert a.expire(59 * S) == []
    (done,) = a.expire(60 * S)
    assert done.trace.completion_reason == CompletionReason.MAX_AGE


def test_busy_trace_is_cut_at_max_age_even_if_spans_keep_coming() -> None:
    a = assembler(max_trace_age=60, decision_wait=30)
    a.add([span(1, 1)], TP, 0, now_ns=0)
    for t in range(10, 70, 10):
        a.add([span(1, 100 + t, parent=1)], TP, t, now_ns=t * S)
        done = a.expire(t * S)
        if done:
            break
    assert done and done[0].trace.completion_reason == CompletionReason.MAX_AGE and t == 60


def test_max_open_traces_evicts_oldest_first() -> None:
    a = assembler(max_open_traces=2)
    a.add([span(1, 1)], TP, 0, now_ns=0)
    a.add([span(2, 1)], TP, 1, now_ns=1)
    res = a.add([span(3, 1)], TP, 2, now_ns=2)
    assert [c.trace.trace_id for c in res.evicted] == [f"{1:032x}"]
    assert res.evicted[0].trace.completion_reason == CompletionReason.EVICTED
    assert len(a) == 2 and a.is_open(f"{3:032x}")


def test_late_span_is_reported_and_never_reopens() -> None:
    a = assembler(decision_wait=1)
    a.add([span(1, 1)], TP, 5, now_ns=0)
    assert len(a.expire(2 * S)) == 1
    res = a.add([span(1, 9, parent=1)], TP, 6, now_ns=3 * S)  # newer message: late
    assert [s.span_id for s in res.late] == [f"{9:016x}"] and a.late_total == 1
    assert not a.is_open(f"{1:032x}")


def test_redelivered_message_of_completed_trace_is_a_replay_not_late() -> None:
    a = assembler(decision_wait=1)
    a.add([span(1, 1)], TP, 5, now_ns=0)
    a.expire(2 * S)
    res = a.add([span(1, 1)], TP, 5, now_ns=3 * S)
    assert res.late == [] and res.replayed == 1


def test_duplicate_spans_within_open_trace_are_held_once() -> None:
    a = assembler()
    a.add([span(1, 1), span(1, 2, parent=1)], TP, 0, now_ns=0)
    res = a.add([span(1, 2, parent=1)], TP, 0, now_ns=1)
    assert res.replayed == 1
    (done,) = a.expire(31 * S)
    assert len(done.trace.spans) == 2


def test_spans_past_the_per_trace_limit_are_counted_not_held() -> None:
    a = assembler(max_spans_per_trace=3)
    res = a.add([span(1, 1)] + [span(1, i, parent=1) for i in range(2, 7)], TP, 0, now_ns=0)
    assert res.not_held == 3
    (done,) = a.expire(31 * S)
    assert len(done.trace.spans) == 3 and done.spans_not_held == 3


def test_a_root_arriving_past_the_limit_is_still_held_so_the_trace_names_its_real_root() -> None:
    a = assembler(max_spans_per_trace=3)
    res = a.add([span(1, i, parent=1) for i in range(2, 7)] + [span(1, 1)], TP, 0, now_ns=0)
    assert res.not_held == 2  # children 5 and 6; the root is the one span held past the limit
    (done,) = a.expire(31 * S)
    assert [s.span_id for s in done.trace.spans if s.is_root] == [f"{1:016x}"]
    assert len(done.trace.spans) == 4 and done.spans_not_held == 2


def test_spans_past_the_limit_redelivered_are_not_counted_twice() -> None:
    """After a kill, the restore counts the stored spans over the cap; the messages stored but not
    committed are then read again, and their spans over the cap were counted a second time: the
    trace row's span_count said more spans than were stored. Same for a redelivery after a
    rebalance that kept the partition here."""
    message = [span(1, 1)] + [span(1, i, parent=1) for i in range(2, 6)]  # root + 4, cap 3
    a = assembler(max_spans_per_trace=3)
    assert a.add(message, TP, 5, now_ns=0).not_held == 2
    b = assembler(max_spans_per_trace=3)  # the next owner
    b.restore([(s, 5, 0) for s in message], TP, now_ns=S)
    b.resume(S)
    again = b.add(message, TP, 5, now_ns=2 * S)  # redelivered from the committed offset
    assert (again.not_held, again.replayed) == (0, 5)
    more = b.add([span(1, 9, parent=1)], TP, 6, now_ns=3 * S)  # a new message: counted
    assert more.not_held == 1
    assert a.add(message, TP, 5, now_ns=S).not_held == 0  # the first owner, redelivered the same
    (done,) = b.expire(40 * S)
    assert len(done.trace.spans) + done.spans_not_held == 6  # root + 4 + the new one, each once


def test_restore_and_revoke() -> None:
    a = assembler()
    other = ("otlp_spans", 1)
    assert a.restore([(span(1, 1), 7, 10 * S), (span(1, 2, parent=1), 8, 11 * S)], TP, now_ns=12 * S) == []
    a.add([span(2, 1)], other, 0, now_ns=12 * S)
    assert a.is_open(f"{1:032x}") and len(a) == 2
    assert a.revoke({other}) == 1 and len(a) == 1
    assert a.expire(41 * S) == []  # last span stored at 11 s, but restored at 12 s: quiet since 12 s
    (done,) = a.expire(42 * S)
    assert done.max_offset == 8 and done.trace.first_seen_ns == 10 * S and done.trace.last_seen_ns == 11 * S


def test_a_restored_trace_waits_decision_wait_from_the_resume_so_its_other_parts_join() -> None:
    """Downtime is not quiet time: a trace restored long after its last stored span still waits
    decision_wait, so the rest of it (redelivered from the log after a crash) joins it."""
    a = assembler()
    a.add([span(3, 1)], ("otlp_spans", 1), 0, now_ns=99 * S)  # open elsewhere, idle since 99 s
    a.restore([(span(1, 1), 7, 10 * S)], TP, now_ns=100 * S)  # root stored at 10 s, restored at 100 s
    (first,) = a.expire(129 * S)
    assert first.trace.trace_id == f"{3:032x}"  # the restored trace is not due yet
    a.resume(now_ns=102 * S)  # every assigned partition restored: consumption resumes
    a.add([span(1, 2, parent=1)], TP, 9, now_ns=101 * S)
    assert a.expire(131 * S) == []
    (done,) = a.expire(132 * S)
    assert len(done.trace.spans) == 2 and done.max_offset == 9


@pytest.mark.parametrize("size,expected", [(2, None), (1, 5)], ids=["not-full", "full"])
def test_decided_horizon_only_when_cache_is_full(size: int, expected: int | None) -> None:
    a = assembler(decided_cache_size=size)
    a.remember_decided("a" * 32, Decided(TP, 0, 5))
    assert a.decided_horizon_ns == expected


def test_restore_respects_max_open_traces() -> None:
    a = assembler(max_open_traces=2)
    evicted = a.restore([(span(t, 1), t, t * S) for t in (1, 2, 3)], TP, now_ns=5 * S)
    assert [c.trace.trace_id for c in evicted] == [f"{1:032x}"] and len(a) == 2
    assert evicted[0].trace.completion_reason == CompletionReason.EVICTED
