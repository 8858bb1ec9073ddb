"""Memory benchmark: bytes per open trace with 50k open traces, and RSS over a steady-load run.

    python bench/memory.py                       # 50k open traces, then 10 minutes of steady load
    python bench/memory.py --open-traces 20000 --minutes 2

1. **Open traces.** A fresh ``tracejudge worker`` (embedded chDB, ``max_open_traces`` above the
   target, ``decision_wait`` long enough that nothing completes) reads ``--open-traces`` traces of
   which only the first spans have arrived: realistic GenAI traces from :mod:`bench.generate`, the
   root (which ends last) and all but ``--spans-per-open`` of the other spans held back, as in the
   middle of a real stream. RSS is read from ``/proc`` before anything is produced (after start-up
   and group join) and once the worker reports every trace open; bytes per open trace =
   (RSS with them − RSS before) / traces, compared with the raw OTLP protobuf bytes of their spans
   (target ≤ 3×). Peak RSS is VmHWM. The held-back spans then arrive, and RSS is read again once
   every trace completed: what the completed traces leave behind (decided cache, buffers).
2. **Steady load.** Another fresh worker; complete traces (timestamps of now) produced at
   ``--rate`` traces/s for ``--minutes``. RSS is sampled every 5 s. Reported: RSS at the start
   and end of the second half, its least-squares slope (MB/min), and the spans stored — flat
   means the slope of the second half is small next to the RSS (the bounded structures: the
   decided-trace cache holds up to ``decided_cache_size`` ids, and fills at the trace rate).

A benchmark: it prints figures and targets and asserts nothing. Results go to
``bench/results/memory-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import NS, build_trace  # noqa: E402
from bench.harness import max_timer_drift  # noqa: E402
from bench.ingest import produce  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
PARTITIONS = 4


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found for pid {pid}")


def split_open(value: bytes, keep: int) -> tuple[bytes, bytes, int]:
    """One trace message → (first part: up to ``keep`` non-root spans, rest: the other spans and
    the root, spans in the first part)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest.FromString(value)
    head, tail = ExportTraceServiceRequest(), ExportTraceServiceRequest()
    head.CopyFrom(req)
    tail.CopyFrom(req)
    kept = 0
    for h_rs, t_rs in zip(head.resource_spans, tail.resource_spans):
        for h_ss, t_ss in zip(h_rs.scope_spans, t_rs.scope_spans):
            spans = list(h_ss.spans)
            first = [s for s in spans if s.parent_span_id][: max(0, keep - kept)]
            ids = {s.span_id for s in first}
            kept += len(first)
            del h_ss.spans[:]
            h_ss.spans.extend(first)
            del t_ss.spans[:]
            t_ss.spans.extend(s for s in spans if s.span_id not in ids)
    return head.SerializeToString(), tail.SerializeToString(), kept


def worker_env(bootstrap: str, topic: str, data_dir: Path, run_id: str, **settings: str) -> dict[str, str]:
    from stream.demo.broker import free_port

    return {
        "TRACEJUDGE_KAFKA_BOOTSTRAP": bootstrap,
        "TRACEJUDGE_DATA_DIR": str(data_dir),
        "TRACEJUDGE_INPUT_TOPIC": topic,
        "TRACEJUDGE_DLQ_TOPIC": f"{topic}.dlq",
        "TRACEJUDGE_REPARTITION_TOPIC": f"{topic}.by_trace",
        "TRACEJUDGE_JUDGE_TOPIC": f"{topic}.to_judge",
        "TRACEJUDGE_CONSUMER_GROUP": f"bench-mem-{run_id}",
        "TRACEJUDGE_WEB_HOST": "127.0.0.1",
        "TRACEJUDGE_WEB_PORT": str(free_port()),
        "TRACEJUDGE_KAFKA_SESSION_TIMEOUT": "10",
        "TRACEJUDGE_LOG_LEVEL": "info",
        **{f"TRACEJUDGE_{k.upper()}": v for k, v in settings.items()},
    }


def wait_for(worker: Any, done: Any, timeout: float, what: str) -> dict[str, Any]:
    """Poll ``/api/status`` until ``done``. A poll that times out is retried: with tens of
    thousands of traces open the worker's event loop can stall for seconds (the stalls are
    reported from its log, :func:`bench.harness.max_timer_drift`), and the figures are still
    worth having."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = worker.status()
        except httpx.TimeoutException:
            continue
        if done(status):
            return status
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}: last status {worker.status()['counters']}")


def settle(pid: int, seconds: float = 3.0) -> float:
    """RSS after it stopped moving for a moment (median of a few reads)."""
    reads = []
    for _ in range(int(seconds / 0.5)):
        reads.append(rss_mb(pid))
        time.sleep(0.5)
    return statistics.median(reads)


# ---------------------------------------------------------------------------------------------
def open_traces_phase(bootstrap: str, work: Path, n: int, keep: int, seed: int) -> dict[str, Any]:
    from stream.topics import ensure_topics
    from stream.demo.run import WorkerProcess

    rng = random.Random(seed)
    base = time.time_ns() - 60 * NS
    heads: list[tuple[bytes, bytes]] = []
    tails: list[tuple[bytes, bytes]] = []
    spans_open = spans_total = 0
    for _ in range(n):
        tid, value, spans = build_trace(rng, base + rng.randrange(30 * NS))
        spans_total += spans
        head, tail, kept = split_open(value, keep)
        heads.append((tid.encode(), head))
        tails.append((tid.encode(), tail))
        spans_open += kept
    raw = sum(len(v) for _, v in heads)
    run_id = uuid.uuid4().hex[:8]
    topic = f"bench.mem.open.{run_id}"
    asyncio.run(ensure_topics(bootstrap, {topic: PARTITIONS}))
    env = worker_env(bootstrap, topic, work / f"open-{run_id}", run_id, decision_wait="900",
                     max_trace_age="1800", max_open_traces=str(n + 10_000))  # fmt: skip
    worker = WorkerProcess(env, work / f"open-{run_id}.log")
    try:
        worker.wait_ready()
        pid = worker.proc.pid
        before = settle(pid)
        asyncio.run(produce(bootstrap, topic, heads))
        wait_for(worker, lambda s: s["open_traces"] >= n, 600, f"{n} open traces")
        with_open = settle(pid)
        peak = rss_mb(pid, "VmHWM")
        asyncio.run(produce(bootstrap, topic, tails))
        # the tails carry the roots: the traces are now whole, still open (decision_wait 900 s)
        wait_for(worker, lambda s: s["counters"]["spans_stored"] >= spans_total, 600, "the rest of the spans")
        whole = settle(pid)
        status = worker.status()
    finally:
        worker.stop()
    per_trace = (with_open - before) * 1024 * 1024 / n
    raw_per_trace = raw / n
    return {
        "open_traces": n, "spans_per_open_trace": spans_open / n, "raw_bytes": raw,
        "rss_before_mb": before, "rss_with_open_mb": with_open, "peak_rss_mb": peak,
        "bytes_per_open_trace": per_trace, "raw_bytes_per_open_trace": raw_per_trace,
        "ratio": per_trace / raw_per_trace, "rss_whole_traces_open_mb": whole,
        "open_traces_at_end": status["open_traces"],
        "max_loop_stall_s": max_timer_drift(work / f"open-{run_id}.log"),
        "gc": status.get("gc"),  # collections, pause seconds and longest pause per generation
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
async def _steady_produce(bootstrap: str, topic: str, rate: float, seconds: float, seed: int,
                          counts: dict[str, int]) -> None:  # fmt: skip
    from aiokafka import AIOKafkaProducer

    rng = random.Random(seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_request_size=16 * 1024 * 1024)
    await producer.start()
    try:
        began = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - began) < seconds:
            due = int(elapsed * rate) + 1
            while sent < due:
                tid, value, spans = build_trace(rng, time.time_ns() - 20 * NS)
                await producer.send(topic, value, key=tid.encode())
                sent += 1
                counts["spans"] += spans
                counts["traces"] += 1
            await asyncio.sleep(0.05)
        await producer.flush()
    finally:
        await producer.stop()


def steady_phase(bootstrap: str, work: Path, rate: float, minutes: float, seed: int) -> dict[str, Any]:
    import threading

    from stream.topics import ensure_topics
    from stream.demo.run import WorkerProcess

    run_id = uuid.uuid4().hex[:8]
    topic = f"bench.mem.steady.{run_id}"
    asyncio.run(ensure_topics(bootstrap, {topic: PARTITIONS}))
    env = worker_env(bootstrap, topic, work / f"steady-{run_id}", run_id, decision_wait="5", tick_interval="1")
    worker = WorkerProcess(env, work / f"steady-{run_id}.log")
    counts = {"spans": 0, "traces": 0}
    samples: list[tuple[float, float, int, int]] = []  # (minutes, RSS MB, open traces, spans stored)
    try:
        worker.wait_ready()
        pid = worker.proc.pid
        seconds = minutes * 60
        producer = threading.Thread(
            target=lambda: asyncio.run(_steady_produce(bootstrap, topic, rate, seconds, seed, counts)), daemon=True
        )
        began = time.monotonic()
        producer.start()
        while producer.is_alive():
            status = worker.status()
            samples.append(((time.monotonic() - began) / 60, rss_mb(pid), status["open_traces"],
                            status["counters"]["spans_stored"]))  # fmt: skip
            time.sleep(5)
        producer.join()
        status = wait_for(worker, lambda s: s["counters"]["spans_stored"] >= counts["spans"], 300, "the last spans")
        peak = rss_mb(pid, "VmHWM")
    finally:
        worker.stop()
    half = [s for s in samples if s[0] >= minutes / 2]
    slope = statistics.linear_regression([s[0] for s in half], [s[1] for s in half]).slope if len(half) > 2 else None
    return {
        "rate_traces_per_s": rate, "minutes": minutes, "traces": counts["traces"], "spans": counts["spans"],
        "spans_stored": status["counters"]["spans_stored"], "samples": samples,
        "rss_start_mb": samples[0][1] if samples else None,
        "rss_second_half_first_mb": half[0][1] if half else None,
        "rss_end_mb": samples[-1][1] if samples else None, "rss_max_mb": max((s[1] for s in samples), default=None),
        "peak_rss_mb": peak, "second_half_slope_mb_per_min": slope,
        "open_traces_median": statistics.median(s[2] for s in samples) if samples else None,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--open-traces", type=int, default=50_000)
    p.add_argument("--spans-per-open", type=int, default=6, help="spans of each open trace that have arrived")
    p.add_argument("--minutes", type=float, default=10.0, help="steady-load run (0: skip)")
    p.add_argument("--rate", type=float, default=40.0, help="steady load, traces/s (~35 spans each)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    from stream.demo.broker import LocalBroker

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="tracejudge-bench-mem-"))
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    with LocalBroker(work / "broker") as broker:
        if args.open_traces:
            o = open_traces_phase(broker.bootstrap, work, args.open_traces, args.spans_per_open, args.seed)
            result["open"] = o
            print(f"open traces: {o['open_traces']:,} with {o['spans_per_open_trace']:.1f} spans each "
                  f"({o['raw_bytes'] / 1e6:,.0f} MB of OTLP)")  # fmt: skip
            print(f"  RSS before {o['rss_before_mb']:,.0f} MB, with them open {o['rss_with_open_mb']:,.0f} MB, "
                  f"peak {o['peak_rss_mb']:,.0f} MB; whole traces open {o['rss_whole_traces_open_mb']:,.0f} MB")
            print(f"  bytes per open trace {o['bytes_per_open_trace']:,.0f} vs raw {o['raw_bytes_per_open_trace']:,.0f}"
                  f" = {o['ratio']:.2f}x   (target <= 3x)", flush=True)  # fmt: skip
            print(f"  longest event-loop stall in the worker's log: {o['max_loop_stall_s']:.1f} s", flush=True)
            if o.get("gc"):
                g = o["gc"]
                print("  garbage collections by generation 0/1/2: " + "/".join(map(str, g["collections"]))
                      + ", paused " + "/".join(f"{x:.2f}" for x in g["pause_seconds"]) + " s in all, longest "
                      + "/".join(f"{x:.2f}" for x in g["longest_pause_seconds"]) + " s", flush=True)  # fmt: skip
        if args.minutes > 0:
            s = steady_phase(broker.bootstrap, work, args.rate, args.minutes, args.seed)
            result["steady"] = s
            print(f"steady load: {s['traces']:,} traces / {s['spans']:,} spans in {s['minutes']:g} min "
                  f"({s['rate_traces_per_s']:g} traces/s), stored {s['spans_stored']:,}")  # fmt: skip
            print(f"  RSS start {s['rss_start_mb']:,.0f} MB, half-way {s['rss_second_half_first_mb']:,.0f} MB, "
                  f"end {s['rss_end_mb']:,.0f} MB, max {s['rss_max_mb']:,.0f} MB; second-half slope "
                  f"{s['second_half_slope_mb_per_min']:+.1f} MB/min; median open traces {s['open_traces_median']:,.0f}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"memory-{time.strftime('%Y%m%d-%H%M%S')}.json"
    for path in (out, args.json):
        if path is not None:
            path.write_text(json.dumps(result, indent=1))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
