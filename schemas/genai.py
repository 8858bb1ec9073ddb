"""GenAI message parsing: the ``gen_ai.*`` message shapes (value coercion is in :mod:`schemas.coerce`).

Everything here is defensive: odd input (wrong types, invalid JSON) yields ``None`` or an empty
list, never an exception. Models are built with ``Model.fast`` (no validation) because this
runs on every span.

Message shapes understood (first non-empty source wins, see :func:`genai_side`):

* current ``gen_ai.input.messages`` / ``gen_ai.output.messages``: JSON (or decoded list) of
  ``{"role", "parts": [{"type": "text"|"tool_call"|"tool_call_response", ...}], "finish_reason"}``;
* deprecated ``gen_ai.prompt`` / ``gen_ai.completion`` as JSON (OpenAI-style messages or choices);
* Traceloop's flattened ``gen_ai.prompt.N.role`` / ``.content`` / ``.tool_calls.M.name`` ...;
* deprecated message events ``gen_ai.{system,user,assistant,tool}.message`` and ``gen_ai.choice``
  (and the older ``gen_ai.content.prompt`` / ``gen_ai.content.completion`` events).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from schemas.coerce import Attrs, as_int, as_str, as_text, loads
from schemas.model import Message, SpanEvent, ToolCall

# ---- model builders -----------------------------------------------------------------------------


def tool_call(id_: Any, name: Any, arguments: Any) -> ToolCall | None:
    name_s = as_str(name)
    if name_s is None:
        return None
    return ToolCall.wrap({"id": as_str(id_), "name": name_s, "arguments": as_text(arguments)})  # every field, in order


def new_message(
    role: str,
    content: str = "",
    tool_calls: list[ToolCall] | None = None,
    tool_call_id: str | None = None,
    finish_reason: str | None = None,
    name: str | None = None,
) -> Message:
    return Message.fast(
        role=role,
        content=content,
        tool_calls=tool_calls or [],
        tool_call_id=tool_call_id,
        finish_reason=finish_reason,
        name=name,
    )


# ---- generic message dicts (GenAI parts and OpenAI-style) -------------------------------------


def _content_text(
    content: Any, with_calls: bool = True
) -> tuple[list[str], list[ToolCall], list[tuple[str | None, str]]]:
    """Split a ``parts`` / ``content`` value into texts, tool calls (unless not ``with_calls``:
    building one re-serializes its arguments) and tool responses."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    responses: list[tuple[str | None, str]] = []
    if isinstance(content, str):
        parts = _parts_in_string(content)
        if parts is None:
            return [content] if content else [], calls, responses
        content = parts
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return texts, calls, responses
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            continue
        ptype = part.get("type")
        if ptype in ("text", "input_text", "output_text", None):
            text = part.get("content", part.get("text"))
            if isinstance(text, str):
                texts.append(text)
        elif ptype in ("tool_call", "function_call", "tool_use"):
            if not with_calls:
                continue
            call = tool_call(part.get("id"), part.get("name"), part.get("arguments", part.get("input")))
            if call is not None:
                calls.append(call)
        elif ptype in ("tool_call_response", "tool_result", "function_call_output"):
            result = part.get("response", part.get("content", part.get("output")))
            responses.append((as_str(part.get("id", part.get("tool_use_id"))), as_text(result) or ""))
    return texts, calls, responses


def _parts_in_string(text: str) -> list[Any] | None:
    """Traceloop stores multimodal content as a JSON list of typed parts inside ``content``."""
    if not text.startswith("[{"):
        return None
    decoded = loads(text)
    if isinstance(decoded, list) and decoded and all(isinstance(p, dict) and "type" in p for p in decoded):
        return decoded
    return None


def _openai_tool_calls(value: Any) -> list[ToolCall]:
    value = loads(value) if isinstance(value, str) else value
    if isinstance(value, dict):
        value = [value]
    calls: list[ToolCall] = []
    if not isinstance(value, list):
        return calls
    for item in value:
        if not isinstance(item, dict):
            continue
        fn = item.get("function")
        src = fn if isinstance(fn, dict) else item
        call = tool_call(item.get("id"), src.get("name"), src.get("arguments"))
        if call is not None:
            calls.append(call)
    return calls


def messages_from_dict(item: Any, default_role: str = "user") -> list[Message]:
    """One message dict (GenAI parts, OpenAI message or OpenAI choice) → Messages."""
    if not isinstance(item, dict):
        return [new_message(default_role, item)] if isinstance(item, str) and item else []
    finish = as_str(item.get("finish_reason"))
    inner = item.get("message")
    if isinstance(inner, (dict, str)) and "role" not in item:  # an OpenAI choice / gen_ai.choice body
        inner = loads(inner) if isinstance(inner, str) else inner
        if isinstance(inner, dict):
            msgs = messages_from_dict(inner, default_role)
            if finish and msgs:
                msgs[-1].finish_reason = finish
            return msgs
    role = as_str(item.get("role")) or default_role
    texts, calls, responses = _content_text(item.get("parts", item.get("content")))
    calls.extend(_openai_tool_calls(item.get("tool_calls")))
    call_id = as_str(item.get("tool_call_id", item.get("id") if role == "tool" else None))
    out = [new_message("tool", text, tool_call_id=rid) for rid, text in responses]
    if texts or calls or not responses:
        out.append(
            new_message(
                role,
                "\n".join(texts),
                calls,
                tool_call_id=call_id,
                finish_reason=finish,
                name=as_str(item.get("name")),
            )
        )
    return out


#: Messages already built from one message dict, by (its JSON, default role). Every LLM span of a
#: conversation repeats the history before it in its input (and a span's output is the next one's
#: input), so a judge reading a trace's conversation would otherwise build the same messages once
#: per later span, and the system prompt once per span of every trace. Bounded; cleared when full.
#: The cached messages are shared: nothing mutates a Message once parsing returned it.
_BUILT: dict[tuple[bytes, str], tuple[Message, ...]] = {}
_BUILT_MAX = 4096


def _strict_loads(value: Any) -> Any:
    """``value`` decoded by orjson alone, or None: what :func:`loads` returns for a value orjson
    accepts, and re-encoding an item of it gives JSON equal exactly when the items are equal.
    (Values only json accepts, NaN or lone surrogates, are parsed as before and never cached.)"""
    if not isinstance(value, str):
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def messages_from_json(value: Any, default_role: str = "user") -> list[Message]:
    """A JSON string / decoded value holding a message list (or one message, or plain text)."""
    decoded = _strict_loads(value)
    cached = isinstance(decoded, list)
    if not cached:
        decoded = loads(value)
    if decoded is None:
        return [new_message(default_role, value)] if isinstance(value, str) and value.strip() else []
    if isinstance(decoded, dict):
        decoded = [decoded]
    if isinstance(decoded, str):
        return [new_message(default_role, decoded)] if decoded else []
    if not isinstance(decoded, list):
        return []
    out: list[Message] = []
    for item in decoded:
        if not cached or type(item) is not dict:
            out.extend(messages_from_dict(item, default_role))
            continue
        key = (orjson.dumps(item), default_role)
        built = _BUILT.get(key)
        if built is None:
            if len(_BUILT) >= _BUILT_MAX:
                _BUILT.clear()
            built = _BUILT[key] = tuple(messages_from_dict(item, default_role))
        out.extend(built)
    return out


def user_texts_from_json(value: Any) -> list[str] | None:
    """Texts of the user messages in a message-list value, without building every message: the
    same texts as ``[m.content for m in messages_from_json(value) if m.role == "user"]`` at a
    fraction of the cost (assistant turns with tool calls are skipped unparsed). ``None`` when
    the value has a shape only the full parser understands."""
    decoded = loads(value)
    if not isinstance(decoded, list):
        return None
    out: list[str] = []
    for item in decoded:
        if not isinstance(item, dict) or ("message" in item and "role" not in item):
            return None
        if (as_str(item.get("role")) or "user") != "user":
            continue
        texts, _, _ = _content_text(item.get("parts", item.get("content")))
        if texts:
            out.append("\n".join(texts))
    return out


def output_texts_from_json(value: Any) -> list[str] | None:
    """``[m.content for m in messages_from_json(value) if m.content]`` without building the tool
    calls; ``None`` for a shape other than a non-empty list of message dicts (the full parser
    decides). Per item, as ``messages_from_dict`` builds them: one ``role=tool`` message per
    tool-call response part, then the item's message with its text parts joined by ``"\n"``. A
    non-empty list of dicts always yields messages, so the full parser would not have fallen back
    to another attribute either."""
    decoded = loads(value)
    if not isinstance(decoded, list) or not decoded:
        return None
    out: list[str] = []
    for item in decoded:
        if not isinstance(item, dict) or ("message" in item and "role" not in item):
            return None  # an OpenAI choice: the full parser unwraps it
        texts, _, responses = _content_text(item.get("parts", item.get("content")), with_calls=False)
        out.extend(r for _, r in responses if r)
        if text := "\n".join(texts):
            out.append(text)
    return out


def system_text(value: Any) -> str | None:
    """``gen_ai.system_instructions``: JSON list of parts, or plain text."""
    decoded = loads(value)
    if decoded is None:
        return as_str(value)
    texts, _, _ = _content_text(decoded)
    return "\n".join(texts) or None


# ---- flattened attributes (gen_ai.prompt.N.* / llm.input_messages.N.*) ------------------------


def indexed(attrs: Attrs, prefix: str) -> dict[int, dict[str, Any]]:
    """Group ``{prefix}{N}.{rest}`` attributes by N → {rest: value}, in index order."""
    groups: dict[int, dict[str, Any]] = {}
    plen = len(prefix)
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        idx, _, rest = key[plen:].partition(".")
        if rest and idx.isdigit():
            groups.setdefault(int(idx), {})[rest] = value
    return dict(sorted(groups.items()))


_FLAT_FIELDS = ("role", "content", "tool_calls.0.name", "tool_call_id")


def _has_flat(attrs: Attrs, first: str) -> bool:
    """Cheap guard before a full key scan: does message 0 of a flattened list exist?"""
    return any(first + field in attrs for field in _FLAT_FIELDS)


def _flat_messages(attrs: Attrs, prefix: str, default_role: str) -> list[Message]:
    out: list[Message] = []
    for fields in indexed(attrs, prefix).values():
        role = as_str(fields.get("role")) or default_role
        calls = [
            c
            for f in indexed(fields, "tool_calls.").values()
            if (c := tool_call(f.get("id"), f.get("name"), f.get("arguments"))) is not None
        ]
        texts, part_calls, responses = _content_text(fields.get("content"))
        call_id = as_str(fields.get("tool_call_id"))
        if responses and role == "tool" and not texts:
            out.extend(new_message("tool", text, tool_call_id=rid or call_id) for rid, text in responses)
            continue
        out.append(
            new_message(
                role,
                "\n".join(texts),
                calls + part_calls,
                tool_call_id=call_id,
                finish_reason=as_str(fields.get("finish_reason")),
                name=as_str(fields.get("name")),
            )
        )
    return out


# ---- deprecated message events -----------------------------------------------------------------

_EVENT_ROLES = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


def _event_body(attributes: Attrs) -> dict[str, Any]:
    """Event attributes merged with a body-like attribute (``body`` / ``event.body``), if any."""
    body: dict[str, Any] = {}
    for key in ("body", "event.body", "gen_ai.event.body"):
        decoded = loads(attributes.get(key))
        if isinstance(decoded, dict):
            body.update(decoded)
    body.update({k: v for k, v in attributes.items() if k not in body})
    return body


def _event_messages(events: Iterable[SpanEvent]) -> tuple[list[Message], list[Message]]:
    inputs: list[Message] = []
    choices: list[tuple[int, list[Message]]] = []
    for event in events:
        name = event.name
        if name in _EVENT_ROLES:
            body = _event_body(event.attributes)
            body.setdefault("role", _EVENT_ROLES[name])
            if _EVENT_ROLES[name] == "tool" and "tool_call_id" not in body:
                body["tool_call_id"] = body.get("id")
            inputs.extend(messages_from_dict(body, _EVENT_ROLES[name]))
        elif name == "gen_ai.choice":
            body = _event_body(event.attributes)
            if "message" not in body:
                body = {"message": {"role": "assistant", **body}, "finish_reason": body.get("finish_reason")}
            index = as_int(body.get("index"))
            choices.append((index if index is not None else len(choices), messages_from_dict(body, "assistant")))
        elif name == "gen_ai.content.prompt":
            inputs.extend(messages_from_json(event.attributes.get("gen_ai.prompt"), "user"))
        elif name == "gen_ai.content.completion":
            choices.append((len(choices), messages_from_json(event.attributes.get("gen_ai.completion"), "assistant")))
    outputs = [m for _, msgs in sorted(choices, key=lambda c: c[0]) for m in msgs]
    return inputs, outputs


# ---- entry point -------------------------------------------------------------------------------

_MESSAGE_EVENTS = frozenset(
    [*_EVENT_ROLES, "gen_ai.choice", "gen_ai.content.prompt", "gen_ai.content.completion"]
)


def has_message_events(events: Iterable[SpanEvent]) -> bool:
    return any(e.name in _MESSAGE_EVENTS for e in events)


_SIDES = {
    "input": ("gen_ai.input.messages", "gen_ai.prompt", "gen_ai.prompt.", "user", 0),
    "output": ("gen_ai.output.messages", "gen_ai.completion", "gen_ai.completion.", "assistant", 1),
}
# Every attribute key genai_side reads a side's messages from (besides message events): lets a
# caller skip spans that carry no messages (tools, agents) with one set check.
SOURCE_KEYS = {
    side: frozenset((current, deprecated, *(flat + "0." + f for f in _FLAT_FIELDS)))
    for side, (current, deprecated, flat, _, _) in _SIDES.items()
}


def genai_side(attrs: Attrs, events: list[SpanEvent], side: str) -> list[Message]:
    """One side's messages (``input`` or ``output``), so a reader of outputs never pays for
    parsing the input history (which grows with the conversation)."""
    current, deprecated, flat, role, event_index = _SIDES[side]
    if current in attrs and (msgs := messages_from_json(attrs[current], role)):
        return msgs
    if deprecated in attrs and (msgs := messages_from_json(attrs[deprecated], role)):
        return msgs
    if _has_flat(attrs, flat + "0.") and (msgs := _flat_messages(attrs, flat, role)):
        return msgs
    if events and has_message_events(events):
        return _event_messages(events)[event_index]
    return []
