"""The user messages of a trace, extracted once, in order, without the repeated history.

An agent trace's successive LLM spans each carry the whole conversation so far in their input
messages, so the same user message shows up in every LLM span after the one where it was sent.
:func:`user_messages` walks the LLM spans in start order and keeps each user message once, with
its position in the trace's user-message sequence (``index``) and the span where it first appeared.

When each turn of a conversation is a trace of its own, the trace's first LLM call carries the
earlier turns as history: the user messages before its last assistant message are marked
``prior_turn``. Gates and semantic signals judge this trace's turn and leave them out (an old
"refund" request or "that's wrong" would fire again in every later trace of the conversation);
the judge's prompt and exported eval cases keep them as context.

De-duplication aligns each span's user messages with the sequence known so far: the longest
prefix of the span's user messages that occurs as a contiguous run of the known sequence is
history; the rest is new. With complete history that run starts at 0 (same text at the same
position); it also covers a context window that dropped the oldest turns (the run starts later)
and a sub-agent's LLM span followed by the orchestrator's again (the run ends earlier). A user
who repeats themselves in a new turn is kept: the repeat comes after the aligned history.

When no LLM span carries user text (content capture off on the LLM client, or an agent framework
that records only its own input), the user input is read from the root / outermost agent span:
its parsed input messages (``gen_ai.input.messages`` on ``invoke_agent``, OpenInference
``llm.input_messages``), else OpenInference ``input.value`` (text or JSON), else Traceloop
``traceloop.entity.input`` keyword arguments.

Sharing: every miner calls :func:`user_messages`; the result is cached per trace *object*
(identity, checked through a weak reference, plus the span count), so the work is done once per
trace however many miners run, and entries disappear with their trace. Results are immutable
tuples of frozen dataclasses, safe to share.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from schemas.genai import loads, messages_from_json, user_texts_from_json
from schemas.model import Span, SpanKind, Trace

_TEXT_KEYS = ("input", "query", "question", "message", "prompt", "user_input", "content", "text")


@dataclass(frozen=True, slots=True)
class UserMessage:
    index: int  # position in the trace's user-message sequence (0 = oldest seen)
    text: str
    span_id: str  # span where the message first appeared
    ts_ns: int  # start of that span
    prior_turn: bool = False  # an earlier turn of the conversation, carried as history into this trace


_Entry = tuple["weakref.ref[Trace]", int, tuple[UserMessage, ...]]
_cache: dict[int, _Entry] = {}


def user_messages(trace: Trace) -> tuple[UserMessage, ...]:
    """The trace's user messages (cached per trace object; see the module docstring)."""
    key = id(trace)
    hit = _cache.get(key)
    if hit is not None and hit[0]() is trace and hit[1] == len(trace.spans):
        return hit[2]
    result = extract_user_messages(trace)
    _cache[key] = (weakref.ref(trace, partial(_forget, key)), len(trace.spans), result)
    return result


def _forget(key: int, ref: weakref.ref[Trace]) -> None:
    entry = _cache.get(key)
    if entry is not None and entry[0] is ref:
        del _cache[key]


def extract_user_messages(trace: Trace) -> tuple[UserMessage, ...]:
    """Uncached extraction: LLM spans first, the agent span's raw input as a fallback."""
    llm = sorted(trace.llm_spans, key=lambda s: (s.start_ns, s.end_ns))  # memoized on the trace
    found = _collect(_llm_span_texts(llm))
    if found:
        prior = _prior_turns(llm[0], sum(1 for m in found if m.span_id == llm[0].span_id))
        if prior:
            found = tuple(UserMessage(m.index, m.text, m.span_id, m.ts_ns, True) if m.index < prior else m
                          for m in found)  # fmt: skip
        return found
    for span in _agent_candidates(trace):
        texts = _message_texts(span) or _raw_input_texts(span.attributes)
        if texts:
            return _collect([(span, texts)])
    return ()


def _prior_turns(first: Span, first_texts: int) -> int:
    """How many of the ``first_texts`` user messages of the trace's first LLM span came before its
    last assistant message: earlier turns of the conversation, when each turn is a trace of its
    own and the first call carries the conversation so far (or few-shot examples). Without an
    assistant message in that input (the usual first call of a turn: one substring search), none;
    else the messages are read as JSON and only those after the last assistant one are normalized."""
    if not first_texts:
        return 0
    raw = first.attributes.get("gen_ai.input.messages")
    if isinstance(raw, str) and first.convention != "openinference":
        if '"assistant"' not in raw:
            return 0
        items = loads(raw)
        if isinstance(items, list):
            last = max((i for i, m in enumerate(items) if isinstance(m, dict) and m.get("role") == "assistant"),
                       default=-1)  # fmt: skip
            return max(first_texts - len(_user_texts(items[last + 1 :])), 0) if last >= 0 else 0
    messages = first.input_messages
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    return sum(1 for m in messages[:last] if m.role == "user" and m.content.strip())


def _collect(per_span: Iterable[tuple[Span, list[str]]]) -> tuple[UserMessage, ...]:
    known: list[str] = []  # stripped texts of the messages kept so far
    out: list[UserMessage] = []
    for span, texts in per_span:
        keys = [t.strip() for t in texts]
        skip = _history_length(known, keys)
        for text, k in zip(texts[skip:], keys[skip:]):
            out.append(UserMessage(len(out), text, span.span_id, span.start_ns))
            known.append(k)
    return tuple(out)


def _history_length(known: list[str], new: list[str]) -> int:
    """Length of the longest prefix of ``new`` that is a contiguous run of ``known``."""
    if not known or not new:
        return 0
    n = min(len(known), len(new))
    if known[:n] == new[:n]:  # the usual case: complete history, then the new turn
        return n
    for k in range(n, 0, -1):
        head = new[:k]
        first = head[0]
        for i in range(len(known) - k + 1):
            if known[i] == first and known[i : i + k] == head:
                return k
    return 0


def _llm_span_texts(spans: list[Span]) -> Iterator[tuple[Span, list[str]]]:
    """(span, :func:`_message_texts`) per LLM span, reading only the new part of a history that
    extends the previous span's: with complete history each span's ``gen_ai.input.messages`` is
    the previous one's with items appended (the same text up to its closing bracket, then a
    comma), and decoding every span's whole history made this quadratic in the conversation."""
    prev: tuple[str, list[str]] | None = None  # (previous raw history without its "]", its user texts)
    for span in spans:
        raw = _fast_source(span)
        if type(raw) is not str:
            prev = None
            yield span, _message_texts(span)
            continue
        texts = _extended(raw, prev) if prev is not None else None
        if texts is None:
            texts = user_texts_from_json(raw)
        if texts is None:
            prev = None
            yield span, _message_texts(span)
            continue
        body = raw.rstrip()[:-1]
        prev = (body, texts) if body.strip() != "[" else None
        yield span, [t for t in texts if t.strip()]


def _extended(raw: str, prev: tuple[str, list[str]]) -> list[str] | None:
    """The user texts of history ``raw`` when it is the previous span's plus more items, else None.
    The shared text held complete items and ended outside any string (a "]" closed the list
    right after it), so the items after the comma decode alone exactly as within ``raw``."""
    body, texts = prev
    if not raw.startswith(body):
        return None
    rest = raw[len(body) :].lstrip()
    if rest.rstrip() == "]":  # the same history again (a retried or repeated call)
        return texts
    if not rest.startswith(",") or rest[1:].lstrip().startswith("]"):  # "[a,]" is not JSON: full parse
        return None
    more = user_texts_from_json("[" + rest[1:])
    return None if more is None else texts + more


def _fast_source(span: Span) -> Any:
    """The span's ``gen_ai.input.messages`` value when :func:`user_texts_from_json` may read it
    (the full parser has not run, and the span is not OpenInference's), else None."""
    raw = span.attributes.get("gen_ai.input.messages")
    if raw is not None and span.convention != "openinference" and "_parsed_input" not in span.__dict__:
        return raw
    return None


def _message_texts(span: Span) -> list[str]:
    raw = _fast_source(span)
    if raw is not None:
        texts = user_texts_from_json(raw)
        if texts is not None:
            return [t for t in texts if t.strip()]
    return [m.content for m in span.input_messages if m.role == "user" and m.content.strip()]


def _agent_candidates(trace: Trace) -> list[Span]:
    """The root span, then the outermost agent span (the earliest-starting one)."""
    out: list[Span] = []
    root = trace.root
    if root is not None:
        out.append(root)
    agents = [s for s in trace.spans if s.kind == SpanKind.AGENT and s is not root]
    if agents:
        out.append(min(agents, key=lambda s: s.start_ns))
    return out


def _raw_input_texts(attrs: dict[str, Any]) -> list[str]:
    if "input.value" in attrs:
        return _texts_from_value(attrs["input.value"])
    if "traceloop.entity.input" in attrs:
        decoded = loads(attrs["traceloop.entity.input"])
        if isinstance(decoded, dict) and isinstance(decoded.get("kwargs"), dict):
            return _texts_from_dict(decoded["kwargs"])
    return []


def _texts_from_value(value: Any) -> list[str]:
    """OpenInference ``input.value``: plain text, a message list, ``{"messages": [...]}`` or
    ``{"input" | "query" | ...: "text"}``."""
    decoded = loads(value)
    if decoded is None:
        return [value] if isinstance(value, str) and value.strip() else []
    if isinstance(decoded, str):
        return [decoded] if decoded.strip() else []
    if isinstance(decoded, list):
        return _user_texts(decoded)
    if isinstance(decoded, dict):
        return _texts_from_dict(decoded)
    return []


def _texts_from_dict(obj: dict[str, Any]) -> list[str]:
    if isinstance(obj.get("messages"), list):
        return _user_texts(obj["messages"])
    for key in _TEXT_KEYS:
        value = obj.get(key)
        if isinstance(value, str) and value.strip():
            return [value]
        if isinstance(value, list):
            return _user_texts(value)
    return []


def _user_texts(items: list[Any]) -> list[str]:
    return [m.content for m in messages_from_json(items) if m.role == "user" and m.content.strip()]
