"""Read-only views of a trace that several gates share, each computed as cheaply as it can be.

* :func:`tool_uses` — the tool calls of a trace with their arguments and results. Executed tool
  spans are used when the trace has any (no message content is parsed); otherwise the calls the
  models requested in their output messages, with results matched by ``tool_call_id`` from later
  ``role=tool`` input messages (instrumentations that emit only LLM spans).
* :func:`user_messages` — the user's messages, deduplicated (every LLM span repeats the history).
* :func:`last_llm_span` — the LLM span that ended last (the final answer is its output).
* :func:`final_output` — :attr:`Trace.final_output` with the span it came from.
* :func:`output_texts` — assistant output text of every LLM span.
* :func:`token_totals` — the trace's token usage.

:func:`tool_uses` is computed once per trace (several gates ask for it); :func:`output_texts` reads
the texts straight from ``gen_ai.output.messages`` when it can, without building the messages.
"""

from __future__ import annotations

import json
from functools import partial
from operator import attrgetter
from typing import Any, NamedTuple

import orjson

from schemas.genai import output_texts_from_json
from schemas.model import Span, SpanKind, Trace
from schemas.user_messages import user_messages as extract_user_messages


class ToolUse(NamedTuple):
    """One tool call. Immutable (shared by every gate through the per-trace memo); a named tuple
    rather than a frozen dataclass: built for every tool span of every trace, ~4x cheaper."""

    name: str
    arguments: str | None  # JSON text as emitted, None when not recorded
    result: str | None  # None when not recorded
    span_id: str  # the tool span, or the LLM span that requested the call
    call_id: str | None = None
    span: Span | None = None  # the executed tool span (None for a call only seen in messages)


# = ToolUse(*fields) without the generated Python __new__ (one per tool span of every trace): the
# same tuple, built by the C constructor; fields read from the span's dict (pydantic attribute access
# is slower).
_new_tool_use = partial(tuple.__new__, ToolUse)


_by_start = attrgetter("start_ns")  # a C-level sort key (a lambda call per span costs more)


def tool_spans(trace: Trace) -> list[Span]:
    tool = SpanKind.TOOL
    return sorted([s for s in trace.spans if s.kind == tool], key=_by_start)


def tool_uses(trace: Trace) -> list[ToolUse]:
    """The trace's tool calls (memoized on the trace: the loop, tool_error, pattern, ... gates all
    ask; a copy of the list is returned, the :class:`ToolUse` items are frozen)."""
    return list(trace._memo("tool_uses", lambda: _tool_uses(trace)))


def _tool_uses(trace: Trace) -> list[ToolUse]:
    spans = tool_spans(trace)
    if spans:
        uses = []
        for s in spans:
            d = s.__dict__
            uses.append(_new_tool_use((d["tool_name"] or d["name"], d["tool_arguments"], d["tool_result"],
                                       d["span_id"], d["tool_call_id"], s)))  # fmt: skip
        return uses
    return _requested_tool_uses(trace)


def _requested_tool_uses(trace: Trace) -> list[ToolUse]:
    llm = sorted(trace.llm_spans, key=lambda s: s.start_ns)
    results: dict[str, str] = {}
    for s in llm:
        for m in s.input_messages:
            if m.role == "tool" and m.tool_call_id:
                results.setdefault(m.tool_call_id, m.content)
    uses: list[ToolUse] = []
    seen: set[str] = set()
    for s in llm:
        for m in s.output_messages:
            for c in m.tool_calls:
                if c.id:
                    if c.id in seen:
                        continue
                    seen.add(c.id)
                result = results.get(c.id) if c.id else None
                uses.append(ToolUse(c.name, c.arguments, result, s.span_id, c.id))
    return uses


def user_messages(trace: Trace) -> list[tuple[str, str]]:
    """``(span_id, text)`` of each user message of this trace's turn, in order, history repeated
    across LLM spans counted once, earlier turns carried as history left out — the same
    extraction the semantic signal miner uses."""
    return [(m.span_id, m.text) for m in extract_user_messages(trace) if not m.prior_turn]


def last_llm_span(trace: Trace) -> Span | None:
    llm = trace.llm_spans
    return max(llm, key=lambda s: (s.end_ns, s.start_ns)) if llm else None


def final_output(trace: Trace) -> tuple[str | None, str]:
    """``(span_id, text)`` of :attr:`Trace.final_output` (same rule), with the span it came from."""
    for s in sorted(trace.llm_spans, key=lambda s: s.end_ns, reverse=True):
        for m in reversed(s.output_messages):
            if m.content:
                return s.span_id, m.content
    return None, ""


def output_texts(trace: Trace) -> list[tuple[str, str]]:
    """``(span_id, text)`` of every assistant output message with text."""
    return [
        (s.span_id, text)
        for s in sorted(trace.llm_spans, key=_by_start)
        for text in span_output_texts(s)
    ]


def span_output_texts(span: Span) -> list[str]:
    """``[m.content for m in span.output_messages if m.content]``, read straight from the raw
    ``gen_ai.output.messages`` list when the span has one and its messages are not parsed yet:
    parsing builds every tool call, re-serializing its arguments as JSON, for nothing here
    (~60 % of the ``pattern`` gate's time on agent traces). Other shapes take the full parser."""
    attrs = span.attributes
    raw = attrs.get("gen_ai.output.messages") if isinstance(attrs, dict) else None
    # OpenInference spans are parsed from their own attributes first (schemas.messages.parse_side)
    if raw is not None and span.convention != "openinference" and "_parsed_output" not in span.__dict__:
        texts = output_texts_from_json(raw)
        if texts is not None:
            return texts
    return [m.content for m in span.output_messages if m.content]


def token_totals(trace: Trace) -> tuple[int, int, int]:
    """``(input, output, total)`` tokens of :attr:`Trace.usage` (memoized on the trace: the trace
    row asks for it too)."""
    usage = trace.usage
    return usage.input, usage.output, usage.total


def input_key(span: Span) -> bytes | str | None:
    """What a retry of ``span`` repeats, as a comparable key: a tool span's arguments
    (:func:`arguments_key`), else its system instructions and input messages; None when the span
    recorded neither (then no other span counts as its retry)."""
    if span.kind == SpanKind.TOOL and span.tool_arguments is not None:
        return arguments_key(span.tool_arguments)
    if span.input_messages or span.system_instructions:
        return repr((span.system_instructions, span.input_messages))
    return None


def canonical_json(text: str | None) -> str:
    """Arguments compared by meaning: JSON re-serialized with sorted keys, other text stripped."""
    if text is None:
        return ""
    try:
        value: Any = json.loads(text)
    except (ValueError, TypeError):
        return text.strip()
    return _CANONICAL.encode(value)


# = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False), which builds an
# encoder per call (about half of canonical_json's time on tool arguments)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def arguments_key(text: str | None) -> bytes | str:
    """A grouping key for argument texts, equal for two texts exactly when their
    :func:`canonical_json` is, ~5x cheaper: orjson's sorted-key serialization of the orjson value.
    orjson reads the same values as json except integers past 64 bits, which become floats (and
    then print with ``e+``): those values, and whatever orjson rejects (NaN, lone surrogates,
    nesting deeper than 254), take ``canonical_json`` itself. Which way a text goes depends only
    on its value, so texts with equal canonical forms always get equal keys."""
    if text is not None:
        try:
            out = orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS)
        except (ValueError, TypeError):  # JSONDecodeError, JSONEncodeError
            pass
        else:
            if b"e+" not in out:
                return out
    return canonical_json(text)
