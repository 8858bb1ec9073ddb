"""Ingest benchmark: the real worker against a bare-bones floor, on the same Kafka input.

    python bench/ingest.py [--spans N] [--repeat K] [--encoding otlp_json] [--worker-env KEY=VALUE ...]

1. Generates realistic GenAI agent traces (see :mod:`bench.generate`), one OTLP protobuf message
   per trace keyed by its trace id (the Collector's kafka exporter with partition_traces_by_id;
   ``--encoding otlp_json``: the same requests as OTLP/JSON), and produces them once to a
   4-partition topic on a local tansu broker.
2. **Floor** (:mod:`bench.floor`, a child process with its own chDB data dir): aiokafka
   ``getmany`` + protobuf decode (``orjson.loads`` for OTLP/JSON) + attribute walk + batched inserts of raw-ish rows into the
   project's ``spans`` table. Nothing else. Spans/s from the first fetched message to the last
   acknowledged insert.
3. **Full** (:mod:`bench.full`): the real ``tracejudge worker`` (fresh data dir and consumer group)
   consuming the same topic from the beginning. Spans/s from the first stored span to the last, by
   polling ``/api/status`` every 0.1 s.
4. With ``--repeat K`` the two alternate K times; medians are printed and the results written to
   ``bench/results/ingest-<timestamp>.json``.

A benchmark, not a test: it asserts nothing about timings. The machine is noisy; compare the
ratio within one run rather than absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/ingest.py` from anywhere
    sys.path.insert(0, str(ROOT))

from bench.floor import run_floor
from bench.full import DEFAULT_WORKER_ENV, run_full
from stream.config import Settings

RESULTS_DIR = ROOT / "bench" / "results"
TOPIC_PARTITIONS = 4


# ---------------------------------------------------------------------------------------------
# input
# ---------------------------------------------------------------------------------------------
async def produce(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]
) -> float:
    """Produce every (key, value) and wait for all acknowledgements; returns seconds taken."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1024 * 1024,
        max_request_size=16 * 1024 * 1024,
    )  # fmt: skip
    await producer.start()
    began = time.perf_counter()
    try:
        pending = []
        for key, value in messages:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - began


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--spans",
        type=int,
        default=200_000,
        help="total spans to generate (default 200000)",
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="alternating floor/full runs (default 1)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--encoding", choices=("otlp_proto", "otlp_json"), default="otlp_proto",
                   help="how the input is written (the Collector's kafka exporter `encoding`); default otlp_proto")  # fmt: skip
    p.add_argument(
        "--insert-spans",
        type=int,
        default=Settings.model_fields["insert_chunk_spans"].default,
        help="floor: spans per ClickHouse insert (default: the worker's insert_chunk_spans)",
    )
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra/overriding worker settings, e.g. TRACEJUDGE_BATCH_MAX_MESSAGES=1000",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="per full run, seconds")
    p.add_argument(
        "--profile",
        action="store_true",
        help="record the worker with py-spy (needs `pip install py-spy`) into bench/results/",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the work dir (data dirs, worker logs)"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where data dirs go (default: a temp dir)",
    )
    args = p.parse_args(argv)

    from bench.generate import generate
    from stream.demo.broker import LocalBroker
    from stream.topics import ensure_topics

    worker_env = dict(DEFAULT_WORKER_ENV)
    for item in args.worker_env:
        k, sep, v = item.partition("=")
        if not sep:
            p.error(f"--worker-env expects KEY=VALUE, got {item!r}")
        worker_env[k if k.startswith("TRACEJUDGE_") else "TRACEJUDGE_" + k.upper()] = v

    # the floor runs on the worker's event loop (WorkerProcess passes os.environ on, then worker_env)
    event_loop = worker_env.get("TRACEJUDGE_EVENT_LOOP",
                                os.environ.get("TRACEJUDGE_EVENT_LOOP", Settings.model_fields["event_loop"].default))
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="tracejudge-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    t0 = time.perf_counter()
    corpus = generate(args.spans, seed=args.seed)
    if args.encoding == "otlp_json":  # as the exporter's otlp_json marshaler writes it
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        from schemas.otlp_json import to_otlp_json

        corpus.messages = [(k, to_otlp_json(ExportTraceServiceRequest.FromString(v))) for k, v in corpus.messages]
    gen_s = time.perf_counter() - t0
    n_bytes = corpus.bytes
    print(f"input: {corpus.traces:,} {args.encoding} messages (1 trace each, keyed by trace id), {corpus.spans:,} spans, "
          f"{n_bytes / 1e6:,.1f} MB, {n_bytes / corpus.spans:,.0f} bytes/span, "
          f"{corpus.spans / corpus.traces:.1f} spans/message (generated in {gen_s:.1f}s)")  # fmt: skip
    print(
        f"worker settings: {' '.join(f'{k}={v}' for k, v in sorted(worker_env.items()))}; "
        f"event loop of floor and worker: {event_loop}"
    )
    print(f"work dir: {work}")

    floors: list[dict[str, Any]] = []
    fulls: list[dict[str, Any]] = []
    try:
        with LocalBroker(work / "broker") as broker:
            topic = f"bench.otlp.{uuid.uuid4().hex[:8]}"
            asyncio.run(ensure_topics(broker.bootstrap, {topic: TOPIC_PARTITIONS}))
            produce_s = asyncio.run(produce(broker.bootstrap, topic, corpus.messages))
            print(f"produced to {topic} ({TOPIC_PARTITIONS} partitions) on tansu {broker.bootstrap} "
                  f"in {produce_s:.1f}s ({corpus.traces / produce_s:,.0f} msg/s)", flush=True)  # fmt: skip
            messages = corpus.messages
            corpus.messages = []  # free the input before the runs
            del messages
            for i in range(args.repeat):
                f = run_floor(
                    broker.bootstrap,
                    topic,
                    TOPIC_PARTITIONS,
                    corpus.traces,
                    work / f"floor-{i}",
                    args.insert_spans,
                    event_loop,
                )
                floors.append(f)
                print(f"run {i + 1}/{args.repeat} floor: {_fmt(f['spans_per_s'])} spans/s "
                      f"({f['spans']:,} spans in {f['seconds']:.2f}s, {f['inserts']} inserts; "
                      f"{f['rows_in_table']:,} rows in table)", flush=True)  # fmt: skip
                if not args.keep:
                    shutil.rmtree(work / f"floor-{i}", ignore_errors=True)
                run_id = f"{stamp}-{i}-{uuid.uuid4().hex[:6]}"
                r = run_full(broker.bootstrap, topic, corpus.spans, corpus.traces, work / f"full-{i}",
                             worker_env, run_id, args.timeout,
                             RESULTS_DIR / f"worker-{stamp}-{i}.folded" if args.profile else None)  # fmt: skip
                fulls.append(r)
                if "spans_per_s" in r:
                    print(f"run {i + 1}/{args.repeat} full:  {_fmt(r['spans_per_s'])} spans/s "
                          f"({r['spans']:,} spans in {r['seconds']:.2f}s after {r['startup_s']:.1f}s start-up; "
                          f"traces completed {r['traces_completed']:,}/{corpus.traces:,}; "
                          f"{r['rows_in_table']} rows in table; log: {r['log'].get('warnings_or_errors', 0)} "
                          f"warnings/errors)", flush=True)  # fmt: skip
                    if r.get("gc"):
                        print(f"    worker GC pauses (whole process life): {sum(r['gc']['pause_seconds']):.2f} s "
                              f"over collections {r['gc']['collections']}", flush=True)  # fmt: skip
                    if r.get("store_inserts"):
                        print("    worker inserts by table (inserts, rows, seconds on its ClickHouse thread): "
                              + ", ".join(f"{t} {v['inserts']:.0f} / {v['rows']:,.0f} / {v['seconds']:.2f} s"
                                          for t, v in r["store_inserts"].items()), flush=True)  # fmt: skip
                else:
                    print(
                        f"run {i + 1}/{args.repeat} full:  FAILED: {r['error']} "
                        f"(counters {r['counters']}; log {r['log']})",
                        flush=True,
                    )
                if r["log"].get("warnings_or_errors"):
                    for line in r["log"]["first"]:
                        print(f"    worker log: {line[:200]}")
                if not args.keep:
                    shutil.rmtree(work / f"full-{i}", ignore_errors=True)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    floor_rates = [f["spans_per_s"] for f in floors]
    full_rates = [r["spans_per_s"] for r in fulls if "spans_per_s" in r]
    ratios = [
        b / a for a, b in zip(floor_rates, [r.get("spans_per_s") for r in fulls]) if b
    ]
    med_floor = statistics.median(floor_rates) if floor_rates else None
    med_full = statistics.median(full_rates) if full_rates else None
    med_ratio = med_full / med_floor if med_floor and med_full else None

    print()
    print(f"{'':24}{'floor spans/s':>16}{'full spans/s':>16}{'full/floor':>12}")
    for i, f in enumerate(floors):
        full = fulls[i].get("spans_per_s") if i < len(fulls) else None
        ratio = f"{full / f['spans_per_s']:.2f}" if full else "-"
        print(
            f"{'run ' + str(i + 1):24}{_fmt(f['spans_per_s']):>16}{_fmt(full):>16}{ratio:>12}"
        )
    label = f"median of {len(floor_rates)}"
    print(f"{label:24}{_fmt(med_floor):>16}{_fmt(med_full):>16}"
          f"{(f'{med_ratio:.2f}' if med_ratio else '-'):>12}   (target >= 0.70)")  # fmt: skip

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"ingest-{stamp}.json"
    text = json.dumps({
        "timestamp": stamp,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "input": {"messages": corpus.traces, "spans": corpus.spans, "bytes": n_bytes,
                  "bytes_per_span": n_bytes / corpus.spans, "partitions": TOPIC_PARTITIONS,
                  "seed": args.seed, "encoding": args.encoding, "generate_s": gen_s},
        "worker_env": worker_env,
        "event_loop": event_loop,
        "floor": {"insert_spans": args.insert_spans, "runs": floors, "median_spans_per_s": med_floor},
        "full": {"runs": fulls, "median_spans_per_s": med_full},
        "ratio": {"median_full_over_median_floor": med_ratio, "per_run": ratios},
    }, indent=1)  # fmt: skip
    for path in (out, args.json):
        if path is not None:
            path.write_text(text)
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
