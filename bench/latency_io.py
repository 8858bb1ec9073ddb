"""The latency benchmark's live I/O (bench/latency.py): the load it produces, the poller that sees
rows appear in the store, and the to_judge records' CreateTimes.

``Load`` produces copies of generated traces at a steady rate from a thread, each with a fresh
trace id and its times shifted so the root ends just before it is sent, and records each ack.
``Poller`` queries the store every ``every`` s for ``traces`` and ``verdicts`` rows it has not seen
and remembers when each first appeared. ``topic_times`` reads back when the worker produced each
sampled trace to ``to_judge``.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

DB = "tracejudge"


# ---- load --------------------------------------------------------------------------------------
class Load:
    """Produces ``rate`` traces/s for ``seconds`` s from a thread; ``acked[trace_id]`` = ack time (s)."""

    def __init__(self, bootstrap: str, topic: str, rate: float, seconds: float, seed: int = 1) -> None:
        from bench.generate import build_trace

        rng = random.Random(seed)
        now = time.time_ns()
        self.pool = [build_trace(rng, now - 120 * 10**9)[1] for _ in range(300)]
        self.bootstrap, self.topic, self.rate, self.seconds = bootstrap, topic, rate, seconds
        self.rng = rng
        self.acked: dict[str, float] = {}
        self.spans = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _copy(self, value: bytes) -> tuple[str, bytes]:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        req = ExportTraceServiceRequest.FromString(value)
        tid = self.rng.randbytes(16)
        spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        shift = time.time_ns() - 50_000_000 - max(s.end_time_unix_nano for s in spans)
        for s in spans:
            s.trace_id = tid
            s.start_time_unix_nano += shift
            s.end_time_unix_nano += shift
            for ev in s.events:
                ev.time_unix_nano += shift
        self.spans += len(spans)
        return tid.hex(), req.SerializeToString()

    def _run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:  # reported by the caller
            self.error = exc

    async def _produce(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                    max_request_size=16 * 1024 * 1024)  # fmt: skip
        await producer.start()
        try:
            start, made, n = time.monotonic(), 0, int(self.rate * self.seconds)
            while made < n:
                due = min(n, int((time.monotonic() - start) * self.rate) + 1) - made
                pending = []
                for _ in range(max(due, 0)):
                    tid, value = self._copy(self.pool[made % len(self.pool)])
                    pending.append((tid, await producer.send(self.topic, value, key=tid.encode())))
                    made += 1
                for tid, fut in pending:
                    await fut
                    self.acked[tid] = time.time()
                await asyncio.sleep(max(0.0, start + made / self.rate - time.monotonic()))
        finally:
            await producer.stop()


# ---- polling visibility ------------------------------------------------------------------------
class Poller:
    """Every ``every`` s: new ``traces`` / ``verdicts`` rows; remembers when each was first seen."""

    def __init__(self, sql: Any, every: float) -> None:
        self.sql, self.every = sql, every
        self.trace_seen: dict[str, float] = {}
        self.verdict_seen: dict[str, float] = {}
        self.polls = 0
        self.query_s: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="poller", daemon=True)

    def _new(self, table: str, col: str, seen: dict[str, float]) -> None:
        wm = max(self._wm.get(table, 0), 0)
        rows = self.sql(f"SELECT trace_id, toUnixTimestamp64Milli({col}) FROM {DB}.{table} "
                        f"WHERE {col} >= fromUnixTimestamp64Milli({wm - 15_000})")  # fmt: skip
        t = time.time()  # the answer's arrival: an upper bound of when the rows became visible
        for tid, ms in rows:
            if tid not in seen:
                seen[tid] = t
            self._wm[table] = max(self._wm.get(table, 0), int(ms))

    def _run(self) -> None:
        self._wm: dict[str, int] = {}
        while not self._stop.is_set():
            t = time.time()
            try:
                self._new("traces", "completed_at", self.trace_seen)
                self._new("verdicts", "judged_at", self.verdict_seen)
            except Exception:  # noqa: BLE001 - tables not there yet, a slow store: try again
                self.errors += 1
            self.polls += 1
            self.query_s.append(time.time() - t)
            self._stop.wait(max(0.0, self.every - (time.time() - t)))

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)


async def topic_times(bootstrap: str, topic: str) -> dict[str, float]:
    """key -> CreateTime (s) of every message in ``topic`` (the to_judge records: when the worker
    produced each sampled trace)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream.topics import topic_partitions

    tps = [TopicPartition(topic, p) for p in range(await topic_partitions(bootstrap, topic))]
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         fetch_max_wait_ms=100, max_partition_fetch_bytes=16 * 1024 * 1024)  # fmt: skip
    await c.start()
    try:
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        out: dict[str, float] = {}
        deadline = time.monotonic() + 60
        idle = 0
        while time.monotonic() < deadline and idle < 3:
            if all([await c.position(tp) >= ends[tp] for tp in tps]):
                break
            got = await c.getmany(timeout_ms=500)
            idle = 0 if got else idle + 1
            for msgs in got.values():
                for m in msgs:
                    out[(m.key or b"").decode()] = m.timestamp / 1000
        return out
    finally:
        await c.stop()
