"""Rows the worker builds from fixed content, for :class:`stream.refused_rows.KnownGood`.

A worker that has stored nothing since it started knows no row its tables took. When such a
worker's small insert is refused whole for a reason other than a ``CHECK`` constraint (a column
whose type no longer fits what the worker writes, a value the client cannot serialize), or by a
``CHECK`` constraint while the table holds no recent row to evaluate it over, it asks its table's
copy for one of these instead: a plain GenAI chat span, or a product event, built by
the same decoder and row builders as every other row. If the copy refuses that too, the table no
longer takes what the worker writes (a schema problem: the insert waits); if it takes it, the
refused rows are bad data (dead-lettered).

The content is fixed and ordinary on purpose (no value near a limit). Nothing of it is stored:
the copy it goes to keeps no row.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas.decode import decode
from stream.dlq import InMessage
from stream.rows import span_row
from stream.signals.actions import ActionEvent

TOPIC = "tracejudge.reference"


def _otlp_json(now_ms: int) -> bytes:
    """One chat span, as the OpenTelemetry Collector's kafka exporter writes OTLP/JSON."""
    start, end = (now_ms - 1_000) * 1_000_000, now_ms * 1_000_000
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
             "gen_ai.response.model": "gpt-4o-mini", "gen_ai.conversation.id": "reference"}  # fmt: skip
    span = {
        "traceId": "5eed" * 8, "spanId": "5eed" * 4, "name": "chat gpt-4o-mini", "kind": 3,
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(end),
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]
        + [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}},
           {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "5"}}],
        "status": {},
    }  # fmt: skip
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "tracejudge-reference"}}]}
    return orjson.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {}, "spans": [span]}]}]})


def reference_span_rows(now_ms: int) -> list[tuple[Any, ...]]:
    """One ``spans`` row, through the decoder and :func:`stream.rows.span_row`."""
    spans, _ = decode(_otlp_json(now_ms), "otlp_json")
    return [span_row(s, TOPIC, 0, 0, now_ms, False) for s in spans]


def reference_events(now_ms: int) -> list[tuple[InMessage, ActionEvent]]:
    """One product event, as :meth:`stream.events.EventJoiner.probe` takes them."""
    event = ActionEvent("reference", "regenerate", now_ms, trace_id="5eed" * 8, conversation_id="reference")
    return [(InMessage(TOPIC, 0, 0, None, None), event)]
