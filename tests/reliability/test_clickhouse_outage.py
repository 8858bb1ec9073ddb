"""Fault: ClickHouse unreachable while traces keep arriving (fault matrix #6).

Guarantee: no offset is committed while ClickHouse cannot store (the batch in hand is retried, not
acknowledged), the worker stops fetching instead of buffering the backlog in memory, and once
ClickHouse is back everything drains: every span and every trace stored exactly once.

Two ways (``tests/reliability/server_mode.py``): embedded ClickHouse runs inside the worker, so there
the outage is staged at the clickhouse-connect client (``stream/faults.py``, ``TRACEJUDGE_FAULTS_FILE``:
every call raises the error clickhouse-connect raises for an unreachable server, without touching
the engine); with the store server, the TCP path between worker and server is cut (live connections
reset, new ones reset on accept).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.factories import genai_trace, proto
from tests.reliability.server_mode import MODES, Faults, faults_for
from tests.reliability.support import SIZES, committed_offsets, end_offsets, peak_rss_mb, pick, rss_mb
from tests.stream.conftest import Deployment, wait_for

DB = "tracejudge"
RSS_ALLOWANCE_MB = 250


class Streamer(threading.Thread):
    """Produces keyed traces (one whole trace per message, key = trace id) at ``rate`` messages/s
    until stopped. Keyed messages are stored by the ``ingest`` agent itself (nothing goes through
    the repartition topic), so a committed input offset always means "stored in ClickHouse"."""

    def __init__(self, bootstrap: str, topic: str, rate: float, pad_bytes: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rate, self.pad = bootstrap, topic, rate, pad_bytes
        self.rng = random.Random(seed)
        self.sent: dict[str, int] = {}  # trace id -> spans, once acknowledged by the broker
        self.bytes_sent = 0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(60)
        if self.error is not None:
            raise self.error

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread by stop()
            self.error = exc

    async def _run(self) -> None:
        p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, max_request_size=8 * 1024 * 1024)
        await p.start()
        try:
            tick, per_tick = 0.1, max(1, round(self.rate / 10))
            while not self._stop_event.is_set():
                started = time.monotonic()
                batch = []
                for _ in range(per_tick):
                    t = genai_trace(self.rng, self.rng.randrange(3, 10))
                    if self.pad:
                        t[0].attrs["app.padding"] = "p" * self.pad
                    value = proto(t)
                    tid = t[0].trace_id.hex()
                    batch.append((tid, len(t), len(value), await p.send(self.topic, value, key=tid.encode())))
                for tid, n, size, fut in batch:
                    await fut
                    self.sent[tid] = n
                    self.bytes_sent += size
                await asyncio.sleep(max(0.0, tick - (time.monotonic() - started)))
        finally:
            await p.stop()


def count(worker: Any, sql: str) -> int:
    return int(worker.sql(sql)[0][0])


def advanced(before: dict[int, int], now: dict[int, int]) -> dict[int, tuple[int | None, int]]:
    return {p: (before.get(p), off) for p, off in now.items() if off != before.get(p)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES)
def test_clickhouse_outage_commits_nothing_and_drains_fully(
    deployment: Callable[..., Deployment], figures: Callable[..., None], tmp_path: Path, size: str, mode: str
) -> None:
    with faults_for(mode, tmp_path) as faults:
        run_outage(deployment, figures, faults, size, mode)


def run_outage(
    deployment: Callable[..., Deployment], figures: Callable[..., None], faults: Faults, size: str, mode: str
) -> None:
    outage = pick(size, 9, 60)
    # short: retries back off to 1 s at most so the drain fits the budget; long: the default (30 s)
    d = deployment(**faults.settings, **({"insert_retry_max": 1} if size == "short" else {}))
    worker = d.start_worker()
    bootstrap, group = d.settings["TRACEJUDGE_KAFKA_BOOTSTRAP"], d.settings["TRACEJUDGE_CONSUMER_GROUP"]
    # padded messages (~2.6 KB of spans + pad) make a buffered backlog visible in the worker's RSS
    rate, pad = pick(size, 40, 150), pick(size, 8_000, 60_000)
    streamer = Streamer(bootstrap, d.input_topic, rate=rate, pad_bytes=pad, seed=61)
    streamer.start()
    try:
        assert wait_for(lambda: count(worker, f"SELECT count() FROM {DB}.traces FINAL") > 0, 60)
        time.sleep(pick(size, 1, 10))
        pid = worker.proc.pid
        rss_before, peak_before = rss_mb(pid), peak_rss_mb(pid)

        faults.down()
        cut = time.monotonic()
        bytes_at_cut = streamer.bytes_sent
        # A batch whose insert was already inside the engine at the cut is stored and acked; its
        # commit lands within broker_commit_interval (1 s). The baseline is taken once that in-flight
        # work has settled; from then on nothing may be committed until ClickHouse is back.
        time.sleep(3.0)
        baseline = committed_offsets(bootstrap, group, d.input_topic)
        commits_during, polls, rss_during = {}, 0, rss_before
        while time.monotonic() - cut < outage:
            time.sleep(1.0)
            now = committed_offsets(bootstrap, group, d.input_topic)
            commits_during.update(advanced(baseline, now))
            polls += 1
            rss_during = max(rss_during, rss_mb(pid))
        status, injected = worker.status(), faults.injected(worker)
        backlog_mb = (streamer.bytes_sent - bytes_at_cut) / 2**20
        peak_outage = peak_rss_mb(pid)

        faults.up()
        restored = time.monotonic()
    finally:
        streamer.stop()
    ends = end_offsets(bootstrap, d.input_topic)
    assert sum(ends.values()) - sum(baseline.values()) > 0, "nothing was left to drain: the outage was not exercised"

    drained = wait_for(lambda: committed_offsets(bootstrap, group, d.input_topic) == ends, pick(size, 40, 120), 0.5)
    sent = dict(streamer.sent)
    assert wait_for(lambda: count(worker, f"SELECT count() FROM {DB}.traces FINAL") >= len(sent), 60, 0.5)
    drain_s = time.monotonic() - restored

    stored = dict(worker.sql(f"SELECT trace_id, span_count FROM {DB}.traces FINAL"))
    lost = len(set(sent) - set(stored))
    expected = len(sent) + sum(sent.values())  # trace rows + span rows
    rows = lambda final: sum(count(worker, f"SELECT count() FROM {DB}.{t} {final}") for t in ("traces", "spans"))  # noqa: E731
    dup, raw_dup = rows("FINAL") - expected, rows("") - expected
    after = worker.status()
    figures(
        scenario=f"ClickHouse unreachable ({'client-layer fault' if mode == 'embedded' else 'store server, TCP cut'})",
        guarantee="no commits during outage, full drain, bounded memory",
        outage_s=outage,
        traces_sent=len(sent),
        backlog_mb=round(backlog_mb, 1),
        commits_during_outage=len(commits_during),
        offset_polls=polls,
        drain_s=round(drain_s, 1),
        lost=lost,
        dup=dup,
        raw_dup=raw_dup,
        write_retries=after["counters"]["write_retries"],
        injected_errors=faults.injected(worker)["down_errors"],
        rss_before_mb=round(rss_before),
        rss_max_outage_mb=round(rss_during),
        peak_rss_before_mb=round(peak_before),
        peak_rss_outage_mb=round(peak_outage),
    )
    assert not commits_during, f"offsets committed while ClickHouse was down: {commits_during}"
    assert injected["down_errors"] > 0 and status["counters"]["write_retries"] > 0
    assert drained, "committed offsets did not reach the log end after ClickHouse came back"
    assert lost == 0 and set(stored) == set(sent)
    assert stored == sent  # every trace once, with all of its spans counted
    assert dup == 0  # FINAL rows of traces and spans == traces and spans sent (with stored == sent: each once)
    # Bounded memory: the worker pauses fetching when its stream buffer is full (Faust flow control:
    # stream_buffer_maxsize messages, one fetch per partition) instead of pulling the whole backlog
    # in. The long version's backlog is well over the allowance, so only a bounded worker passes;
    # the short one is too small to tell and only guards against gross growth.
    growth = rss_during - rss_before
    assert growth < RSS_ALLOWANCE_MB, f"worker RSS grew {growth:.0f} MiB during the outage (backlog {backlog_mb:.0f} MiB)"
    if size == "long":
        assert backlog_mb > 1.5 * RSS_ALLOWANCE_MB, "backlog too small to show that memory stays bounded"
