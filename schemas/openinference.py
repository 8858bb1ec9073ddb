"""OpenInference (Arize) flattened message attributes → :class:`Message` lists.

OpenInference flattens lists into indexed attribute keys::

    llm.input_messages.N.message.role / .content / .name / .tool_call_id
    llm.input_messages.N.message.contents.K.message_content.type / .text
    llm.input_messages.N.message.tool_calls.M.tool_call.id
    llm.input_messages.N.message.tool_calls.M.tool_call.function.name / .arguments
    llm.output_messages.N.message...

Legacy ``message.function_call_name`` / ``message.function_call_arguments_json`` are read too.
"""

from __future__ import annotations

from typing import Any

from schemas.coerce import Attrs, as_str, loads
from schemas.genai import indexed, new_message, tool_call
from schemas.model import Message

# OpenInference span kind → (SpanKind value, gen_ai.operation.name). CHAIN, GUARDRAIL, EVALUATOR,
# PROMPT and UNKNOWN are framework plumbing and map to "other" with no operation.
SPAN_KINDS: dict[str, tuple[str, str | None]] = {
    "LLM": ("llm", "chat"),
    "EMBEDDING": ("llm", "embeddings"),
    "TOOL": ("tool", "execute_tool"),
    "AGENT": ("agent", "invoke_agent"),
    "RETRIEVER": ("retrieval", "retrieval"),
    "RERANKER": ("retrieval", "rerank"),
}


def _message(fields: dict[str, Any], default_role: str) -> Message:
    role = as_str(fields.get("message.role")) or default_role
    texts: list[str] = []
    content = fields.get("message.content")
    if isinstance(content, str) and content:
        texts.append(content)
    for part in indexed(fields, "message.contents.").values():
        ptype = part.get("message_content.type")
        text = part.get("message_content.text")
        if isinstance(text, str) and text and ptype in (None, "text"):
            texts.append(text)
    calls = [
        c
        for f in indexed(fields, "message.tool_calls.").values()
        if (c := tool_call(f.get("tool_call.id"), f.get("tool_call.function.name"), f.get("tool_call.function.arguments")))
        is not None
    ]
    legacy = tool_call(None, fields.get("message.function_call_name"), fields.get("message.function_call_arguments_json"))
    if legacy is not None:
        calls.append(legacy)
    return new_message(
        role,
        "\n".join(texts),
        calls,
        tool_call_id=as_str(fields.get("message.tool_call_id")),
        name=as_str(fields.get("message.name")),
    )


_FIRST_FIELDS = ("role", "content", "contents.0.message_content.text")
_PREFIXES = {"input": "llm.input_messages.", "output": "llm.output_messages."}
# The keys whose presence openinference_side requires (see genai.SOURCE_KEYS).
SOURCE_KEYS = {side: frozenset(p + "0.message." + f for f in _FIRST_FIELDS) for side, p in _PREFIXES.items()}


def _messages(attrs: Attrs, prefix: str, default_role: str) -> list[Message]:
    if not any(prefix + "0.message." + f in attrs for f in _FIRST_FIELDS):
        return []
    return [_message(fields, default_role) for fields in indexed(attrs, prefix).values()]


def openinference_side(attrs: Attrs, side: str) -> list[Message]:
    return _messages(attrs, _PREFIXES[side], "user" if side == "input" else "assistant")


def finish_reasons_from_output_value(attrs: Attrs) -> list[str]:
    """OpenInference has no finish-reason attribute; the raw response in ``output.value`` has it.

    Only JSON outputs are parsed (``output.mime_type`` = application/json, or a leading ``{``).
    Understands OpenAI chat completions (``choices[].finish_reason``) and Anthropic (``stop_reason``).
    """
    value = attrs.get("output.value")
    if not isinstance(value, str) or not value.startswith("{"):
        return []
    doc = loads(value)
    if not isinstance(doc, dict):
        return []
    reasons: list[str] = []
    choices = doc.get("choices")
    if isinstance(choices, list):
        reasons = [r for c in choices if isinstance(c, dict) and (r := as_str(c.get("finish_reason")))]
    elif (stop := as_str(doc.get("stop_reason"))) is not None:
        reasons = [stop]
    return reasons


def request_model_from_invocation(attrs: Attrs) -> str | None:
    """``llm.invocation_parameters`` is the request's JSON parameters; its ``model`` is the request model."""
    value = attrs.get("llm.invocation_parameters")
    if not isinstance(value, str) or '"model"' not in value:
        return None
    doc = loads(value)
    return as_str(doc.get("model")) if isinstance(doc, dict) else None
