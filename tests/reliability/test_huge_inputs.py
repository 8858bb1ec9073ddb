"""Scenario 9: huge inputs (fault matrix #14) — bounded memory, truncation recorded.

Each case runs its own ``tracejudge worker`` and reports the worker's peak RSS (VmHWM) against its
RSS once ready, with a bound argued from the input:

* a 10 MB attribute value: truncated to ``max_attribute_bytes`` and recorded in
  ``spans.truncated_attributes``; with ``oversize_attribute_policy: dead_letter`` the message is
  dead-lettered instead, and a message over ``max_message_bytes`` is dead-lettered with its reason;
* a trace with more spans than ``max_spans_per_trace`` (10k): every span is stored, the trace row
  counts them all, records ``spans_not_held`` and keeps the real root; memory stops growing
  once the cap is reached;
* traces that never end (no root ever): completed by ``max_trace_age`` or evicted at
  ``max_open_traces``, each with its ``completion_reason``; open traces never exceed the cap.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from stream.config import Settings
from stream.dlq import REASON, SOURCE_OFFSET, InMessage, OutRecord
from stream.pipeline import Pipeline
from stream.sink import ClickHouseSink
from stream.store import ClickHouseStore
from tests.factories import T0, SpanSpec, genai_trace, proto
from tests.reliability.support import SIZES, peak_rss_mb, pick, reset_peak_rss, rss_mb
from tests.stream.conftest import Deployment, wait_for

DB = "tracejudge"
MB = 1024 * 1024


def scalar(worker: Any, sql: str) -> Any:
    return worker.sql(sql)[0][0]


def big_span(rng: random.Random, value_bytes: int, tid: bytes | None = None) -> SpanSpec:
    return SpanSpec(tid or rng.randbytes(16), rng.randbytes(8), name="huge",
                    attrs={"big.payload": "x" * value_bytes, "gen_ai.operation.name": "chat"})  # fmt: skip


# ---- (a) a 10 MB attribute -----------------------------------------------------------------------
@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "unkeyed"])
@pytest.mark.parametrize("size", SIZES)
def test_ten_megabyte_attribute_is_truncated_and_recorded(
    size: str, keyed: bool, deployment: Callable[..., Deployment], figures: Callable[..., None]
) -> None:
    """Unkeyed, the message goes through the repartition topic, here under a 1 MB producer limit
    (Apache Kafka's default ``message.max.bytes``): the span's part sheds what the decoder drops
    before it is sent, or it would be refused for good and hold the partition."""
    rng = random.Random(901)
    n = int(pick(size, 2, 10))  # messages of ~10 MB each
    d = deployment(partitions=1, **({} if keyed else {"producer_max_request_bytes": 1_048_576}))
    worker = d.start_worker()
    pid = worker.proc.pid
    # warm up first: the embedded engine's first insert allocates its caches (tens of MB), which is
    # not memory the input costs
    warm = big_span(rng, 1024)
    d.produce([(warm.trace_id.hex().encode(), proto([warm]), None)])
    assert wait_for(lambda: scalar(worker, f"SELECT count() FROM {DB}.spans FINAL") == 1, 120)
    startup_peak = reset_peak_rss(pid)
    baseline = rss_mb(pid)
    spans = [big_span(rng, 10 * MB) for _ in range(n)]
    d.produce([(s.trace_id.hex().encode() if keyed else None, proto([s]), None) for s in spans])
    assert wait_for(lambda: scalar(worker, f"SELECT count() FROM {DB}.spans FINAL") == n + 1, 120)
    rows = worker.sql(
        f"SELECT truncated_attributes, length(attributes['big.payload']), endsWith(attributes['big.payload'], "
        f"'…[truncated]') FROM {DB}.spans FINAL WHERE length(attributes['big.payload']) > 4096"
    )
    assert len(rows) == n
    peak = peak_rss_mb(pid)
    growth = peak - baseline
    figures(scenario=f"9a 10 MB attribute (truncate, {'keyed' if keyed else 'unkeyed: repartitioned'})",
            guarantee="truncated, recorded, bounded memory",
            messages=n, value_mb=10, stored_len=rows[0][1], truncated_recorded=sum(r[0] == ["big.payload"] for r in rows),
            startup_peak_mb=round(startup_peak), rss_start_mb=round(baseline), peak_mb=round(peak), growth_mb=round(growth))  # fmt: skip
    for truncated, length, marked in rows:
        assert truncated == ["big.payload"] and marked
        assert 256 * 1024 <= length < 256 * 1024 + 64  # max_attribute_bytes + the mark
    # What can be alive at once: the fetch response and the raw values of the messages fetched but
    # not yet acked (Faust buffers events by count, not bytes: up to 1-2 x the input), plus, for the
    # message being decoded, the protobuf parser's copy and the attribute's str (2 x one value; the
    # size check and the cut take a slice, never another whole copy), plus allocator slack.
    # Measured on a 2-core host: +62 MB for 2 x 10 MB, +94 MB for 10 x 10 MB (before the decoder
    # stopped encoding the whole value and reading it twice: +83 MB and +165 MB).
    input_mb = n * 10
    # Unkeyed, the split also holds the request, the trace's part and its serialized form (3 x one
    # value) before the part is shortened.
    assert growth < 1.5 * input_mb + (4 if keyed else 7) * 10 + 20, f"peak grew {growth:.0f} MB for {input_mb} MB of input"
    if not keyed:
        counters = worker.status()["counters"]
        assert counters["repartitioned_messages"] == n and counters["send_refused"] == 0
    assert worker.proc.poll() is None


def test_oversize_attribute_dead_letter_policy_and_oversize_message(
    deployment: Callable[..., Deployment], consume: Any, figures: Callable[..., None]
) -> None:
    rng = random.Random(902)
    d = deployment(partitions=1, oversize_attribute_policy="dead_letter", max_message_bytes=16 * MB)
    worker = d.start_worker()
    reset_peak_rss(worker.proc.pid)  # growth is measured from here, not from start-up
    baseline = rss_mb(worker.proc.pid)
    attr_msg = proto([big_span(rng, 10 * MB)])  # 10 MB attribute, message under the limit
    huge_msg = proto([big_span(rng, 20 * MB)])  # message over max_message_bytes
    good = genai_trace(rng, 3)
    d.produce([(None, attr_msg, 0), (None, huge_msg, 0), (good[0].trace_id.hex().encode(), proto(good), 0)])
    dead = consume(d.dlq_topic, expect=2, timeout=60)
    assert wait_for(lambda: scalar(worker, f"SELECT count() FROM {DB}.spans FINAL") == 3, 60)
    peak = peak_rss_mb(worker.proc.pid)
    by_offset = {int(dict(r.headers)[SOURCE_OFFSET]): r for r in dead}
    figures(scenario="9a oversize attribute (dead_letter) + oversize message", guarantee="DLQ with reason",
            dead_lettered=len(dead), reasons=sorted(dict(r.headers)[REASON].decode() for r in dead),
            rss_start_mb=round(baseline), peak_mb=round(peak), growth_mb=round(peak - baseline))  # fmt: skip
    assert sorted(by_offset) == [0, 1]
    assert dict(by_offset[0].headers)[REASON] == b"attribute_too_large" and by_offset[0].value == attr_msg
    assert dict(by_offset[1].headers)[REASON] == b"message_too_large" and by_offset[1].value == huge_msg
    # Each byte of these 30 MB is held a handful of times at most: the fetch response, the record
    # value, (for the parsed one) the protobuf parser's copy and the decoded string, and the
    # producer's batch copy of the dead letter. Measured 3.5-4.5 x; a leak per message would exceed 6 x.
    assert peak - baseline < 6 * 30, f"peak grew {peak - baseline:.0f} MB for 30 MB of input"
    assert worker.proc.poll() is None


# ---- (b) a trace over max_spans_per_trace ---------------------------------------------------------
def _chunks(spans: list[SpanSpec], per: int) -> list[bytes]:
    return [proto(spans[i : i + per]) for i in range(0, len(spans), per)]


@pytest.mark.parametrize("size", SIZES)
def test_trace_over_max_spans_is_stored_whole_and_counted(
    size: str, store_dsn: str, deployment: Callable[..., Deployment], figures: Callable[..., None]
) -> None:
    rng = random.Random(903)
    n = int(pick(size, 20_000, 100_000))
    per_round = int(pick(size, 5_000, 10_000))
    cap = 10_000  # max_spans_per_trace, the default
    d = deployment(partitions=1, decision_wait=2.0, clickhouse_dsn=store_dsn)
    worker = d.start_worker()
    pid = worker.proc.pid
    reset_peak_rss(pid)  # growth is measured from here, not from start-up
    baseline = rss_mb(pid)
    tid, root_id = rng.randbytes(16), rng.randbytes(8)
    children = [
        SpanSpec(tid, rng.randbytes(8), root_id, "chat gpt-4o-mini", T0 + i * 1000, T0 + i * 1000 + 500,
                 {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                  "gen_ai.usage.input_tokens": 10, "gen_ai.input.messages": f'[{{"role":"user","content":"q{i}"}}]'})
        for i in range(n - 1)
    ]  # fmt: skip
    root = SpanSpec(tid, root_id, b"", "invoke_agent big", T0 - 1, T0 + n * 1000,
                    {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "big"})  # fmt: skip
    key = tid.hex().encode()
    started = time.monotonic()
    # the trace up to the cap, then the rest in rounds (peak after each), the root last (as
    # exporters do: it ends last)
    peaks, sent = [], 0
    for part in [children[:cap]] + [children[i : i + per_round] for i in range(cap, n - 1, per_round)]:
        d.produce([(key, v, None) for v in _chunks(part, 1000)])
        sent += len(part)
        assert wait_for(lambda: scalar(worker, f"SELECT count() FROM {DB}.spans FINAL") == sent, 120)  # noqa: B023
        peaks.append(peak_rss_mb(pid))
    d.produce([(key, proto([root]), None)])
    row = wait_for(lambda: worker.sql(
        f"SELECT span_count, spans_not_held, completion_reason, root_span_id, agent_name FROM {DB}.traces FINAL"), 60)  # fmt: skip
    took = time.monotonic() - started
    stored = scalar(worker, f"SELECT count() FROM {DB}.spans FINAL WHERE trace_id = '{tid.hex()}'")
    final = peak_rss_mb(pid)
    at_cap, rounds = peaks[0], len(peaks) - 1
    half = peaks[-1 - rounds // 2]  # peak after the first half of the rounds past the cap
    per_held_kb = (at_cap - baseline) * 1024 / cap  # what a held span cost (with transients)
    if_held = per_held_kb * per_round * (rounds // 2) / 1024  # what the second half would cost held
    figures(scenario="9b trace over max_spans_per_trace", guarantee="all stored, not-held recorded, bounded memory",
            spans_in=n, spans_stored=stored, trace_row=row[0] if row else None, rss_start_mb=round(baseline),
            peak_at_cap_mb=round(at_cap), peak_after_rounds_mb=[round(p) for p in peaks[1:]],
            peak_final_mb=round(final), second_half_growth_mb=round(peaks[-1] - half),
            second_half_if_held_mb=round(if_held), seconds=round(took, 1))  # fmt: skip
    assert stored == n
    # held: the first `cap` children and the root (always held); the rest counted as not held
    assert row == [[n, n - cap - 1, "root_ended_idle", root_id.hex(), "big"]]
    # Memory: past the cap, spans are stored and dropped. The first rounds past the cap still raise
    # the peak (a bigger ingest step, allocator and chDB growth), but over the second half of the
    # rounds the peak must grow by far less than holding those spans would cost (measured per
    # held span in phase 1): < 25 % of it, plus 20 MB of noise (chDB caches, allocator). Only the
    # long run has the signal for it: its second half would hold ~220 MB. The short run's is one
    # round (~30 MB if held), as much as a chDB merge steps the RSS once the table holds ~20k
    # spans (seen in CI: +34 MB). The worker stores on a store server, so its RSS is its own: with
    # the embedded store, chDB's caches and merges in the worker's process stepped the peak by up to
    # 65 MB at a random round (a long run failed this bound that way, +79 MB against 74).
    if size == "long":
        assert peaks[-1] - half < 0.25 * if_held + 20, (baseline, peaks)
    # completing the trace (decide, judge envelope) handles the held spans only: it costs at most
    # about what holding them did
    assert final - peaks[-1] < (at_cap - baseline) + 20, (baseline, peaks, final)
    assert worker.proc.poll() is None


class CountingSink(ClickHouseSink):
    """The real ClickHouse sink, recording how many rows each span insert carried."""

    def __init__(self, store: ClickHouseStore) -> None:
        super().__init__(store)
        self.inserts: list[int] = []

    async def write_spans(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        self.inserts.append(len(rows))
        await super().write_spans(rows, dedup_token)


class ListProducer:
    async def send_all(self, records: Sequence[OutRecord]) -> None:
        raise AssertionError(f"nothing to produce here, got {len(records)} records")


def test_a_batch_of_big_messages_is_stored_in_bounded_steps(store: ClickHouseStore) -> None:
    """Batches count messages; a message may hold thousands of spans (the Collector's batch
    processor sends up to 8192). A batch is decoded, held and inserted in steps of at most
    ``insert_chunk_spans`` spans (plus one message), not all at once."""
    rng = random.Random(905)
    tid = rng.randbytes(16)
    per_msg, n_msgs = 2_000, 30  # 60k spans of one trace in one batch
    msgs = [
        InMessage("otlp_spans", 0, i, tid.hex().encode(),
                  proto([SpanSpec(tid, rng.randbytes(8), rng.randbytes(8), "s", T0 + j, T0 + j + 1) for j in range(per_msg)]))
        for i in range(n_msgs)
    ]  # fmt: skip
    sink = CountingSink(store)
    settings = Settings(clickhouse_database=store.database)
    pipeline = Pipeline(settings, sink, ListProducer())
    asyncio.run(pipeline.handle_batch(msgs))
    assert sum(sink.inserts) == per_msg * n_msgs
    assert max(sink.inserts) <= settings.insert_chunk_spans + per_msg and len(sink.inserts) >= 3, sink.inserts
    assert store.query(f"SELECT count() FROM {store.database}.spans FINAL")[1][0][0] == per_msg * n_msgs


# ---- (c) traces that never end ------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_never_ending_traces_complete_by_age_or_eviction(
    size: str, deployment: Callable[..., Deployment], figures: Callable[..., None]
) -> None:
    rng = random.Random(904)
    n = int(pick(size, 3_000, 50_000))
    max_open = int(pick(size, 1_000, 5_000))
    d = deployment(partitions=2, max_trace_age=6.0, max_open_traces=max_open)
    worker = d.start_worker()
    pid = worker.proc.pid
    reset_peak_rss(pid)  # growth is measured from here, not from start-up
    baseline = rss_mb(pid)
    msgs = []
    for _ in range(n):  # five spans each, all children of a root that never comes
        tid, missing_root = rng.randbytes(16), rng.randbytes(8)
        spans = [SpanSpec(tid, rng.randbytes(8), missing_root, f"step {j}", T0 + j, T0 + j + 10) for j in range(5)]
        msgs.append((tid.hex().encode(), proto(spans), None))
    started = time.monotonic()
    d.produce(msgs)
    open_seen = [worker.status()["open_traces"]]

    def all_done() -> bool:
        open_seen.append(worker.status()["open_traces"])
        return scalar(worker, f"SELECT count() FROM {DB}.traces FINAL") >= n

    assert wait_for(all_done, pick(size, 90, 600), interval=0.5)
    took = time.monotonic() - started
    reasons = dict(worker.sql(f"SELECT completion_reason, count() FROM {DB}.traces FINAL GROUP BY 1"))
    spans = scalar(worker, f"SELECT count() FROM {DB}.spans FINAL")
    peak = peak_rss_mb(pid)
    figures(scenario="9c never-ending traces", guarantee="completed by age / evicted, open <= max_open",
            traces=n, max_open=max_open, reasons=reasons, max_open_seen=max(open_seen),
            rss_start_mb=round(baseline), peak_mb=round(peak), growth_mb=round(peak - baseline),
            seconds=round(took, 1))  # fmt: skip
    assert spans == 5 * n
    assert scalar(worker, f"SELECT count() FROM {DB}.traces FINAL") == n
    assert set(reasons) <= {"evicted", "max_age"} and sum(reasons.values()) == n
    assert reasons.get("max_age", 0) > 0 and reasons.get("evicted", 0) > 0  # both rules fired
    assert max(open_seen) <= max_open
    # Held: at most max_open traces x 5 spans. Per held span ~8 KB of peak was measured in 9b
    # (span objects plus the batch, row and insert transients): budget 10 KB, plus 60 MB of fixed
    # transients (fetch buffers, chDB insert). It must not depend on n (3x / 10x max_open): evicted
    # and aged-out traces are released.
    held_mb = max_open * 5 * 10 / 1024
    assert peak - baseline < held_mb + 60, f"peak grew {peak - baseline:.0f} MB; held budget {held_mb:.0f} MB"
    assert worker.status()["open_traces"] == 0
    assert worker.proc.poll() is None
