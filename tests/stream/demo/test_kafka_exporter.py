"""KafkaSpanExporter writes what the Collector's kafka exporter writes (real SDK spans, real broker)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from schemas.otlp_json import parse_otlp_json
from stream.demo.broker import LocalBroker, free_port
from stream.demo.kafka_exporter import KafkaSpanExporter

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _finished_spans(n_traces: int, spans_per_trace: int = 3) -> list[ReadableSpan]:
    """Real SDK spans of ``n_traces`` traces, captured in memory."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "exporter-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    for t in range(n_traces):
        with tracer.start_as_current_span(f"invoke_agent a{t}", attributes={"gen_ai.operation.name": "invoke_agent"}):
            for i in range(spans_per_trace - 1):
                with tracer.start_as_current_span(f"chat m{i}"):
                    pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def _trace_ids(req: ExportTraceServiceRequest) -> list[str]:
    return [s.trace_id.hex() for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def _sdk_trace_ids(spans: Sequence[ReadableSpan]) -> set[str]:
    return {f"{s.context.trace_id:032x}" for s in spans}


@pytest.fixture
def exporter_factory(broker: LocalBroker):
    made: list[KafkaSpanExporter] = []

    def make(topic: str, **kwargs) -> KafkaSpanExporter:
        exporter = KafkaSpanExporter(broker.bootstrap, topic, **kwargs)
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.shutdown()


def test_keyed_proto_one_message_per_trace(new_topic, consume, exporter_factory) -> None:
    topic = new_topic(4)
    spans = _finished_spans(5)
    exporter = exporter_factory(topic, encoding="otlp_proto", partition_traces_by_id=True)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert (exporter.stats.messages, exporter.stats.spans) == (5, 15)

    records = consume(topic, expect=5)
    assert len(records) == 5
    keys = set()
    for record in records:
        key = record.key.decode("ascii")
        assert HEX32.match(key)
        req = ExportTraceServiceRequest.FromString(record.value)
        ids = _trace_ids(req)
        assert len(ids) == 3 and set(ids) == {key}
        assert not record.headers  # the Collector sets no content-type header
        keys.add(key)
    assert keys == _sdk_trace_ids(spans)


def test_keyed_messages_of_one_trace_share_a_partition(new_topic, consume, exporter_factory) -> None:
    topic = new_topic(4)
    spans = _finished_spans(8)
    exporter = exporter_factory(topic, partition_traces_by_id=True)
    by_trace: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_trace.setdefault(f"{span.context.trace_id:032x}", []).append(span)
    for group in by_trace.values():  # each trace arrives in two exports, like spans of a long trace
        assert exporter.export(group[:1]) is SpanExportResult.SUCCESS
        assert exporter.export(group[1:]) is SpanExportResult.SUCCESS
    records = consume(topic, expect=16)
    partitions: dict[bytes, set[int]] = {}
    for r in records:
        partitions.setdefault(r.key, set()).add(r.partition)
    assert len(partitions) == 8
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) > 1


def test_unkeyed_proto_one_message_per_batch(new_topic, consume, exporter_factory) -> None:
    topic = new_topic(4)
    spans = _finished_spans(4)
    exporter = exporter_factory(topic, encoding="otlp_proto", partition_traces_by_id=False)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    (record,) = consume(topic, expect=1)
    assert record.key is None
    req = ExportTraceServiceRequest.FromString(record.value)
    assert len(_trace_ids(req)) == 12
    assert set(_trace_ids(req)) == _sdk_trace_ids(spans)
    assert req.resource_spans[0].resource.attributes[0].key  # resource travels with the spans


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "unkeyed"])
def test_otlp_json(new_topic, consume, exporter_factory, keyed: bool) -> None:
    topic = new_topic(2)
    spans = _finished_spans(3)
    exporter = exporter_factory(topic, encoding="otlp_json", partition_traces_by_id=keyed)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    records = consume(topic, expect=3 if keyed else 1)
    assert len(records) == (3 if keyed else 1)
    seen: set[str] = set()
    for record in records:
        doc = json.loads(record.value)
        raw_span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        assert HEX32.match(raw_span["traceId"]) and re.match(r"^[0-9a-f]{16}$", raw_span["spanId"])
        ids = _trace_ids(parse_otlp_json(record.value))
        if keyed:
            assert set(ids) == {record.key.decode()}
        else:
            assert record.key is None
        seen |= set(ids)
    assert seen == _sdk_trace_ids(spans)


def test_batch_span_processor_exports_from_its_thread(new_topic, consume, exporter_factory) -> None:
    topic = new_topic(4)
    exporter = exporter_factory(topic, partition_traces_by_id=True)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    tracer = provider.get_tracer("test")
    for _ in range(20):
        with tracer.start_as_current_span("root"):
            with tracer.start_as_current_span("child"):
                pass
    assert provider.force_flush(10_000)
    assert exporter.stats.spans == 40
    records = consume(topic, expect=exporter.stats.messages)
    spans = sum(len(_trace_ids(ExportTraceServiceRequest.FromString(r.value))) for r in records)
    assert spans == 40
    provider.shutdown()  # shuts the exporter down too
    assert exporter.export(_finished_spans(1)) is SpanExportResult.FAILURE


def test_export_fails_within_the_timeout_when_the_broker_is_gone(tmp_path: Path) -> None:
    with LocalBroker(tmp_path) as private:
        exporter = KafkaSpanExporter(private.bootstrap, "gone", send_timeout=1.0)
        assert exporter.export(_finished_spans(1)) is SpanExportResult.SUCCESS
    began = time.monotonic()
    assert exporter.export(_finished_spans(1)) is SpanExportResult.FAILURE
    assert time.monotonic() - began < 5
    assert exporter.stats.failed_exports == 1
    exporter.shutdown()
    exporter.shutdown()  # idempotent


def test_unreachable_broker_fails_at_construction() -> None:
    began = time.monotonic()
    with pytest.raises(KafkaError):
        KafkaSpanExporter(f"127.0.0.1:{free_port()}", "nowhere", connect_timeout=3)
    assert time.monotonic() - began < 5


def test_unknown_encoding_is_refused(broker: LocalBroker) -> None:
    with pytest.raises(ValueError, match="encoding"):
        KafkaSpanExporter(broker.bootstrap, "x", encoding="zipkin_json")  # type: ignore[arg-type]
