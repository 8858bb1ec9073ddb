"""An OpenTelemetry SDK span exporter that writes to Kafka the way the Collector's kafka exporter does.

Wire format (contrib ``exporter/kafkaexporter``):

* ``encoding="otlp_proto"``: the value is a serialized ``ExportTraceServiceRequest``;
  ``encoding="otlp_json"``: the same request in the OTLP/JSON mapping (hex ids, camelCase).
* ``partition_traces_by_id=True``: the batch is split per trace, one message per trace, key = the trace
  id as 32 lowercase hex characters. ``False``: one message for the whole batch, null key.
* No headers (no content type): consumers are told the encoding.

The SDK calls :meth:`KafkaSpanExporter.export` from its own worker thread. The aiokafka producer lives
on a private event loop in a daemon thread; ``export`` hands the messages over and blocks until the
broker acknowledged them, or returns ``FAILURE`` after ``send_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiokafka import AIOKafkaProducer
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from schemas.otlp_json import to_otlp_json

log = logging.getLogger(__name__)

Encoding = Literal["otlp_proto", "otlp_json"]
Message = tuple[bytes | None, bytes]  # (key, value)
T = TypeVar("T")


@dataclass
class ExportStats:
    messages: int = 0
    spans: int = 0
    failed_exports: int = 0


def encode_messages(spans: Sequence[ReadableSpan], encoding: Encoding,
                    partition_traces_by_id: bool) -> list[Message]:
    """The Kafka messages the Collector would write for this batch of spans."""
    if not spans:
        return []
    if partition_traces_by_id:
        by_trace: dict[int, list[ReadableSpan]] = {}
        for span in spans:
            trace_id = span.context.trace_id if span.context is not None else 0
            by_trace.setdefault(trace_id, []).append(span)
        return [(f"{tid:032x}".encode("ascii"), _encode(group, encoding)) for tid, group in by_trace.items()]
    return [(None, _encode(spans, encoding))]


def _encode(spans: Sequence[ReadableSpan], encoding: Encoding) -> bytes:
    request = encode_spans(spans)
    if encoding == "otlp_proto":
        return request.SerializeToString()
    if encoding == "otlp_json":
        return to_otlp_json(request)
    raise ValueError(f"unsupported encoding {encoding!r}")


class KafkaSpanExporter(SpanExporter):
    """Export OTel SDK spans to ``topic`` on ``bootstrap`` as the Collector's kafka exporter would.

    The producer connects in the constructor (raising if the broker is unreachable within
    ``connect_timeout``). ``stats`` counts acknowledged messages and spans.
    """

    def __init__(self, bootstrap: str, topic: str = "otlp_spans", *, encoding: Encoding = "otlp_proto",
                 partition_traces_by_id: bool = False, send_timeout: float = 10.0,
                 connect_timeout: float = 10.0, max_message_bytes: int = 8 * 1024 * 1024,
                 acks: int | Literal["all"] = 1) -> None:
        if encoding not in ("otlp_proto", "otlp_json"):
            raise ValueError(f"unsupported encoding {encoding!r}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.encoding: Encoding = encoding
        self.partition_traces_by_id = partition_traces_by_id
        self.send_timeout = send_timeout
        self.stats = ExportStats()
        self._stats_lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name=f"kafka-exporter-{topic}", daemon=True)
        self._thread.start()
        try:
            self._producer = self._call(self._start_producer(max_message_bytes, acks), connect_timeout)
        except BaseException:
            self._stop_loop()
            raise

    async def _start_producer(self, max_message_bytes: int, acks: int | Literal["all"]) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks=acks, linger_ms=5,
                                    max_request_size=max_message_bytes)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the producer loop and wait for it (cancelling it on timeout)."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise

    async def _send_all(self, messages: list[Message]) -> None:
        pending = [await self._producer.send(self.topic, value=value, key=key) for key, value in messages]
        await asyncio.gather(*pending)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            messages = encode_messages(spans, self.encoding, self.partition_traces_by_id)
            self._call(self._send_all(messages), self.send_timeout)
        except Exception as exc:  # the SDK only wants a result; say why in the log
            reason = f"no acknowledgement within {self.send_timeout}s" if isinstance(exc, FutureTimeout) else repr(exc)
            log.warning("kafka export of %d spans to %s failed: %s", len(spans), self.topic, reason)
            with self._stats_lock:
                self.stats.failed_exports += 1
            return SpanExportResult.FAILURE
        with self._stats_lock:
            self.stats.messages += len(messages)
            self.stats.spans += len(spans)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._closed:
            return True
        try:
            self._call(self._producer.flush(), timeout_millis / 1000)
        except Exception:
            return False
        return True

    def shutdown(self) -> None:
        """Flush, stop the producer and the loop thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._producer.stop(), self.send_timeout)
        except Exception as exc:
            log.warning("stopping the kafka producer failed: %r", exc)
        finally:
            self._stop_loop()

    def _run_loop(self) -> None:
        """Thread body: serve the producer until stopped, then cancel what is left (as asyncio.run does)."""
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=2.0))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _stop_loop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
