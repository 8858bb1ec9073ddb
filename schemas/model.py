"""Canonical span and trace models.

A :class:`Span` keeps two layers:

* the *raw* OTLP fields (ids, names, timings, status, raw attributes, events, resource) exactly
  as decoded — these are what the ``spans`` table stores and what recovery rebuilds from;
* the *normalized* GenAI view (kind, provider, model, usage, messages, tool calls, ...) derived
  from the raw layer by :func:`schemas.normalize.normalize_span`, covering the current
  ``gen_ai.*`` conventions, their deprecated names and OpenInference.

Raw attribute values keep their OTLP type: ``str | bool | int | float | bytes | list | dict``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from operator import attrgetter
from typing import Any

from pydantic import ConfigDict, Field

from schemas.fast_model import FastModel

AttrValue = Any  # str | bool | int | float | bytes | list[AttrValue] | dict[str, AttrValue]


class SpanKind(str, Enum):
    """What a span does in an agent, independent of the convention that described it."""

    AGENT = "agent"
    LLM = "llm"
    TOOL = "tool"
    RETRIEVAL = "retrieval"
    OTHER = "other"


class StatusCode(str, Enum):
    UNSET = "unset"
    OK = "ok"
    ERROR = "error"


class CompletionReason(str, Enum):
    """Why the assembler declared a trace complete."""

    ROOT_ENDED_IDLE = "root_ended_idle"  # root span ended and no span for decision_wait
    MAX_AGE = "max_age"  # open for max_trace_age
    EVICTED = "evicted"  # max_open_traces reached; oldest completed first
    SHUTDOWN = "shutdown"  # worker stopped with the trace still open (flush on exit)


class ToolCall(FastModel):
    """A tool call requested by a model (in an output message) or executed (a tool span)."""

    id: str | None = None
    name: str
    arguments: str | None = None  # JSON text as emitted; not re-serialized


class Message(FastModel):
    role: str
    content: str = ""  # text parts joined with "\n"
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None  # for role=tool: which call this answers
    finish_reason: str | None = None
    name: str | None = None


class ExceptionEvent(FastModel):
    type: str | None = None
    message: str | None = None
    stacktrace: str | None = None
    time_ns: int = 0


class SpanEvent(FastModel):
    name: str
    time_ns: int = 0
    attributes: dict[str, AttrValue] = Field(default_factory=dict)


class TokenUsage(FastModel):
    model_config = ConfigDict(extra="forbid", frozen=True)  # spans without usage share one instance

    input: int = 0
    output: int = 0
    total: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    reasoning: int = 0


_PARSERS: tuple[Callable[[Span], Any], Callable[[Span], Any]] | None = None


def _parsers() -> tuple[Callable[[Span], Any], Callable[[Span], Any]]:
    """schemas.messages' parsers (imported on first use: that module imports this one)."""
    global _PARSERS
    if _PARSERS is None:
        from schemas.messages import parse_input_messages, parse_output_messages

        _PARSERS = (parse_input_messages, parse_output_messages)
    return _PARSERS


_USAGE_FIELDS = tuple(TokenUsage.model_fields)  # input, output, total, cache_read, ...


class Span(FastModel):
    # Sequence fields are tuples: most spans have no events, exceptions, truncated keys or finish
    # reasons, and the empty tuple is one shared object the garbage collector never tracks (a list
    # per field was 4 of the ~7.5 objects it walked per open span); a tuple of strings is untracked
    # at the first collection it meets.
    # ---- raw OTLP layer -------------------------------------------------------------------
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str | None = None
    name: str = ""
    otel_kind: str = "internal"  # internal | server | client | producer | consumer | unspecified
    start_ns: int = 0
    end_ns: int = 0
    status_code: StatusCode = StatusCode.UNSET
    status_message: str = ""
    attributes: dict[str, AttrValue] = Field(default_factory=dict)
    events: tuple[SpanEvent, ...] = Field(default_factory=tuple)
    resource_attributes: dict[str, AttrValue] = Field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""
    truncated_attributes: tuple[str, ...] = Field(default_factory=tuple)  # keys cut to the size limit

    # ---- normalized GenAI layer ---------------------------------------------------------
    kind: SpanKind = SpanKind.OTHER
    operation: str | None = None  # gen_ai.operation.name (or mapped from OpenInference)
    convention: str = "none"  # genai | genai_deprecated | openinference | none
    service_name: str = ""
    provider: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    finish_reasons: tuple[str, ...] = Field(default_factory=tuple)
    tool_name: str | None = None
    tool_call_id: str | None = None
    tool_arguments: str | None = None
    tool_result: str | None = None
    conversation_id: str | None = None
    user_id: str | None = None
    agent_name: str | None = None
    agent_id: str | None = None
    agent_version: str | None = None
    error_type: str | None = None
    exceptions: tuple[ExceptionEvent, ...] = Field(default_factory=tuple)

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    # Messages are parsed on first use, not at ingest: they are the most expensive part of
    # normalization and most spans are only stored, never read as messages by a gate or judge.
    # Kept in the instance dict as "_parsed_input" / "_parsed_output" (normalize_span drops them,
    # fast paths test for them) by hand: functools.cached_property's lock (3.11) and an import
    # per call cost more than the parse of a span without messages (every tool span).
    @property
    def _parsed_input(self) -> tuple[list[Message], str | None]:
        parsed = self.__dict__.get("_parsed_input")
        if parsed is None:
            parsed = self.__dict__["_parsed_input"] = _parsers()[0](self)
        return parsed

    @property
    def _parsed_output(self) -> list[Message]:
        parsed = self.__dict__.get("_parsed_output")
        if parsed is None:
            parsed = self.__dict__["_parsed_output"] = _parsers()[1](self)
        return parsed

    @property
    def input_messages(self) -> list[Message]:
        return self._parsed_input[0]

    @property
    def output_messages(self) -> list[Message]:
        return self._parsed_output

    @property
    def system_instructions(self) -> str | None:
        return self._parsed_input[1]

    @property
    def model(self) -> str | None:
        return self.response_model or self.request_model

    @property
    def is_error(self) -> bool:
        return self.status_code == StatusCode.ERROR or bool(self.error_type) or bool(self.exceptions)

    @property
    def is_root(self) -> bool:
        return not self.parent_span_id

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Tool calls this span requested (LLM output) or executed (tool span)."""
        calls = [c for m in self.output_messages for c in m.tool_calls]
        if self.kind == SpanKind.TOOL and self.tool_name:
            calls.append(ToolCall.wrap({"id": self.tool_call_id, "name": self.tool_name, "arguments": self.tool_arguments}))
        return calls

    @property
    def tool_call_count(self) -> int:
        """``len(self.tool_calls)`` without building the calls (the trace row only counts them)."""
        outputs = self.output_messages  # one property call, not two (asked for every tool span)
        n = sum(len(m.tool_calls) for m in outputs) if outputs else 0
        return n + 1 if self.kind == SpanKind.TOOL and self.tool_name else n


class Trace(FastModel):
    """An assembled trace: every span seen for one trace id, plus how assembly ended."""

    trace_id: str
    spans: list[Span]
    completion_reason: CompletionReason
    first_seen_ns: int = 0  # processing-clock times (when the assembler saw spans)
    last_seen_ns: int = 0
    completed_ns: int = 0

    def _memo(self, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per trace: gates, miners and the row builder all ask for the root,
        the LLM spans, ... (each used to rescan the spans, several times per trace). The entry
        is keyed by the span list and its length, so a trace whose spans change recomputes."""
        key = "_memo_" + name
        hit = self.__dict__.get(key)
        spans = self.spans
        if hit is not None and hit[0] is spans and hit[1] == len(spans):
            return hit[2]
        value = compute()
        self.__dict__[key] = (spans, len(spans), value)
        return value

    @property
    def root(self) -> Span | None:
        return self._memo("root", self._find_root)

    def _find_root(self) -> Span | None:
        roots = [s for s in self.spans if not s.parent_span_id]
        if roots:
            return min(roots, key=lambda s: s.start_ns)
        ids = {s.span_id for s in self.spans}
        orphans = [s for s in self.spans if s.parent_span_id not in ids]
        return min(orphans, key=lambda s: s.start_ns) if orphans else None

    @property
    def spans_by_start(self) -> list[Span]:
        return self._memo("by_start", lambda: sorted(self.spans, key=lambda s: s.start_ns))

    def _first(self, attr: str) -> Any:
        root = self.root
        if root is not None and getattr(root, attr):
            return getattr(root, attr)
        for s in self.spans_by_start:
            if getattr(s, attr):
                return getattr(s, attr)
        return None

    @property
    def service_name(self) -> str:
        return self._first("service_name") or ""

    @property
    def agent_name(self) -> str | None:
        return self._first("agent_name")

    @property
    def agent_version(self) -> str | None:
        return self._first("agent_version")

    @property
    def conversation_id(self) -> str | None:
        return self._first("conversation_id")

    @property
    def user_id(self) -> str | None:
        return self._first("user_id")

    # start, end, duration, error count and models are asked for by gates, the sampling facts and
    # the trace row: one pass over the spans (_scan), memoized, instead of one pass per question.
    @property
    def start_ns(self) -> int:
        return self._memo("scan", self._scan)[0]

    @property
    def end_ns(self) -> int:
        return self._memo("scan", self._scan)[1]

    @property
    def duration_ns(self) -> int:
        return self._memo("scan", self._scan)[2]

    @property
    def error_count(self) -> int:
        return self._memo("scan", self._scan)[3]

    def _scan(self) -> tuple[int, int, int, int, tuple[str, ...]]:
        """(start_ns, end_ns, duration_ns, error_count, models) in one pass."""
        spans = self.spans
        if not spans:
            return 0, 0, 0, 0, ()
        start, end = spans[0].start_ns, spans[0].end_ns
        errors = 0
        models = set()
        error = StatusCode.ERROR
        for s in spans:
            if s.start_ns < start:
                start = s.start_ns
            if s.end_ns > end:
                end = s.end_ns
            # Span.is_error and Span.model, inlined (a property call per span doubled this loop)
            if s.status_code == error or s.error_type or s.exceptions:
                errors += 1
            if m := s.response_model or s.request_model:
                models.add(m)
        return start, end, max(0, end - start), errors, tuple(sorted(models))

    @property
    def llm_spans(self) -> list[Span]:
        return list(self._memo("llm", self._llm))

    def _llm(self) -> list[Span]:
        return [s for s in self.spans if s.kind == SpanKind.LLM]

    @property
    def usage(self) -> TokenUsage:
        # memoized: the cost gate and the trace row both ask (a TokenUsage is frozen, so sharable)
        return self._memo("usage", self._usage)  # type: ignore[no-any-return]

    def _usage(self) -> TokenUsage:
        usages = [s.usage for s in self._memo("llm", self._llm) or self.spans]
        # one C-level sum per field (attrgetter + map), in span order as before
        sums = {f: sum(map(attrgetter(f), usages)) for f in _USAGE_FIELDS}
        if not sums["total"]:
            sums["total"] = sums["input"] + sums["output"]
        return TokenUsage.wrap(sums)  # sums: every field, in order

    @property
    def models(self) -> list[str]:
        return list(self._memo("scan", self._scan)[4])

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Executed tool calls (tool spans), in start order."""
        spans = sorted((s for s in self.spans if s.kind == SpanKind.TOOL), key=lambda s: s.start_ns)
        return [c for s in spans for c in s.tool_calls]

    @property
    def tool_call_count(self) -> int:
        """``len(self.tool_calls)``: counted, not built and sorted."""
        tool = SpanKind.TOOL
        n = 0
        for s in self.spans:
            if s.kind == tool:  # Span.tool_call_count inlined: two property calls less per tool span
                outputs = s._parsed_output
                if outputs:
                    n += sum(len(m.tool_calls) for m in outputs)
                if s.tool_name:
                    n += 1
        return n

    @property
    def final_output(self) -> str:
        """Text of the last assistant message of the last LLM span."""
        for s in sorted(self.llm_spans, key=lambda s: s.end_ns, reverse=True):
            for m in reversed(s.output_messages):
                if m.content:
                    return m.content
        return ""
