"""The worker's own OpenTelemetry metrics and spans: off by default, in memory, over real OTLP/HTTP
to a local receiver, and from a real worker process."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stream import telemetry
from stream.config import Settings
from stream.metrics import SPECS, MetricSources, snapshot
from stream.pipeline import Pipeline
from stream.sink import ClickHouseSink
from tests.factories import genai_trace, proto
from tests.stream.conftest import Deployment, free_port, wait_for
from tests.stream.otlp_receiver import OtlpReceiver
from tests.stream.test_pipeline import ListProducer


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    yield
    telemetry.current().shutdown()
    telemetry.reset()


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in another thread, like the worker's loop seen from the metric reader."""
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)
    loop.close()


async def _ident() -> int:
    return threading.get_ident()


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], float]]]:
    data = reader.get_metrics_data()
    out: dict[str, list[tuple[dict[str, Any], float]]] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = [(dict(p.attributes or {}), p.value) for p in m.data.data_points]
    return out


def test_off_without_an_endpoint() -> None:
    t = telemetry.setup_telemetry(Settings())
    assert not t.enabled and telemetry.current() is t
    with telemetry.batch_span("tracejudge.ingest_batch", 3) as span:
        assert span is None
    assert t.observe(lambda: {}) is None


def test_standard_environment_variable_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    assert telemetry.otlp_base_endpoint(Settings()) == "http://127.0.0.1:9"
    assert telemetry.otlp_base_endpoint(Settings(otel_exporter_otlp_endpoint="http://c:4318")) == "http://c:4318"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert telemetry.otlp_base_endpoint(Settings(otel_exporter_otlp_endpoint="http://c:4318")) is None


def test_signal_urls() -> None:
    assert telemetry.signal_url("http://c:4318", "traces") == "http://c:4318/v1/traces"
    assert telemetry.signal_url("http://c:4318/", "metrics") == "http://c:4318/v1/metrics"
    assert telemetry.signal_url("http://c:4318/v1/traces", "traces") == "http://c:4318/v1/traces"
    assert telemetry.signal_url(None, "traces") is None


def test_batch_spans_and_observed_counters_in_memory(store: Any, loop_thread: asyncio.AbstractEventLoop) -> None:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    t = telemetry.setup_telemetry(Settings(), span_exporter=spans, metric_readers=[reader])
    with telemetry.batch_span("tracejudge.judge_batch", 7, "traces.to_judge"):
        pass
    t.tracer_provider.force_flush()
    (span,) = spans.get_finished_spans()
    assert span.name == "tracejudge.judge_batch"
    assert span.attributes["messaging.batch.message_count"] == 7
    assert span.attributes["messaging.destination.name"] == "traces.to_judge"
    assert span.resource.attributes["service.name"] == "tracejudge"

    pipeline = Pipeline(Settings(), ClickHouseSink(store), ListProducer())
    pipeline.counters.messages_in = 41
    pipeline.counters.sample_classes.update({"success": 30, "suspected_failure": 11})
    threads: list[int] = []

    def snap() -> Any:
        threads.append(threading.get_ident())
        return snapshot(MetricSources(pipeline))

    bridge = t.observe(snap)
    assert bridge is not None
    assert metric_points(reader) == {}  # no loop bound yet: nothing observed, nothing raised
    bridge.loop = loop_thread
    got = metric_points(reader)
    assert got["tracejudge_messages_in"] == [({}, 41)]
    assert sorted(got["tracejudge_sampling_decisions"], key=lambda p: p[1]) == [
        ({"sample_class": "suspected_failure"}, 11), ({"sample_class": "success"}, 30)]  # fmt: skip
    assert got["tracejudge_open_traces"] == [({}, 0)]
    # the snapshot ran on the loop's thread, not the reader's
    assert set(threads) == {asyncio.run_coroutine_threadsafe(_ident(), loop_thread).result(5)} != {threading.get_ident()}
    assert len(threads) == 1  # one snapshot served every instrument of the collection
    names = {s.name for s in SPECS}
    assert set(got) <= names


def test_export_over_otlp_http_to_a_receiver(store: Any, loop_thread: asyncio.AbstractEventLoop) -> None:
    with OtlpReceiver() as receiver:
        t = telemetry.setup_telemetry(Settings(otel_exporter_otlp_endpoint=receiver.url))
        assert t.enabled
        pipeline = Pipeline(Settings(), ClickHouseSink(store), ListProducer())
        pipeline.counters.spans_stored = 1234
        bridge = t.observe_sources(MetricSources(pipeline))
        assert bridge is not None
        bridge.loop = loop_thread
        with telemetry.batch_span("tracejudge.ingest_batch", 5, "otlp_spans"):
            pass
        assert t.tracer_provider.force_flush(10_000) and t.meter_provider.force_flush(10_000)
        (span,) = [s for s in receiver.spans() if s.span.name == "tracejudge.ingest_batch"]
        assert span.attributes["messaging.batch.message_count"] == 5
        assert span.resource["service.name"] == "tracejudge" and span.scope == "tracejudge"
        assert receiver.latest_metrics()["tracejudge_spans_stored"] == [({}, 1234)]
        assert receiver.content_types == {"application/x-protobuf"}
        assert t.shutdown()  # flushed in time while the receiver is up
        telemetry.reset()


def test_shutdown_with_the_endpoint_down_gives_up_after_its_timeout(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens: the exporters would retry the final export with backoff for up to 10 s per
    signal (OTEL_EXPORTER_OTLP_TIMEOUT) and hold up the worker's exit; shutdown cuts that short."""
    t = telemetry.setup_telemetry(Settings(otel_exporter_otlp_endpoint=f"http://127.0.0.1:{free_port()}"))
    with telemetry.batch_span("tracejudge.ingest_batch", 1, "otlp_spans"):
        pass
    started = time.monotonic()
    assert t.shutdown(timeout=0.5) is False
    assert time.monotonic() - started < 5.0
    assert "did not finish within" in caplog.text
    telemetry.reset()


def test_a_real_worker_exports_its_spans_and_metrics(deployment: Callable[..., Deployment]) -> None:
    rng = random.Random(21)
    with OtlpReceiver() as receiver:
        d = deployment(otel_exporter_otlp_endpoint=receiver.url)
        d.settings.update(OTEL_METRIC_EXPORT_INTERVAL="300", OTEL_BSP_SCHEDULE_DELAY="100")
        worker = d.start_worker()
        traces = [genai_trace(rng, 4) for _ in range(9)]
        d.produce([(t[0].trace_id.hex().encode(), proto(t), n % 4) for n, t in enumerate(traces)])
        assert wait_for(lambda: sum(worker.status()["counters"]["traces_completed"].values()) == 9, 60)

        def ingest_batches() -> list[Any]:
            return [s for s in receiver.spans() if s.span.name == "tracejudge.ingest_batch"]

        # every message was handled inside exactly one ingest_batch span
        assert wait_for(lambda: sum(s.attributes["messaging.batch.message_count"] for s in ingest_batches()) == 9, 30)
        assert all(s.attributes["messaging.destination.name"] == d.input_topic for s in ingest_batches())
        assert all(s.resource["service.name"] == "tracejudge" for s in ingest_batches())
        status = worker.status()["counters"]

        def exported(name: str) -> float | None:
            points = receiver.latest_metrics().get(name)
            return sum(v for _, v in points) if points else None

        assert wait_for(lambda: exported("tracejudge_messages_in") == status["messages_in"] == 9, 30)
        assert wait_for(lambda: exported("tracejudge_spans_stored") == status["spans_stored"], 30)
        assert wait_for(lambda: exported("tracejudge_traces_assembled") == 9, 30)
        lag = receiver.latest_metrics().get("tracejudge_consumer_highwater_offset") or []
        assert sum(v for a, v in lag if a["topic"] == d.input_topic) == 9
        assert worker.stop() == 0  # while the receiver still takes the final export
