"""Ingest benchmark: the real worker against a bare-bones floor, on the same Kafka input.

    python bench/ingest.py [--spans N] [--repeat K] [--worker-env KEY=VALUE ...]

1. Generates realistic GenAI agent traces (see :mod:`bench.generate`), one OTLP protobuf message
   per trace keyed by its trace id (the Collector's kafka exporter with partition_traces_by_id),
   and produces them once to a 4-partition topic on a local tansu broker.
2. **Floor** (a child process with its own chDB data dir): aiokafka ``getmany`` + protobuf decode
   + attribute walk + batched inserts of raw-ish rows into the project's ``spans`` table. Nothing
   else. Spans/s from the first fetched message to the last acknowledged insert.
3. **Full**: the real ``tracejudge worker`` (fresh data dir and consumer group) consuming the same
   topic from the beginning. Spans/s from the first stored span to the last, by polling
   ``/api/status`` every 0.1 s.
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
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/ingest.py` from anywhere
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "bench" / "results"
TOPIC_PARTITIONS = 4
POLL_INTERVAL = 0.1

# Worker settings used for the full path (override / add with --worker-env KEY=VALUE).
DEFAULT_WORKER_ENV = {
    "TRACEJUDGE_DECISION_WAIT": "2",
    "TRACEJUDGE_TICK_INTERVAL": "0.5",
    "TRACEJUDGE_KAFKA_SESSION_TIMEOUT": "10",
    "TRACEJUDGE_LOG_LEVEL": "info",
}

# Columns the floor fills; every other column of `spans` keeps its default.
FLOOR_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "name", "otel_kind", "service_name", "scope_name",
    "scope_version", "start_time", "end_time", "duration_ms", "status_code", "status_message",
    "attributes", "typed_attributes", "resource_attributes", "typed_resource_attributes", "events",
    "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at",
)  # fmt: skip


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
# floor (runs in a child process: `ingest.py --floor-child ...`)
# ---------------------------------------------------------------------------------------------
_KIND = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUS = ("unset", "ok", "error")


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        return v.double_value
    if which == "bool_value":
        return v.bool_value
    if which == "bytes_value":
        return v.bytes_value
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return None


def _json(o: Any) -> str:
    return json.dumps(
        o, ensure_ascii=False, separators=(",", ":"), default=lambda b: b.hex()
    )


def _as_map(kvs: Any) -> tuple[dict[str, str], list[str]]:
    """OTLP KeyValues -> (Map(String, String) with non-strings as JSON, keys of the JSON ones)."""
    out: dict[str, str] = {}
    typed: list[str] = []
    for kv in kvs:
        v = _value(kv.value)
        if isinstance(v, str):
            out[kv.key] = v
        else:
            out[kv.key] = _json(v)
            typed.append(kv.key)
    return out, typed


def floor_rows(
    value: bytes, topic: str, partition: int, offset: int, now_ms: int
) -> list[tuple[Any, ...]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    rows = []
    req = ExportTraceServiceRequest.FromString(value)
    for rs in req.resource_spans:
        res, res_typed = _as_map(rs.resource.attributes)
        service = res.get("service.name", "")
        for ss in rs.scope_spans:
            scope, version = ss.scope.name, ss.scope.version
            for s in ss.spans:
                attrs, typed = _as_map(s.attributes)
                events = _json([
                    {"name": e.name, "time_ns": e.time_unix_nano,
                     "attributes": {kv.key: _value(kv.value) for kv in e.attributes}}
                    for e in s.events
                ])  # fmt: skip
                start, end = s.start_time_unix_nano, s.end_time_unix_nano
                rows.append((
                    s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name,
                    _KIND[s.kind] if 0 <= s.kind < 6 else "unspecified", service, scope, version,
                    start, end, (end - start) / 1e6, _STATUS[s.status.code] if 0 <= s.status.code < 3 else "unset",
                    s.status.message, attrs, typed, res, res_typed, events, topic, partition, offset, now_ms,
                ))  # fmt: skip
    return rows


async def run_floor_child(args: argparse.Namespace) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream.store import ClickHouseStore

    t0 = time.perf_counter()
    store = ClickHouseStore(f"chdb://{Path(args.data_dir).resolve() / 'clickhouse'}")
    store.migrate()
    startup = time.perf_counter() - t0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )  # fmt: skip
    await consumer.start()
    inserts: list[tuple[float, int]] = []
    try:
        tps = [TopicPartition(args.topic, p) for p in range(args.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        rows: list[tuple[Any, ...]] = []
        messages = spans = 0
        first: float | None = None
        while messages < args.messages:
            batch = await consumer.getmany(
                timeout_ms=1000, max_records=args.fetch_records
            )
            if batch and first is None:
                first = time.perf_counter()
            now_ms = time.time_ns() // 1_000_000
            for records in batch.values():
                for r in records:
                    messages += 1
                    rows.extend(
                        floor_rows(r.value, r.topic, r.partition, r.offset, now_ms)
                    )
            if len(rows) >= args.insert_spans or (messages >= args.messages and rows):
                await store.ainsert("spans", rows, FLOOR_COLUMNS)
                spans += len(rows)
                inserts.append((time.perf_counter(), spans))
                rows = []
        last = time.perf_counter()
    finally:
        await consumer.stop()
    assert first is not None
    _, ((stored,),) = store.query("SELECT count() FROM tracejudge.spans")
    store.close()
    seconds = last - first
    return {
        "spans": spans, "messages": messages, "seconds": seconds, "spans_per_s": spans / seconds,
        "rows_in_table": stored, "inserts": len(inserts), "startup_s": startup,
        "insert_spans": args.insert_spans, "fetch_records": args.fetch_records,
    }  # fmt: skip


def run_floor(
    bootstrap: str, topic: str, n_messages: int, data_dir: Path, insert_spans: int
) -> dict[str, Any]:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--floor-child", "--bootstrap", bootstrap,
        "--topic", topic, "--messages", str(n_messages), "--data-dir", str(data_dir),
        "--insert-spans", str(insert_spans),
    ]  # fmt: skip
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, cwd=str(ROOT), check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"floor child failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# full path: the real worker
# ---------------------------------------------------------------------------------------------
def _scan_log(path: Path) -> dict[str, Any]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"lines": 0}
    bad = [
        ln
        for ln in lines
        if any(
            w in ln
            for w in (" ERROR ", " WARNING ", "Traceback", "[E]", "[W]", "CRITICAL")
        )
    ]
    return {"lines": len(lines), "warnings_or_errors": len(bad), "first": bad[:8]}


def run_full(bootstrap: str, topic: str, expected_spans: int, expected_traces: int, data_dir: Path,
             worker_env: dict[str, str], run_id: str, timeout: float,
             profile: Path | None = None) -> dict[str, Any]:  # fmt: skip
    import httpx

    from stream.demo.broker import free_port
    from stream.demo.run import WorkerProcess

    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "TRACEJUDGE_KAFKA_BOOTSTRAP": bootstrap,
        "TRACEJUDGE_DATA_DIR": str(data_dir),
        "TRACEJUDGE_INPUT_TOPIC": topic,
        "TRACEJUDGE_DLQ_TOPIC": f"{topic}.dlq.{run_id}",
        "TRACEJUDGE_REPARTITION_TOPIC": f"{topic}.by_trace.{run_id}",
        "TRACEJUDGE_CONSUMER_GROUP": f"bench-{run_id}",
        "TRACEJUDGE_WEB_HOST": "127.0.0.1",
        "TRACEJUDGE_WEB_PORT": str(free_port()),
        **worker_env,
    }
    log_path = data_dir / "worker.log"
    began = time.perf_counter()
    worker = WorkerProcess(env, log_path)
    spy = None
    if (
        profile is not None
    ):  # sample the worker with py-spy (not a project dependency: pip install py-spy)
        profile.parent.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen(
            ["py-spy", "record", "--pid", str(worker.proc.pid), "--rate", "50", "--format", "raw",
             "--output", str(profile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    samples: list[tuple[float, int, int]] = []  # (t, spans_stored, traces completed)
    status: dict[str, Any] = {}
    error = None
    t_first = t_all = None
    n_first = 0
    try:
        deadline = began + timeout
        wait_traces_until = None
        while time.perf_counter() < deadline:
            if worker.proc.poll() is not None:
                error = f"worker exited with {worker.proc.returncode}"
                break
            try:
                status = worker.status()
            except (httpx.HTTPError, ValueError):
                time.sleep(POLL_INTERVAL)
                continue
            now = time.perf_counter()
            c = status["counters"]
            stored, done = c["spans_stored"], sum(c["traces_completed"].values())
            samples.append((now - began, stored, done))
            if stored and t_first is None:
                t_first, n_first = now, stored
            if stored >= expected_spans and t_all is None:
                t_all = now
                wait_traces_until = now + 30.0
            if t_all is not None and (
                done >= expected_traces or now > (wait_traces_until or now)
            ):
                break
            time.sleep(POLL_INTERVAL)
        else:
            error = f"timed out after {timeout:.0f}s"
        rows = None
        if error is None:
            try:
                rows = worker.sql("SELECT count() FROM tracejudge.spans")[0][0]
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                rows = f"error: {exc}"
    finally:
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        rc = worker.stop(timeout=60)
    result: dict[str, Any] = {
        "error": error, "exit_code": rc, "data_dir": str(data_dir),
        "counters": status.get("counters"), "rows_in_table": rows if error is None else None,
        "log": _scan_log(log_path),
    }  # fmt: skip
    if t_first is not None and t_all is not None and t_all > t_first:
        seconds = t_all - t_first
        result.update(
            spans=expected_spans - n_first, seconds=seconds,
            spans_per_s=(expected_spans - n_first) / seconds,
            startup_s=t_first - began, spans_at_first_sample=n_first,
            traces_completed=samples[-1][2] if samples else 0,
        )  # fmt: skip
    elif error is None:
        result["error"] = (
            "all spans arrived in one status sample: input too small to measure (raise --spans)"
        )
    result["samples"] = [(round(t, 3), s, d) for t, s, d in samples]
    return result


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
    p.add_argument(
        "--insert-spans",
        type=int,
        default=10_000,
        help="floor: spans per ClickHouse insert",
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
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where data dirs go (default: a temp dir)",
    )
    # internal: the floor child
    p.add_argument("--floor-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bootstrap", help=argparse.SUPPRESS)
    p.add_argument("--topic", help=argparse.SUPPRESS)
    p.add_argument("--messages", type=int, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    p.add_argument("--fetch-records", type=int, default=500, help=argparse.SUPPRESS)
    p.add_argument(
        "--partitions", type=int, default=TOPIC_PARTITIONS, help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)

    if args.floor_child:
        print(json.dumps(asyncio.run(run_floor_child(args))))
        return 0

    from bench.generate import generate
    from stream.demo.broker import LocalBroker, ensure_topics

    worker_env = dict(DEFAULT_WORKER_ENV)
    for item in args.worker_env:
        k, sep, v = item.partition("=")
        if not sep:
            p.error(f"--worker-env expects KEY=VALUE, got {item!r}")
        worker_env[k if k.startswith("TRACEJUDGE_") else "TRACEJUDGE_" + k.upper()] = v

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="tracejudge-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    t0 = time.perf_counter()
    corpus = generate(args.spans, seed=args.seed)
    gen_s = time.perf_counter() - t0
    n_bytes = corpus.bytes
    print(f"input: {corpus.traces:,} messages (1 trace each, keyed by trace id), {corpus.spans:,} spans, "
          f"{n_bytes / 1e6:,.1f} MB, {n_bytes / corpus.spans:,.0f} bytes/span, "
          f"{corpus.spans / corpus.traces:.1f} spans/message (generated in {gen_s:.1f}s)")  # fmt: skip
    print(
        f"worker settings: {' '.join(f'{k}={v}' for k, v in sorted(worker_env.items()))}"
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
                    corpus.traces,
                    work / f"floor-{i}",
                    args.insert_spans,
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
          f"{(f'{med_ratio:.2f}' if med_ratio else '-'):>12}   (target >= 0.50)")  # fmt: skip

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"ingest-{stamp}.json"
    out.write_text(json.dumps({
        "timestamp": stamp,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "input": {"messages": corpus.traces, "spans": corpus.spans, "bytes": n_bytes,
                  "bytes_per_span": n_bytes / corpus.spans, "partitions": TOPIC_PARTITIONS,
                  "seed": args.seed, "generate_s": gen_s},
        "worker_env": worker_env,
        "floor": {"insert_spans": args.insert_spans, "runs": floors, "median_spans_per_s": med_floor},
        "full": {"runs": fulls, "median_spans_per_s": med_full},
        "ratio": {"median_full_over_median_floor": med_ratio, "per_run": ratios},
    }, indent=1))  # fmt: skip
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
