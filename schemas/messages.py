"""A normalized span's input and output messages, parsed lazily (``Span`` calls the parsers on first
access, :mod:`schemas.normalize` only when a span has no ``gen_ai.response.finish_reasons``).

Two parsers read them: :mod:`schemas.genai` (current and deprecated OpenTelemetry GenAI
conventions, Traceloop's flattened prompts, message events) and :mod:`schemas.openinference`. A
span's convention decides which goes first; the other is the fallback.
"""

from __future__ import annotations

from schemas.coerce import Attrs
from schemas.genai import SOURCE_KEYS as genai_source_keys
from schemas.genai import genai_side, has_message_events, system_text
from schemas.model import Message, Span, SpanEvent
from schemas.openinference import SOURCE_KEYS as oi_source_keys
from schemas.openinference import openinference_side


def parse_input_messages(span: Span) -> tuple[list[Message], str | None]:
    """A normalized span's input messages and system instructions; never raises.

    Not part of :func:`normalize_span`: ``Span`` calls it lazily, on first access."""
    attrs = span.attributes if isinstance(span.attributes, dict) else {}
    try:
        inputs = parse_side(span.convention, attrs, span.events, "input")
    except Exception:  # noqa: BLE001 - odd input: no messages rather than a crash
        return [], None
    system = system_text(attrs["gen_ai.system_instructions"]) if "gen_ai.system_instructions" in attrs else None
    if system is None:
        system = "\n".join(m.content for m in inputs if m.role in ("system", "developer") and m.content) or None
    return inputs, system


def parse_output_messages(span: Span) -> list[Message]:
    """A normalized span's output messages (parsed lazily, separately from the inputs)."""
    attrs = span.attributes if isinstance(span.attributes, dict) else {}
    try:
        return parse_side(span.convention, attrs, span.events, "output")
    except Exception:  # noqa: BLE001
        return []


_SOURCE_KEYS = {side: genai_source_keys[side] | oi_source_keys[side] for side in ("input", "output")}


def parse_side(convention: str, attrs: Attrs, events: list[SpanEvent], side: str) -> list[Message]:
    """One side's messages (``"input"`` or ``"output"``) by the span's convention's parser first,
    the other's when that finds none. May raise on odd input (the callers above catch)."""
    if attrs.keys().isdisjoint(_SOURCE_KEYS[side]) and not (events and has_message_events(events)):
        return []  # most tool and agent spans: no source either parser reads (the same answer, faster)
    if convention == "openinference":
        return openinference_side(attrs, side) or genai_side(attrs, events, side)
    return genai_side(attrs, events, side) or openinference_side(attrs, side)
