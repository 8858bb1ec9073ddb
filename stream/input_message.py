"""What one input message becomes: its spans, ingested by this worker, or its request, cut per
trace for the repartition topic. A message to dead-letter raises :class:`DecodeError`.

A message is ingested here when it is already partitioned by trace (its key is the trace id of
every span in it, as the Collector's ``partition_traces_by_id`` writes it); any other (unkeyed,
mixed) goes through the repartition topic, so one worker sees a whole trace.
"""

from __future__ import annotations

import logging

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from schemas.decode import Limits, decode, is_json, parse_message
from schemas.model import Span
from schemas.shrink import Fitted, take_cut_keys
from schemas.split import split_by_trace
from stream.config import Settings
from stream.counters import Counters
from stream.dlq import InMessage, OutRecord

log = logging.getLogger(__name__)


class MessageReader:
    def __init__(self, settings: Settings, counters: Counters) -> None:
        self.encoding = settings.input_encoding
        self.limits = Limits(settings.max_message_bytes, settings.max_attribute_bytes,
                             settings.oversize_attribute_policy)  # fmt: skip
        self.counters = counters
        self.repartition_topic = settings.repartition_topic
        self.max_part_bytes = settings.max_repartition_message_bytes

    def read(self, msg: InMessage, repartition: bool = True) -> tuple[list[Span], ExportTraceServiceRequest | None]:
        """``(spans, None)`` for a message ingested here (or with ``repartition`` off);
        ``(spans, request)`` for one to split per trace. Raises ``DecodeError``."""
        # the repartition topic holds what this worker wrote: OTLP protobuf, whatever the input's encoding
        own = msg.topic == self.repartition_topic
        encoding = "otlp_proto" if own else self.encoding
        spans, req = decode(msg.value, encoding, self.limits)
        if own:  # what this worker's repartition cut (schemas/shrink.py)
            take_cut_keys(spans)
        if req is not None and msg.value and is_json(msg.value, encoding):
            self._json_not_straight(msg)
        if not repartition or partitioned_by_trace(msg.key, spans):
            return spans, None
        if req is None:  # OTLP/JSON read straight into spans: parts are cut from a request
            req = parse_message(msg.value, encoding, self.limits)
        return spans, req

    def repartition(self, req: ExportTraceServiceRequest) -> list[OutRecord]:
        """The repartition records of a message :meth:`read` returned a request for: its part per
        trace, cut under ``max_repartition_message_bytes`` (schemas/split.py), keyed by trace id."""
        c, limit = self.counters, self.max_part_bytes
        c.repartitioned_messages += 1
        records = []
        for tid, parts in split_by_trace(req, limit, self.limits.max_attribute_bytes, self._fitted).items():
            c.repartition_parts_cut += len(parts) - 1
            for part in parts:
                if len(part) > limit:  # a resource or scope alone over the limit: the broker may refuse it
                    c.repartition_oversize_records += 1
                    log.warning("trace %s: a record of %d bytes goes to the repartition topic, over "
                                "max_repartition_message_bytes %d (its resource or scope alone that large)",
                                tid, len(part), limit)  # fmt: skip
                records.append(OutRecord(self.repartition_topic, tid.encode(), part))
        return records

    def _fitted(self, trace_id: str, span_id: str, fitted: Fitted) -> None:
        """A span larger alone than a repartition record, made to fit (schemas/shrink.py)."""
        self.counters.repartition_spans_fitted += 1
        log.warning("trace %s span %s: larger alone than max_repartition_message_bytes %d even with its values "
                    "within max_attribute_bytes; cut to fit: %s (cut ones named in its truncated_attributes, dropped "
                    "ones counted in its attributes tracejudge.dropped_*)",
                    trace_id, span_id, self.max_part_bytes, fitted)  # fmt: skip

    def _json_not_straight(self, msg: InMessage) -> None:
        """OTLP/JSON the fast reader (schemas/otlp_json_spans.py) left to protobuf's JSON parser:
        correct, ~10x the CPU per span. Counted; the first one is logged with what to look for."""
        if not self.counters.otlp_json_slow_messages:
            log.warning("OTLP/JSON %s/%d@%d is not in the shape the Collector's otlp_json marshaler writes (e.g. "
                        "snake_case keys, enums by name, a null in a list): decoded through protobuf's JSON parser, "
                        "~10x the CPU per span; counted in tracejudge_otlp_json_slow_messages_total (README, Input "
                        "formats)", msg.topic, msg.partition, msg.offset)  # fmt: skip
        self.counters.otlp_json_slow_messages += 1


def partitioned_by_trace(key: bytes | None, spans: list[Span]) -> bool:
    """The key is the trace id of every span (any case)."""
    if not key or len(key) != 32:
        return False
    k = key.decode("ascii", "replace").lower()
    return all(s.trace_id == k for s in spans)
