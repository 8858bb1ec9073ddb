"""Product-event joins against a growing store: what one completed chunk and one events batch cost.

    python bench/event_joins.py [--sizes 100000,1000000,3000000] [--chunk 100] [--batch 100]
                                [--window 23000] [--rate 400] [--dsn DSN]

The joins of :mod:`stream.events` read ClickHouse: per completed chunk of traces the pipeline reads
their product events twice (:meth:`EventJoiner.signals_for` before deciding; the re-check,
:meth:`EventJoiner.stored_for`, that :meth:`EventJoiner.link_missed` makes after the trace rows
are in); per batch of product events the
events side looks for decided traces (:meth:`EventJoiner.find_decided`); when a worker takes
partitions over, it sweeps the events stored since the oldest decision of their recovery window
(:meth:`EventJoiner.sweep`, ``--window`` decided traces: one of 12 partitions of a worker
deciding 400 traces/s holds ~23,000 in the 690 s window of the default settings; a restart
taking all 12, ~276,000). The benchmark stores traces (random ids, conversations of ~5 traces,
``--rate`` traces a second of traffic time), product events (one per 3 traces, half naming the
trace, half only its conversation) and the ``signals`` rows of the decisions that saw 9 in 10 of
them, up to each size: in inserts of 200,000 traces, and the latest ``--window`` in inserts of a
second of traffic each, as a worker writes them (the layout of the table's newest parts is what
a read bounded by time reads). It then times the real ``EventJoiner`` methods on the latest
``--chunk`` traces (the chunk completing now), the latest ``--batch`` stored events no decision
saw and the latest ``--window`` traces: medians of ``--repeat`` calls.
The other benchmarks start from empty tables, so they cannot show how these costs grow with what
is stored.

A benchmark, not a test: it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/event_joins.py` from anywhere
    sys.path.insert(0, str(ROOT))

from stream.decision_rows import SIGNAL_COLUMNS  # noqa: E402
from stream.events import AGENT_CLOCK_SKEW_MS, BOUNDED_READ_MAX_MS, SWEEP_CLOCK_SKEW_MS, EventJoiner  # noqa: E402
from stream.signals.actions import ActionEvent  # noqa: E402
from stream.store import ClickHouseStore  # noqa: E402

T0_MS = 1_790_000_000_000
TRACE_COLUMNS = ["trace_id", "conversation_id", "start_time", "end_time", "policy_version", "completed_at"]
EVENT_COLUMNS = ["event_id", "trace_id", "conversation_id", "type", "ts", "attributes", "linked_trace_id",
                 "is_late", "ingested_at"]  # fmt: skip


def fill(store: ClickHouseStore, rng: random.Random, start: int, stop: int, convs: int, rate: int,
         per_insert: int = 200_000) -> None:
    """Traces ``start`` to ``stop`` (``rate`` a second) and their events, ``per_insert`` traces per
    insert; 9 in 10 events have the ``signals`` row of the decision that saw them, the others are
    events that came after it (not linked yet: what the events side looks up)."""
    for lo in range(start, stop, per_insert):
        traces, events, seen = [], [], []
        for i in range(lo, min(stop, lo + per_insert)):
            tid, conv, st = rng.randbytes(16).hex(), f"conv-{rng.randrange(convs)}", T0_MS + i * 1000 // rate
            traces.append([tid, conv, st * 10**6, (st + 5_000) * 10**6, "v1", st + 6_000])  # ns, ns, ms
            if i % 3 == 0:
                eid = rng.randbytes(8).hex()
                events.append([eid, "" if i % 2 else tid, conv, "regenerate", st + 1_000, "{}", "", 0, st + 7_000])
                if i % 30:
                    seen.append([tid, "action", "regenerate", "positive", "action:regenerate", eid, "", "", -1, "", 0,
                                 "v1", st + 1_000])  # fmt: skip
        store.insert("traces", traces, TRACE_COLUMNS)
        store.insert("action_events", events, EVENT_COLUMNS)
        store.insert("signals", seen, SIGNAL_COLUMNS)


@dataclass(frozen=True)
class Completed:
    """What the joins read of a completed trace (a ``schemas.model.Trace`` derives them from its spans)."""

    trace_id: str
    conversation_id: str
    start_ns: int
    end_ns: int
    completed_ns: int


def sample(store: ClickHouseStore, chunk: int, batch: int) -> tuple[list[Any], list[ActionEvent]]:
    """The latest traces (a chunk completing now), and the latest stored events no decision saw
    (late ones, as an events batch brings them)."""
    db = store.database
    _, rows = store.query(
        "SELECT trace_id, conversation_id, toUnixTimestamp64Milli(start_time), toUnixTimestamp64Milli(end_time) "
        f"FROM {db}.traces ORDER BY start_time DESC LIMIT {{n:UInt32}}", {"n": chunk},
    )  # fmt: skip
    traces = [Completed(r[0], r[1], int(r[2]) * 10**6, int(r[3]) * 10**6, (int(r[3]) + 6_000) * 10**6) for r in rows]
    _, rows = store.query(
        "SELECT event_id, type, toUnixTimestamp64Milli(ts), trace_id, conversation_id "
        f"FROM {db}.action_events WHERE event_id NOT IN (SELECT signal_key FROM {db}.signals) "
        "ORDER BY ingested_at DESC LIMIT {n:UInt32}", {"n": batch},
    )  # fmt: skip
    return traces, [ActionEvent(r[0], r[1], int(r[2]), r[3], r[4]) for r in rows]


def backlog_chunk(store: ClickHouseStore, chunk: int) -> list[Completed]:
    """The oldest traces, decided now: a chunk of a worker catching up on a backlog as old as the store."""
    _, rows = store.query(
        "SELECT trace_id, conversation_id, toUnixTimestamp64Milli(start_time), toUnixTimestamp64Milli(end_time) "
        f"FROM {store.database}.traces ORDER BY start_time LIMIT {{n:UInt32}}", {"n": chunk},
    )  # fmt: skip
    return [Completed(r[0], r[1], int(r[2]) * 10**6, int(r[3]) * 10**6, (int(r[3]) + 6_000) * 10**6) for r in rows]


def recovery_window(store: ClickHouseStore, joiner: EventJoiner, n: int) -> tuple[list[Completed], int, int]:
    """The ``n`` latest traces, as the decided traces of partitions a worker takes over: them, their
    oldest decision (ms), and how many of the events the sweep reads are about them (here: all
    their events, stored after them)."""
    _, rows = store.query(
        "SELECT trace_id, conversation_id, toUnixTimestamp64Milli(start_time), toUnixTimestamp64Milli(end_time) "
        f"FROM {store.database}.traces ORDER BY start_time DESC LIMIT {{n:UInt32}}", {"n": n},
    )  # fmt: skip
    traces = [Completed(r[0], r[1], int(r[2]) * 10**6, int(r[3]) * 10**6, (int(r[3]) + 6_000) * 10**6) for r in rows]
    oldest = min(t.completed_ns for t in traces) // 1_000_000
    about = joiner.about(traces)
    return traces, oldest, sum(1 for s, _ in joiner.stored_since(oldest - SWEEP_CLOCK_SKEW_MS) if about(s.event))


def timed(fn: Any, repeat: int) -> float:
    xs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t)
    return statistics.median(xs) * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100000,1000000,3000000", help="traces stored at each measurement")
    p.add_argument("--chunk", type=int, default=100, help="traces in a completed chunk (default 100)")
    p.add_argument("--batch", type=int, default=100, help="product events in an events batch (default 100)")
    p.add_argument("--window", type=int, default=23_000, help="decided traces of the partitions taken over")
    p.add_argument("--rate", type=int, default=400, help="traces a second of traffic (default 400)")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--dsn", default=None, help="a ClickHouse server, or chDB (a fresh database, dropped after); "
                                               "default: embedded chDB in a temporary directory")  # fmt: skip
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    try:
        sizes = sorted(int(x) for x in args.sizes.split(","))
    except ValueError:
        p.error(f"--sizes takes whole numbers separated by commas, not {args.sizes!r}")
    if min(args.chunk, args.batch, args.repeat, args.window, args.rate) < 1:
        p.error("--chunk, --batch, --window, --rate and --repeat must be at least 1")
    if not sizes or sizes[0] < max(args.chunk, args.window, 30 * args.batch):
        p.error("each size must hold at least --chunk and --window traces, and 30 x --batch of them "
                "(one event per 3 traces, 1 in 10 of them not seen by a decision)")
    tmp = None if args.dsn else Path(tempfile.mkdtemp(prefix="tj-joins-"))
    dsn = args.dsn or f"chdb://{tmp / 'ch'}"  # (a chDB engine of its own: run it as a process of its own)
    store = ClickHouseStore(dsn, f"bench_joins_{uuid.uuid4().hex[:8]}" if args.dsn else "tracejudge")
    results: list[dict[str, Any]] = []
    try:
        store.migrate()
        now_ns = [0]  # the traffic's time: the newest trace's event stored
        joiner = EventJoiner(store, "", ["regenerate"], 600, clock=lambda: now_ns[0])
        rng, have = random.Random(1), 0
        print(f"{'traces stored':>14} {'events':>10} {'signals_for':>12} {'re-check':>9} {'backlog':>13} "
              f"{'find_decided':>13} {'sweep':>8}   (ms per call, medians of {args.repeat}; chunk {args.chunk} traces, "
              f"batch {args.batch} events, sweep {args.window:,} traces; backlog: the oldest chunk, read by time "
              f"or by key)")  # fmt: skip
        for size in sizes:
            recent = max(have, size - args.window)  # the latest traces in a worker's inserts
            fill(store, rng, have, recent, max(1, size // 5), args.rate)
            fill(store, rng, recent, size, max(1, size // 5), args.rate, per_insert=args.rate)
            have = size
            now_ns[0] = (T0_MS + (size - 1) * 1000 // args.rate + 7_000) * 10**6
            window, oldest_ms, window_events = recovery_window(store, joiner, args.window)
            traces, events = sample(store, args.chunk, args.batch)
            backlog = backlog_chunk(store, args.chunk)
            since_ms = min(t.start_ns for t in backlog) // 10**6 - AGENT_CLOCK_SKEW_MS
            by_key = now_ns[0] // 10**6 - since_ms > BOUNDED_READ_MAX_MS  # as EventJoiner.stored_for decides
            row = {
                "traces": size,
                "events": (size + 2) // 3,
                # what the timed calls find: every event of the batch has its trace stored
                "found": {"signals_for": sum(map(len, joiner.signals_for(traces).values())),
                          "stored_for": len(joiner.stored_for(traces)),
                          "find_decided": len(joiner.find_decided(events)), "batch": len(events),
                          "window_events": window_events, "sweep_linked": joiner.sweep(window, oldest_ms),
                          "sweep_linked_again": joiner.sweep(window, oldest_ms),
                          "backlog_stored_for": len(joiner.stored_for(backlog)),
                          "backlog_read": "by key" if by_key else "by time"},
                "signals_for_ms": timed(lambda: joiner.signals_for(traces), args.repeat),
                "recheck_ms": timed(lambda: joiner.stored_for(traces), args.repeat),  # link_missed's read
                "backlog_ms": timed(lambda: joiner.stored_for(backlog), args.repeat),
                "find_decided_ms": timed(lambda: joiner.find_decided(events), args.repeat),
                "sweep_ms": timed(lambda: joiner.sweep(window, oldest_ms), args.repeat),
            }
            results.append(row)
            backlog_cell = f"{row['backlog_ms']:.1f} {'key' if by_key else 'time'}"
            print(f"{size:>14,} {row['events']:>10,} {row['signals_for_ms']:>12.1f} {row['recheck_ms']:>9.1f} "
                  f"{backlog_cell:>13} {row['find_decided_ms']:>13.1f} {row['sweep_ms']:>8.1f}", flush=True)  # fmt: skip
    finally:
        if args.dsn:
            store.command(f"DROP DATABASE IF EXISTS {store.database} SYNC")
        store.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"chunk": args.chunk, "batch": args.batch, "window": args.window,
                                         "rate": args.rate, "repeat": args.repeat,
                                         "results": results}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
