"""The floor of the ingest benchmark: the least a consumer must do to get the input into ``spans``.

    python bench/floor.py --bootstrap HOST:PORT --topic T --partitions P --messages N \\
        --data-dir DIR --insert-spans N
    python bench/floor.py ... --dsn http://HOST:PORT --partition-list 0,2,4,6 --barrier  # bench/scaleout_floor.py

aiokafka ``getmany`` + ``ExportTraceServiceRequest.FromString`` (OTLP/JSON: ``orjson.loads``) +
every attribute walked into Python values + batched inserts of raw-ish rows into the project's own ``spans`` table (in its own
chDB data dir); nothing else. :func:`run_floor` runs this module as a child process (so it gets its
own chDB and a clean interpreter) and returns the JSON line it prints: spans/s from the first
fetched message to the last acknowledged insert.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/floor.py` from anywhere
    sys.path.insert(0, str(ROOT))

from stream.config import Settings  # noqa: E402
from stream.event_loop import CHOICES, use_event_loop  # noqa: E402

# Columns the floor fills; every other column of `spans` keeps its default.
FLOOR_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "name", "otel_kind", "service_name", "scope_name",
    "scope_version", "start_time", "end_time", "duration_ms", "status_code", "status_message",
    "attributes", "typed_attributes", "resource_attributes", "typed_resource_attributes", "events",
    "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at",
)  # fmt: skip

_KIND = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUS = ("unset", "ok", "error")


async def _insert(store: Any, rows: list[tuple[Any, ...]]) -> int:
    await store.ainsert("spans", rows, FLOOR_COLUMNS)
    return len(rows)


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


def _jvalue(v: dict[str, Any]) -> Any:
    """An OTLP/JSON AnyValue -> a Python value (the JSON twin of :func:`_value`)."""
    for which, x in v.items():
        if which == "stringValue" or which == "boolValue" or which == "doubleValue":
            return x
        if which == "intValue":
            return int(x)
        if which == "bytesValue":
            return base64.b64decode(x)
        if which == "arrayValue":
            return [_jvalue(e) for e in x.get("values", ())]
        if which == "kvlistValue":
            return {kv["key"]: _jvalue(kv.get("value", {})) for kv in x.get("values", ())}
    return None


def _jas_map(kvs: list[dict[str, Any]]) -> tuple[dict[str, str], list[str]]:
    out: dict[str, str] = {}
    typed: list[str] = []
    for kv in kvs:
        v = _jvalue(kv.get("value", {}))
        if isinstance(v, str):
            out[kv["key"]] = v
        else:
            out[kv["key"]] = _json(v)
            typed.append(kv["key"])
    return out, typed


def floor_rows_json(value: bytes, topic: str, partition: int, offset: int, now_ms: int) -> list[tuple[Any, ...]]:
    """The same rows from OTLP/JSON: ``orjson.loads`` and a walk of the document."""
    rows = []
    for rs in orjson.loads(value).get("resourceSpans", ()):
        res, res_typed = _jas_map(rs.get("resource", {}).get("attributes", ()))
        service = res.get("service.name", "")
        for ss in rs.get("scopeSpans", ()):
            scope = ss.get("scope", {})
            for s in ss.get("spans", ()):
                attrs, typed = _jas_map(s.get("attributes", ()))
                events = _json([
                    {"name": e.get("name", ""), "time_ns": int(e.get("timeUnixNano", 0)),
                     "attributes": {kv["key"]: _jvalue(kv.get("value", {})) for kv in e.get("attributes", ())}}
                    for e in s.get("events", ())
                ])  # fmt: skip
                start, end = int(s.get("startTimeUnixNano", 0)), int(s.get("endTimeUnixNano", 0))
                kind, status = s.get("kind", 0), s.get("status", {})
                code = status.get("code", 0)
                rows.append((
                    s["traceId"].lower(), s["spanId"].lower(), s.get("parentSpanId", "").lower(), s.get("name", ""),
                    _KIND[kind] if 0 <= kind < 6 else "unspecified", service, scope.get("name", ""),
                    scope.get("version", ""), start, end, (end - start) / 1e6,
                    _STATUS[code] if 0 <= code < 3 else "unset", status.get("message", ""), attrs, typed, res,
                    res_typed, events, topic, partition, offset, now_ms,
                ))  # fmt: skip
    return rows


def floor_rows(
    value: bytes, topic: str, partition: int, offset: int, now_ms: int
) -> list[tuple[Any, ...]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    if value[:1] == b"{":
        return floor_rows_json(value, topic, partition, offset, now_ms)
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
    store = ClickHouseStore(args.dsn or f"chdb://{Path(args.data_dir).resolve() / 'clickhouse'}", args.database)
    if not args.no_migrate:
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
        owned = [int(x) for x in args.partition_list.split(",")] if args.partition_list else range(args.partitions)
        tps = [TopicPartition(args.topic, p) for p in owned]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        if args.barrier:  # tell the parent we are ready, start when it says so (all children at once)
            print("ready", flush=True)
            sys.stdin.readline()
        rows: list[tuple[Any, ...]] = []
        pending: list[asyncio.Future[int]] = []
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
                # like the worker: the insert runs on the store's thread while the next chunk is
                # decoded, at most two in flight
                if len(pending) >= 2:
                    spans += await pending.pop(0)
                    inserts.append((time.perf_counter(), spans))
                pending.append(asyncio.ensure_future(_insert(store, rows)))
                rows = []
        for insert in pending:
            spans += await insert
            inserts.append((time.perf_counter(), spans))
        last = time.perf_counter()
    finally:
        await consumer.stop()
    assert first is not None
    _, ((stored,),) = store.query(f"SELECT count() FROM {store.database}.spans")
    store.close()
    seconds = last - first
    return {
        "spans": spans, "messages": messages, "seconds": seconds, "spans_per_s": spans / seconds,
        "rows_in_table": stored, "inserts": len(inserts), "startup_s": startup,
        "insert_spans": args.insert_spans, "fetch_records": args.fetch_records,
        # (time.perf_counter(), spans stored so far) at each insert: CLOCK_MONOTONIC, comparable
        # across processes of this machine (bench/scaleout_floor.py merges them)
        "first": first, "last": last, "insert_steps": inserts,
    }  # fmt: skip


def run_floor(
    bootstrap: str, topic: str, partitions: int, n_messages: int, data_dir: Path,
    insert_spans: int, event_loop: str = Settings.model_fields["event_loop"].default,
) -> dict[str, Any]:  # fmt: skip
    """Run the floor in a child process (this module as a script); returns its result dict.
    ``event_loop``: the worker's (the floor runs on the same loop as the full path)."""
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--bootstrap", bootstrap,
        "--topic", topic, "--partitions", str(partitions), "--messages", str(n_messages),
        "--data-dir", str(data_dir), "--insert-spans", str(insert_spans), "--event-loop", event_loop,
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--messages", type=int, required=True, help="stop after this many")
    p.add_argument("--data-dir", default=None, help="for the floor's own chDB (without --dsn)")
    p.add_argument("--dsn", default=None, help="store here instead (e.g. a tracejudge store-server)")
    p.add_argument("--database", default="tracejudge", help="the store's database (default tracejudge)")
    p.add_argument("--partition-list", default=None, help="read only these partitions (comma-separated)")
    p.add_argument("--no-migrate", action="store_true", help="the tables exist already")
    p.add_argument("--barrier", action="store_true",
                   help="print 'ready' once set up, then wait for a line on standard input before reading")
    p.add_argument("--insert-spans", type=int, default=Settings.model_fields["insert_chunk_spans"].default,
                   help="spans per insert (default: the worker's insert_chunk_spans)")
    p.add_argument("--fetch-records", type=int, default=500, help="getmany max_records")
    p.add_argument("--event-loop", choices=CHOICES, default=Settings.model_fields["event_loop"].default,
                   help="as the worker's TRACEJUDGE_EVENT_LOOP (default: the worker's default)")
    args = p.parse_args(argv)
    if args.dsn is None and args.data_dir is None:
        p.error("give --data-dir or --dsn")
    if args.partition_list is not None and not args.partition_list.strip():
        p.error("--partition-list is empty")
    use_event_loop(args.event_loop)
    print(json.dumps(asyncio.run(run_floor_child(args))), flush=True)
    if args.barrier:  # stay (idle) until the parent has read this process's CPU time
        sys.stdin.readline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
