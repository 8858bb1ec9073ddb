"""OpenTelemetry metrics and traces of the processor itself, exported over OTLP/HTTP (protobuf).

On when ``otel_exporter_otlp_endpoint`` (``TRACEJUDGE_OTEL_EXPORTER_OTLP_ENDPOINT``) or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (and ``OTEL_SDK_DISABLED`` is not ``true``); a no-op otherwise.

* **Metrics**: one observable instrument per family of :data:`stream.metrics.SPECS` — the same
  names and numbers as Prometheus ``/metrics`` (counters cumulative, gauges as gauges), read from
  the live counters at each collection. The reader runs in its own thread, so a collection asks the
  worker's event loop for the snapshot (:class:`_SnapshotBridge`) instead of reading state that loop
  is mutating. Interval and timeout: the standard ``OTEL_METRIC_EXPORT_INTERVAL`` /
  ``OTEL_METRIC_EXPORT_TIMEOUT`` (ms; default 60 s).
* **Traces**: :func:`batch_span` wraps each batch handler of :mod:`stream.app` in a span
  (``tracejudge.ingest_batch``, ``tracejudge.assemble_batch``, ``tracejudge.events_batch``,
  ``tracejudge.judge_batch``) with ``messaging.batch.message_count`` and the topic. Spans go
  through a ``BatchSpanProcessor`` (``OTEL_BSP_*`` apply).

The providers are this module's own, not the process-global ones. Resource: ``service.name``
``tracejudge`` unless ``OTEL_SERVICE_NAME`` says otherwise; ``OTEL_RESOURCE_ATTRIBUTES`` apply.
Headers, timeouts, compression and TLS of the exporters follow the standard ``OTEL_EXPORTER_OTLP_*``
variables.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Tracer

from stream.metrics import SPECS, MetricSources, Snapshot, Spec, snapshot

if TYPE_CHECKING:
    import faust

    from stream.config import Settings

log = logging.getLogger(__name__)

OTEL_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
SCOPE = "tracejudge"
SHUTDOWN_TIMEOUT = 3.0  # seconds the final export may take when the worker stops


def tracejudge_version() -> str:
    try:
        return version("tracejudge")
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "0+unknown"


def tracejudge_resource() -> Resource:
    attrs: dict[str, Any] = {"service.version": tracejudge_version()}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attrs["service.name"] = "tracejudge"
    return Resource.create(attrs)


def otlp_base_endpoint(settings: Settings) -> str | None:
    """The OTLP/HTTP base URL for the worker's own telemetry, or ``None`` (telemetry off)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    return settings.otel_exporter_otlp_endpoint or os.environ.get(OTEL_ENDPOINT_ENV) or None


def signal_url(base: str | None, signal: Literal["traces", "metrics"]) -> str | None:
    """``base`` + ``/v1/<signal>`` (kept as is when it already names that path). ``None`` lets the
    exporter resolve ``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    if not base:
        return None
    path = f"/v1/{signal}"
    base = base.rstrip("/")
    return base if base.endswith(path) else base + path


class _SnapshotBridge:
    """Snapshots computed on the worker's event loop for callers on other threads (the metric
    reader's). One snapshot serves every instrument of a collection (cached ``max_age`` seconds);
    when the loop is not running or does not answer in time, the last snapshot is returned."""

    def __init__(self, fn: Callable[[], Snapshot], max_age: float = 1.0, timeout: float = 5.0) -> None:
        self.fn = fn
        self.loop: asyncio.AbstractEventLoop | None = None
        self.max_age = max_age
        self.timeout = timeout
        self._last: Snapshot = {}
        self._at = float("-inf")
        self._lock = threading.Lock()

    def get(self) -> Snapshot:
        with self._lock:
            if time.monotonic() - self._at < self.max_age:
                return self._last
            try:
                snap = self._compute()
            except Exception:  # noqa: BLE001 - a collection must never raise into the SDK
                log.debug("metrics snapshot unavailable", exc_info=True)
                return self._last
            self._last, self._at = snap, time.monotonic()
            return snap

    def _compute(self) -> Snapshot:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self.loop
        if running is not None and running is loop:
            return self.fn()
        if loop is None or loop.is_closed() or not loop.is_running():
            raise RuntimeError("event loop not running")

        async def on_loop() -> Snapshot:
            return self.fn()

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(self.timeout)


class Telemetry:
    """The worker's own tracer and meter; every method is a no-op when telemetry is off."""

    def __init__(self, tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None,
                 exporters: Sequence[Any] = ()) -> None:  # fmt: skip
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.exporters = list(exporters)  # their shutdown() cuts a final export's retries short
        self.tracer: Tracer | None = (
            tracer_provider.get_tracer(SCOPE, tracejudge_version()) if tracer_provider is not None else None
        )
        self.bridge: _SnapshotBridge | None = None

    @property
    def enabled(self) -> bool:
        return self.tracer_provider is not None or self.meter_provider is not None

    @contextmanager
    def batch_span(self, name: str, messages: int, topic: str | None = None) -> Iterator[Span | None]:
        if self.tracer is None:
            yield None
            return
        attrs: dict[str, Any] = {"messaging.batch.message_count": messages, "messaging.system": "kafka",
                                 "messaging.operation.type": "process"}  # fmt: skip
        if topic:
            attrs["messaging.destination.name"] = topic
        with self.tracer.start_as_current_span(name, kind=SpanKind.CONSUMER, attributes=attrs) as span:
            yield span

    def observe(self, fn: Callable[[], Snapshot], app: faust.App | None = None) -> _SnapshotBridge | None:
        """Register one observable instrument per metric family, reading ``fn()``'s snapshot.
        With ``app``, the snapshot is taken on the app's event loop (bound when the app starts)."""
        if self.meter_provider is None:
            return None
        bridge = self.bridge = _SnapshotBridge(fn)
        if app is not None:

            @app.task
            async def bind_telemetry_loop() -> None:
                bridge.loop = asyncio.get_running_loop()

        meter = self.meter_provider.get_meter(SCOPE, tracejudge_version())
        for spec in SPECS:
            create = meter.create_observable_counter if spec.kind == "counter" else meter.create_observable_gauge
            create(spec.name, callbacks=[_callback(bridge, spec)], unit=spec.unit, description=spec.doc)
        return bridge

    def observe_sources(self, sources: MetricSources, app: faust.App | None = None) -> _SnapshotBridge | None:
        return self.observe(lambda: snapshot(sources), app)

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> bool:
        """Flush and stop both providers, together, for at most ~``timeout`` seconds. With the
        collector down, the exporters' final export would retry with backoff for up to
        ``OTEL_EXPORTER_OTLP_TIMEOUT`` (10 s) per signal and hold up the worker's exit: past
        ``timeout`` the exporters are shut down, which ends their retries, and what they still held
        is dropped (logged). Returns whether everything was flushed in time."""
        providers = [p for p in (self.meter_provider, self.tracer_provider) if p is not None]
        threads = [threading.Thread(target=_shutdown_quietly, args=(p,), name="telemetry-shutdown", daemon=True)
                   for p in providers]  # fmt: skip
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if not any(t.is_alive() for t in threads):
            return True
        log.warning("telemetry: the final export did not finish within %.0f s (is the OTLP endpoint down?); "
                    "dropping what was not exported", timeout)  # fmt: skip
        for exporter in self.exporters:
            _shutdown_quietly(exporter)
        for t in threads:
            t.join(1.0)
        return False


def _shutdown_quietly(part: Any) -> None:
    try:
        part.shutdown()
    except Exception:  # noqa: BLE001 - shutting down; the exporter already logged
        log.warning("telemetry shutdown of %s failed", type(part).__name__, exc_info=True)


def _callback(bridge: _SnapshotBridge, spec: Spec) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, dict(labels)) for labels, value in bridge.get().get(spec.name, ())]

    return observe


_DISABLED = Telemetry()
_current: Telemetry = _DISABLED


def current() -> Telemetry:
    return _current


def batch_span(name: str, messages: int, topic: str | None = None) -> Any:
    """A span around one batch handler of the current telemetry (a no-op context when off)."""
    return _current.batch_span(name, messages, topic)


def setup_telemetry(
    settings: Settings,
    *,
    span_exporter: SpanExporter | None = None,
    metric_readers: Sequence[MetricReader] | None = None,
) -> Telemetry:
    """Build the worker's telemetry from settings and make it current. Exporters and readers can be
    given (tests); otherwise OTLP/HTTP exporters to the configured endpoint are used."""
    global _current
    base = otlp_base_endpoint(settings)
    if base is None and span_exporter is None and metric_readers is None:
        _current = _DISABLED
        return _current
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    explicit = settings.otel_exporter_otlp_endpoint  # the standard variables are resolved by the exporters
    resource = tracejudge_resource()
    tracer_provider = meter_provider = None
    exporters: list[Any] = []
    if span_exporter is not None or base is not None:
        tracer_provider = TracerProvider(resource=resource)
        if span_exporter is None:
            span_exporter = OTLPSpanExporter(endpoint=signal_url(explicit, "traces"))
            exporters.append(span_exporter)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    if metric_readers is None and base is not None:
        exporters.append(OTLPMetricExporter(endpoint=signal_url(explicit, "metrics")))
        metric_readers = [PeriodicExportingMetricReader(exporters[-1])]
    if metric_readers is not None:
        meter_provider = MeterProvider(resource=resource, metric_readers=list(metric_readers))
    _current = Telemetry(tracer_provider, meter_provider, exporters)
    log.info("OpenTelemetry: worker metrics and spans over OTLP/HTTP to %s", base or "the given exporters")
    return _current


def reset() -> None:
    """Make telemetry a no-op again (after :meth:`Telemetry.shutdown`)."""
    global _current
    _current = _DISABLED
