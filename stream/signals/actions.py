"""Action signals: product events (regenerate, thumbs_down, abandon, ...) about agent traces.

An event is JSON on the events topic::

    {"trace_id": "<32 hex>"?, "conversation_id": "..."?, "type": "regenerate",
     "ts": "2026-11-22T10:00:00Z" | <epoch seconds or ms>, "attributes": {...}?, "event_id": "..."?}

At least one of trace_id / conversation_id is required. Unknown types and malformed events raise
:class:`EventError` (the caller dead-letters them with the reason). ``event_id`` defaults to a hash
of the message bytes, so a replayed message is the same event.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stream.signals.base import Polarity, Signal

KNOWN_TYPES = frozenset(
    {"regenerate", "thumbs_down", "thumbs_up", "abandon", "edit", "copy", "escalate", "retry", "report", "share"}
)
POSITIVE_TYPES = frozenset({"thumbs_up", "copy", "share"})
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


class EventError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ActionEvent:
    event_id: str
    type: str
    ts_ms: int
    trace_id: str = ""
    conversation_id: str = ""
    attributes_json: str = "{}"

    def signal(self, negative_types: frozenset[str]) -> Signal:
        # the policy's negative types; thumbs_up, copy and share positive; any other neither (it
        # was "positive": under the default policy a user's "report" or "retry" read as praise)
        polarity: Polarity = ("negative" if self.type in negative_types
                              else "positive" if self.type in POSITIVE_TYPES else "neutral")  # fmt: skip
        return Signal(
            type=self.type,
            polarity=polarity,
            source="action",
            rule="action:" + self.type,
            evidence=self.attributes_json[:300] if self.attributes_json != "{}" else "",
            message_index=None,
            span_id=None,
            language=None,
            ts_ns=self.ts_ms * 1_000_000,
            key=self.event_id,
        )


_MAX_MS = 1e13  # 2286-11-20


def _ts_ms(value: Any) -> int:
    if isinstance(value, bool):
        raise EventError("invalid_ts", f"ts must be a timestamp, got {value!r}")
    if isinstance(value, (int, float)):
        # seconds, milliseconds, microseconds or nanoseconds (OTel's unit) since the epoch, by magnitude
        v = float(value)
        if not math.isfinite(v) or v <= 0:  # JSON as Python reads it takes NaN and Infinity
            raise EventError("invalid_ts", f"ts must be a positive finite timestamp, got {value!r}")
        ms = v * 1000 if v < 1e11 else v if v < 1e14 else v / 1000 if v < 1e17 else v / 1_000_000
        if ms > _MAX_MS:
            raise EventError("invalid_ts", f"ts {value!r} is past the year 2286 in any unit")
        return int(ms)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise EventError("invalid_ts", f"ts is not ISO 8601: {value[:60]!r}") from None
        if dt.tzinfo is None:
            raise EventError("invalid_ts", f"ts has no timezone: {value[:60]!r}")
        return int(dt.timestamp() * 1000)
    raise EventError("invalid_ts", f"ts missing or of type {type(value).__name__}")


def parse_event(value: bytes | None, known_types: frozenset[str] = KNOWN_TYPES) -> ActionEvent:
    if not value:
        raise EventError("empty_message", "event value is empty")
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise EventError("undecodable", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EventError("undecodable", "event must be a JSON object")
    etype = doc.get("type")
    if not isinstance(etype, str) or not etype:
        raise EventError("missing_type", "event has no type")
    if etype not in known_types:
        raise EventError("unknown_type", f"event type {etype[:60]!r} is not one of {sorted(known_types)}")
    trace_id = doc.get("trace_id") or ""
    conversation_id = doc.get("conversation_id") or ""
    if not isinstance(trace_id, str) or not isinstance(conversation_id, str):
        raise EventError("invalid_ids", "trace_id and conversation_id must be strings")
    trace_id = trace_id.lower()
    if trace_id and not _HEX32.match(trace_id):
        raise EventError("invalid_trace_id", f"trace_id must be 32 hex characters, got {trace_id[:64]!r}")
    if not trace_id and not conversation_id:
        raise EventError("unlinkable", "event has neither trace_id nor conversation_id")
    attributes = doc.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise EventError("invalid_attributes", "attributes must be an object")
    event_id = doc.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        event_id = hashlib.sha256(value).hexdigest()[:32]
    return ActionEvent(
        event_id=event_id,
        type=etype,
        ts_ms=_ts_ms(doc.get("ts")),
        trace_id=trace_id,
        conversation_id=conversation_id,
        attributes_json=json.dumps(attributes, ensure_ascii=False, separators=(",", ":"), sort_keys=True),
    )
