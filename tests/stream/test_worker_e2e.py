"""End to end: real tansu broker, real `tracejudge worker` process, real embedded ClickHouse."""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from stream.dlq import REASON, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from tests.factories import SpanSpec, genai_trace, otlp_json, proto
from tests.stream.conftest import Deployment, wait_for


def count(worker: Any, sql: str) -> int:
    return int(worker.sql(sql)[0][0])


def bad_messages(rng: random.Random) -> dict[str, bytes]:
    """One message per kind of bad input -> the reason it must be dead-lettered with."""
    good = genai_trace(rng, 2)
    metrics = ExportMetricsServiceRequest()
    metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="cpu")
    zero_id = genai_trace(rng, 2)
    zero_id[1].trace_id = bytes(16)
    backwards = genai_trace(rng, 2)
    backwards[1].end = backwards[1].start - 1
    bad_length = proto([SpanSpec(rng.randbytes(16), rng.randbytes(8), name="MARKERMARKER")])
    bad_length = bad_length.replace(b"MARKERMARKER", b"MARKERMARKE")  # length prefix past the end
    return {
        "undecodable:garbage": b"\x00\x01garbage\xff" * 10,
        # a metrics request parses as a trace request whose "trace id" is the metric name
        "invalid_trace_id:metrics": metrics.SerializeToString(),
        "no_spans:empty-request": b"\x0a\x00",
        "invalid_trace_id:zero": proto(zero_id),
        "span_end_before_start:backwards": proto(backwards),
        "undecodable:length": bad_length,
        "undecodable:json": b'{"resourceSpans": 5}',
        "undecodable:truncated": proto(good)[:-7],
    }


def test_keyed_unkeyed_split_json_and_bad_input(deployment: Callable[..., Deployment], consume: Any) -> None:
    rng = random.Random(7)
    d = deployment()
    worker = d.start_worker()
    traces = [genai_trace(rng, rng.randrange(5, 26)) for _ in range(32)]
    huge = traces[0][1]
    huge.attrs["big.payload"] = "x" * (300 * 1024)  # over max_attribute_bytes: truncated, recorded
    msgs: list[tuple[bytes | None, bytes, int | None]] = []
    for t in traces[:10]:  # keyed, one trace per message (partition_traces_by_id)
        msgs.append((t[0].trace_id.hex().encode(), proto(t), None))
    for i in (10, 15):  # unkeyed batches of five traces each
        msgs.append((None, proto([s for t in traces[i : i + 5] for s in t]), i % 4))
    for t in traces[20:30]:  # one trace split over three unkeyed messages on different partitions
        for j in range(3):
            msgs.append((None, proto(t[j::3]), j))
    for t in traces[30:]:  # OTLP/JSON, keyed
        msgs.append((t[0].trace_id.hex().encode(), otlp_json(t), None))
    bad = bad_messages(rng)
    msgs.extend((None, value, 1) for value in bad.values())
    rng.shuffle(msgs)
    d.produce(msgs)

    n_spans = sum(len(t) for t in traces)
    db = "tracejudge"
    assert wait_for(lambda: count(worker, f"SELECT count() FROM {db}.traces FINAL") >= len(traces), 90)
    assert count(worker, f"SELECT count() FROM {db}.spans FINAL") == n_spans
    assert count(worker, f"SELECT count() FROM {db}.traces FINAL") == len(traces)
    per_trace = dict(worker.sql(f"SELECT trace_id, span_count FROM {db}.traces FINAL"))
    assert per_trace == {t[0].trace_id.hex(): len(t) for t in traces}
    reasons = dict(worker.sql(f"SELECT completion_reason, count() FROM {db}.traces FINAL GROUP BY 1"))
    assert reasons == {"root_ended_idle": len(traces)}
    (truncated,) = worker.sql(
        f"SELECT truncated_attributes, length(attributes['big.payload']) FROM {db}.spans FINAL "
        f"WHERE span_id = '{huge.span_id.hex()}'"
    )
    assert truncated[0] == ["big.payload"] and 256 * 1024 <= truncated[1] < 257 * 1024

    dead = consume(d.dlq_topic, expect=len(bad), timeout=30)
    assert sorted(r.value for r in dead) == sorted(bad.values())
    by_value = {r.value: dict(r.headers) for r in dead}
    for label, value in bad.items():
        headers = by_value[value]
        assert headers[REASON].decode() == label.split(":")[0], label
        assert headers[SOURCE_TOPIC].decode() == d.input_topic
        assert int(headers[SOURCE_PARTITION]) == 1 and int(headers[SOURCE_OFFSET]) >= 0
    status = worker.status()
    assert status["counters"]["dead_lettered"] == len(bad)
    assert worker.proc.poll() is None  # still running after all that


def test_kill_restart_and_replay_store_every_span_and_trace_once(
    deployment: Callable[..., Deployment],
) -> None:
    rng = random.Random(11)
    d = deployment(max_trace_age=300)
    worker = d.start_worker()
    traces = [genai_trace(rng, rng.randrange(4, 12)) for _ in range(20)]
    key = lambda t: t[0].trace_id.hex().encode()  # noqa: E731
    # traces 0-9: everything but the root (they stay open); 10-19 complete
    first = [(key(t), proto(t[1:]), None) for t in traces[:10]] + [(key(t), proto(t), None) for t in traces[10:]]
    d.produce(first)
    db = "tracejudge"
    assert wait_for(lambda: count(worker, f"SELECT count() FROM {db}.traces FINAL") >= 10, 60)
    held = sum(len(t) - 1 for t in traces[:10]) + sum(len(t) for t in traces[10:])
    assert wait_for(lambda: count(worker, f"SELECT count() FROM {db}.spans FINAL") == held, 30)
    assert worker.status()["open_traces"] == 10

    worker.proc.send_signal(signal.SIGKILL)  # hard kill: open-trace memory is gone
    worker.proc.wait()
    worker = d.start_worker()
    assert wait_for(lambda: worker.status()["counters"]["traces_recovered"] == 10, 30)
    # replay everything sent so far (as a producer retry or an upstream replay would), then roots
    d.produce(first + [(key(t), proto(t[:1]), None) for t in traces[:10]])
    assert wait_for(lambda: count(worker, f"SELECT count() FROM {db}.traces FINAL") >= 20, 60)
    assert count(worker, f"SELECT count() FROM {db}.spans FINAL") == sum(len(t) for t in traces)
    assert count(worker, f"SELECT count() FROM {db}.traces FINAL") == 20
    raw = count(worker, f"SELECT count() FROM {db}.spans")
    assert raw >= sum(len(t) for t in traces)  # duplicates exist physically, never in FINAL
    per_trace = dict(worker.sql(f"SELECT trace_id, span_count FROM {db}.traces FINAL"))
    assert per_trace == {t[0].trace_id.hex(): len(t) for t in traces}
    dup = count(worker, f"SELECT count() FROM (SELECT trace_id, span_id FROM {db}.spans FINAL GROUP BY 1, 2 HAVING count() > 1)")
    assert dup == 0


def test_clean_stop_mid_stream_then_restart_loses_and_doubles_nothing(
    deployment: Callable[..., Deployment],
) -> None:
    """SIGTERM while messages are still arriving (keyed and unkeyed-split), restart, finish."""
    rng = random.Random(13)
    d = deployment()
    worker = d.start_worker()
    traces = [genai_trace(rng, rng.randrange(3, 15)) for _ in range(60)]
    groups: list[list[tuple[bytes | None, bytes, int | None]]] = []
    for i, t in enumerate(traces):
        if i % 2:
            groups.append([(t[0].trace_id.hex().encode(), proto(t), None)])
        else:  # unkeyed, split over two partitions: goes through the repartition topic
            groups.append([(None, proto(t[::2]), 0), (None, proto(t[1::2]), 1)])
    # batches end on trace boundaries: a trace whose parts straddled the restart gap would
    # (correctly) complete before its second part arrives
    flat = lambda gs: [m for g in gs for m in g]  # noqa: E731
    d.produce(flat(groups[:20]))
    db = "tracejudge"
    assert wait_for(lambda: count(worker, f"SELECT count() FROM {db}.spans FINAL") > 0, 30)
    d.produce(flat(groups[20:40]))
    worker.proc.send_signal(signal.SIGTERM)  # likely mid-batch: the rest must be redelivered
    assert worker.proc.wait(60) == 0
    worker = d.start_worker()
    d.produce(flat(groups[40:]))
    assert wait_for(lambda: count(worker, f"SELECT count() FROM {db}.traces FINAL") >= len(traces), 90)
    assert count(worker, f"SELECT count() FROM {db}.spans FINAL") == sum(len(t) for t in traces)
    per_trace = dict(worker.sql(f"SELECT trace_id, span_count FROM {db}.traces FINAL"))
    assert per_trace == {t[0].trace_id.hex(): len(t) for t in traces}


def test_payloads_from_real_instrumentations_flow_end_to_end(deployment: Callable[..., Deployment]) -> None:
    """Every captured fixture, as protobuf and again as OTLP/JSON (a replay in another encoding)."""
    from pathlib import Path

    from schemas.decode import decode_message

    fixtures = sorted((Path(__file__).parents[1] / "fixtures" / "otlp").glob("*.pb"))
    assert len(fixtures) >= 6
    spans = [s for f in fixtures for s in decode_message(f.read_bytes())]
    d = deployment()
    worker = d.start_worker()
    d.produce([(None, f.read_bytes(), None) for f in fixtures] + [(None, f.with_suffix(".json").read_bytes(), None) for f in fixtures])
    db = "tracejudge"
    n_traces = len({s.trace_id for s in spans})
    assert wait_for(lambda: count(worker, f"SELECT count() FROM {db}.traces FINAL") >= n_traces, 60)
    assert count(worker, f"SELECT count() FROM {db}.spans FINAL") == len({(s.trace_id, s.span_id) for s in spans})
    kinds = dict(worker.sql(f"SELECT kind, count() FROM {db}.spans FINAL GROUP BY kind"))
    assert {"llm", "tool", "agent"} <= set(kinds)
    conventions = {r[0] for r in worker.sql(f"SELECT DISTINCT convention FROM {db}.spans FINAL")}
    assert {"genai", "openinference"} <= conventions
    errors = count(worker, f"SELECT count() FROM {db}.traces FINAL WHERE error_count > 0")
    assert errors == sum(1 for f in fixtures if "error" in f.name)
