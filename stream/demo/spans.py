"""Turn a :class:`~stream.demo.scenarios.TurnPlan` into real OpenTelemetry SDK spans.

Shapes follow the GenAI semantic conventions (``gen_ai.*``, messages as JSON strings in the parts
format). Errors are recorded as real SDK errors: status ERROR, ``error.type`` and an ``exception``
event with a genuine stack trace.
"""

from __future__ import annotations

import json
import random
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from stream.demo.scenarios import ToolStep, TurnPlan, text_message

NS = 1_000_000_000
_exception_types: dict[str, type[Exception]] = {}


def _exception(type_name: str, message: str) -> Exception:
    """A raised-and-caught exception of a class named ``type_name`` (so it carries a traceback)."""
    # __module__ "builtins" makes the SDK report exception.type as the bare name, equal to error.type
    cls = _exception_types.setdefault(type_name, type(type_name, (Exception,), {"__module__": "builtins"}))
    try:
        raise cls(message)
    except Exception as exc:
        return exc


def _fail(span: trace.Span, type_name: str, message: str, at_ns: int, *, escaped: bool) -> None:
    span.set_attribute("error.type", type_name)
    span.record_exception(_exception(type_name, message), timestamp=at_ns, escaped=escaped)
    span.set_status(Status(StatusCode.ERROR, message))


def _tokens(obj: Any) -> int:
    return max(1, len(json.dumps(obj)) // 4)


def _j(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


class _Clock:
    """Lays spans out back to back, with small gaps, starting at ``start_ns``."""

    def __init__(self, start_ns: int, rng: random.Random) -> None:
        self.now = start_ns
        self._rng = rng

    def span(self, seconds: float) -> tuple[int, int]:
        self.now += int(self._rng.uniform(0.002, 0.03) * NS)
        start = self.now
        self.now += int(seconds * NS)
        return start, self.now


def _plan_seconds(plan: TurnPlan) -> float:
    return sum(plan.chat_durations) + sum(t.duration_s for t in plan.tools) + 0.05 * (len(plan.tools) + 3)


def emit_turn(tracer: trace.Tracer, plan: TurnPlan, rng: random.Random, end_ns: int) -> tuple[str, int]:
    """Emit the spans of one turn ending at about ``end_ns``; return (trace id hex, span count)."""
    app = plan.app
    clock = _Clock(end_ns - int(_plan_seconds(plan) * NS), rng)
    user_msg = text_message("user", plan.user_text)
    root = tracer.start_span(
        f"invoke_agent {app.agent}", kind=SpanKind.INTERNAL, start_time=clock.now,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": app.provider,
            "gen_ai.agent.name": app.agent,
            "gen_ai.agent.id": f"agent_{app.service}",
            "gen_ai.agent.version": app.version,
            "gen_ai.request.model": app.model,
            "gen_ai.conversation.id": plan.conversation_id,
            "user.id": plan.user_id,
            "gen_ai.input.messages": _j([user_msg]),
        })
    ctx = trace.set_span_in_context(root)
    messages: list[dict[str, Any]] = [*plan.history, user_msg]
    count = 1
    for i, step in enumerate(plan.tools):
        call = {"type": "tool_call", "id": step.call_id, "name": step.name, "arguments": step.arguments}
        output = {"role": "assistant", "parts": [call], "finish_reason": "tool_call"}
        _chat(tracer, ctx, plan, messages, clock.span(plan.chat_durations[i]), output=output, rng=rng)
        messages.append({"role": "assistant", "parts": [call]})
        _tool(tracer, ctx, step, clock.span(step.duration_s))
        response = step.result if step.error is None else f"Error: {step.error[1]}"
        messages.append({"role": "tool", "parts": [{"type": "tool_call_response", "id": step.call_id,
                                                     "response": response}]})
        count += 2
    error = plan.llm_error or plan.agent_error
    if plan.agent_error is None:
        final = text_message("assistant", plan.final_text, plan.final_finish) if plan.final_text else None
        _chat(tracer, ctx, plan, messages, clock.span(plan.chat_durations[-1]), output=final, rng=rng,
              error=plan.llm_error)
        count += 1
        if final is not None:
            root.set_attribute("gen_ai.output.messages", _j([final]))
    end = clock.span(0.01)[1]
    if error is not None:
        _fail(root, error[0], error[1], end, escaped=True)
    root.end(end_time=end)
    return f"{root.get_span_context().trace_id:032x}", count


def _chat(tracer: trace.Tracer, ctx: Any, plan: TurnPlan, messages: list[dict[str, Any]],
          times: tuple[int, int], *, output: dict[str, Any] | None, rng: random.Random,
          error: tuple[str, str] | None = None) -> None:
    app = plan.app
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": app.provider,
        "gen_ai.request.model": app.model,
        "gen_ai.request.max_tokens": plan.max_tokens,
        "gen_ai.request.temperature": 0.2,
        "gen_ai.system_instructions": _j([{"type": "text", "content": app.system_prompt}]),
        "gen_ai.input.messages": _j(messages),
    }
    span = tracer.start_span(f"chat {app.model}", context=ctx, kind=SpanKind.CLIENT, start_time=times[0],
                             attributes=attributes)
    if error is not None:
        _fail(span, error[0], error[1], times[1], escaped=True)
    elif output is not None:
        finish = output["finish_reason"]
        out_tokens = plan.max_tokens if finish == "length" else _tokens(output["parts"])
        prefix = "msg_" if app.provider == "anthropic" else "chatcmpl-"
        span.set_attributes({
            "gen_ai.response.id": prefix + f"{rng.getrandbits(96):024x}",
            "gen_ai.response.model": app.response_model,
            "gen_ai.response.finish_reasons": [app.raw_finish[finish]],
            "gen_ai.usage.input_tokens": _tokens(messages) + _tokens(app.system_prompt),
            "gen_ai.usage.output_tokens": out_tokens,
            "gen_ai.output.messages": _j([output]),
        })
    span.end(end_time=times[1])


def _tool(tracer: trace.Tracer, ctx: Any, step: ToolStep, times: tuple[int, int]) -> None:
    span = tracer.start_span(f"execute_tool {step.name}", context=ctx, kind=SpanKind.INTERNAL,
                             start_time=times[0], attributes={
                                 "gen_ai.operation.name": "execute_tool",
                                 "gen_ai.tool.name": step.name,
                                 "gen_ai.tool.type": "function",
                                 "gen_ai.tool.call.id": step.call_id,
                                 "gen_ai.tool.call.arguments": _j(step.arguments),
                             })
    if step.error is not None:
        _fail(span, step.error[0], step.error[1], times[1], escaped=True)
    else:
        span.set_attribute("gen_ai.tool.call.result", step.result or "")
    span.end(end_time=times[1])
