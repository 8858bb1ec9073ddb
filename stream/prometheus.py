"""Prometheus ``/metrics`` on the worker's web server, read from the live counters at scrape time.

A collector over :func:`stream.metrics.snapshot`: the families of :data:`stream.metrics.SPECS`,
nothing stored between scrapes, so ``/metrics`` always equals ``/api/status``. Names carry the
``tracejudge_`` prefix and their unit; counters end in ``_total`` in the exposition (the family
names in ``SPECS`` are without the suffix, as prometheus-client wants).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from stream.metrics import SPECS, MetricSources, Spec, snapshot

if TYPE_CHECKING:
    import faust


class SnapshotCollector:
    """A prometheus-client collector over :func:`snapshot` (nothing is stored between scrapes)."""

    def __init__(self, sources: MetricSources) -> None:
        self.sources = sources

    def describe(self) -> Iterable[Metric]:
        return [self._family(s) for s in SPECS]

    def collect(self) -> Iterable[Metric]:
        snap = snapshot(self.sources)
        for spec in SPECS:
            fam = self._family(spec)
            for labels, value in snap[spec.name]:
                named = dict(labels)
                fam.add_metric([named.get(name, "") for name in spec.labels], value)
            yield fam

    @staticmethod
    def _family(spec: Spec) -> CounterMetricFamily | GaugeMetricFamily:
        cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
        return cls(spec.name, spec.doc, labels=list(spec.labels))


def build_registry(sources: MetricSources, process: bool = True) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SnapshotCollector(sources))
    if process:
        ProcessCollector(namespace="tracejudge", registry=registry)
    return registry


def exposition(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """The scrape body and its content type (OpenMetrics when the scraper asks for it)."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def add_metrics_page(app: faust.App, sources: MetricSources, path: str = "/metrics") -> CollectorRegistry:
    """Serve ``GET /metrics`` on the worker's web server."""
    from faust.web import Request, Response, View

    registry = build_registry(sources)

    @app.page(path)
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            body, content_type = exposition(registry, request.headers.get("Accept", ""))
            return self.bytes(body, headers={"Content-Type": content_type})

    return registry
