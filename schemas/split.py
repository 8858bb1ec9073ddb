"""Split an OTLP request per trace, as the Collector's ``partition_traces_by_id`` does.

Used to repartition unkeyed (or mixed) input: each part keeps its spans' resource and scope and is
keyed by its 32-hex trace id, so the repartition topic carries exactly what a Collector with
``partition_traces_by_id: true`` would have written.
"""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def split_by_trace(req: ExportTraceServiceRequest) -> dict[str, bytes]:
    parts: dict[str, ExportTraceServiceRequest] = {}
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            # per trace: the (resource, scope) container built for this scope_spans
            containers: dict[str, object] = {}
            for span in ss.spans:
                tid = span.trace_id.hex()
                scope = containers.get(tid)
                if scope is None:
                    part = parts.get(tid)
                    if part is None:
                        part = parts[tid] = ExportTraceServiceRequest()
                    out_rs = part.resource_spans.add()
                    out_rs.resource.CopyFrom(rs.resource)
                    out_rs.schema_url = rs.schema_url
                    scope = out_rs.scope_spans.add()
                    scope.scope.CopyFrom(ss.scope)
                    scope.schema_url = ss.schema_url
                    containers[tid] = scope
                scope.spans.append(span)  # type: ignore[attr-defined]
    return {tid: part.SerializeToString() for tid, part in parts.items()}
