"""The simulated agent fleet: real SDK spans with GenAI attributes, through Kafka, read back."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from schemas.otlp_json import parse_otlp_json
from stream.demo.broker import LocalBroker
from stream.demo.fleet import EmittedTrace, Fleet
from stream.demo.scenarios import APPS, FAILURE_SCENARIOS

FRUSTRATION = {line for app in APPS for line in app.frustration}


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attrs(span: Span) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in span.attributes}


def _spans_by_trace(requests: list[ExportTraceServiceRequest]) -> dict[str, list[tuple[dict, Span]]]:
    """trace id -> [(resource attributes, span)]"""
    out: dict[str, list[tuple[dict, Span]]] = defaultdict(list)
    for req in requests:
        for rs in req.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out[span.trace_id.hex()].append((resource, span))
    return out


def _run(broker: LocalBroker, topic: str, n: int, **kwargs: Any) -> tuple[list[EmittedTrace], Any]:
    emitted: list[EmittedTrace] = []
    with Fleet(broker.bootstrap, topic, **kwargs) as fleet:
        stats = fleet.run(n_traces=n, on_trace=emitted.append)
    assert stats.export_failures == 0
    return emitted, stats


def test_keyed_fleet_traces_arrive_whole_and_keyed(broker, new_topic, consume) -> None:
    topic = new_topic(4)
    emitted, stats = _run(broker, topic, 200, seed=7)
    assert stats.traces == 200 and stats.spans == sum(t.spans for t in emitted)
    records = consume(topic, expect=stats.messages)
    assert len(records) == stats.messages
    requests = []
    for record in records:
        req = ExportTraceServiceRequest.FromString(record.value)
        ids = {s.trace_id.hex() for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans}
        assert ids == {record.key.decode("ascii")}
        requests.append(req)
    traces = _spans_by_trace(requests)
    assert set(traces) == {t.trace_id for t in emitted}
    for t in emitted:
        assert len(traces[t.trace_id]) == t.spans
        assert {r["service.name"] for r, _ in traces[t.trace_id]} == {t.service}
    _check_genai_shapes(traces, {t.trace_id: t for t in emitted})


def _check_genai_shapes(traces: dict[str, list[tuple[dict, Span]]], emitted: dict[str, EmittedTrace]) -> None:
    loops = 0
    for trace_id, items in traces.items():
        info = emitted[trace_id]
        spans = [s for _, s in items]
        (root,) = [s for s in spans if not s.parent_span_id]
        ra = _attrs(root)
        assert root.name == f"invoke_agent {info.agent}"
        assert ra["gen_ai.operation.name"] == "invoke_agent"
        assert ra["gen_ai.agent.name"] == info.agent and ra["gen_ai.agent.version"]
        assert ra["gen_ai.conversation.id"] == info.conversation_id and ra["user.id"] == info.user_id
        assert root.start_time_unix_nano == min(s.start_time_unix_nano for s in spans)
        assert root.end_time_unix_nano == max(s.end_time_unix_nano for s in spans)
        assert root.end_time_unix_nano - root.start_time_unix_nano > 300_000_000  # realistic: > 0.3 s
        assert all(s.parent_span_id == root.span_id for s in spans if s is not root)
        chats = [(s, _attrs(s)) for s in spans if s.name.startswith("chat ")]
        tools = [(s, _attrs(s)) for s in spans if s.name.startswith("execute_tool ")]
        assert len(chats) + len(tools) + 1 == len(spans)
        for span, a in chats:
            assert a["gen_ai.operation.name"] == "chat" and span.name == f"chat {a['gen_ai.request.model']}"
            assert a["gen_ai.provider.name"] in ("openai", "anthropic")
            for m in json.loads(a["gen_ai.input.messages"]):
                assert m["role"] in ("user", "assistant", "tool") and m["parts"][0]["type"] in (
                    "text", "tool_call", "tool_call_response")
            if span.status.code != Status.STATUS_CODE_ERROR:
                assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
                assert a["gen_ai.response.model"] and a["gen_ai.response.finish_reasons"]
                (out,) = json.loads(a["gen_ai.output.messages"])
                assert out["role"] == "assistant" and out["finish_reason"] in ("stop", "length", "tool_call")
        for span, a in tools:
            assert a["gen_ai.operation.name"] == "execute_tool"
            assert span.name == f"execute_tool {a['gen_ai.tool.name']}" and a["gen_ai.tool.call.id"]
            json.loads(a["gen_ai.tool.call.arguments"])
        _check_scenario(info.scenario, root, chats, tools)
        loops += info.scenario == "tool_loop"
    assert loops > 0


def _check_scenario(scenario: str, root: Span, chats: list, tools: list) -> None:
    root_attrs = _attrs(root)
    user_text = json.loads(root_attrs["gen_ai.input.messages"])[-1]["parts"][0]["content"]
    final = json.loads(chats[-1][1].get("gen_ai.output.messages", "[{}]"))[0] if chats else {}
    errored_tools = [s for s, _ in tools if s.status.code == Status.STATUS_CODE_ERROR]
    if scenario == "healthy":
        assert root.status.code != Status.STATUS_CODE_ERROR and not errored_tools
        assert final["finish_reason"] == "stop" and user_text not in FRUSTRATION
    elif scenario == "tool_error":
        (bad,) = errored_tools
        assert _attrs(bad)["error.type"] and [e.name for e in bad.events] == ["exception"]
    elif scenario == "agent_exception":
        assert root.status.code == Status.STATUS_CODE_ERROR and root_attrs["error.type"]
        assert "exception" in [e.name for e in root.events]
    elif scenario == "tool_loop":
        calls = Counter((a["gen_ai.tool.name"], a["gen_ai.tool.call.arguments"]) for _, a in tools)
        assert 3 <= max(calls.values()) <= 5
    elif scenario == "frustrated_user":
        assert user_text in FRUSTRATION
    elif scenario == "truncated":
        assert final["finish_reason"] == "length"
        assert chats[-1][1]["gen_ai.usage.output_tokens"] == chats[-1][1]["gen_ai.request.max_tokens"]


def test_unkeyed_json_batches(broker, new_topic, consume) -> None:
    topic = new_topic(4)
    emitted, stats = _run(broker, topic, 60, seed=3, encoding="otlp_json", partition_traces_by_id=False)
    records = consume(topic, expect=stats.messages)
    assert records and all(r.key is None for r in records)
    assert stats.messages < stats.traces  # batches hold many traces
    traces = _spans_by_trace([parse_otlp_json(r.value) for r in records])
    assert {tid: len(items) for tid, items in traces.items()} == {t.trace_id: t.spans for t in emitted}


def test_failure_share_and_determinism(broker, new_topic) -> None:
    first, stats = _run(broker, new_topic(1), 400, seed=11)
    second, _ = _run(broker, new_topic(1), 400, seed=11)
    assert [(t.trace_id, t.scenario, t.conversation_id) for t in first] == \
        [(t.trace_id, t.scenario, t.conversation_id) for t in second]
    assert 0.20 <= stats.failure_share <= 0.40
    assert set(stats.traces_by_scenario) == {"healthy"} | FAILURE_SCENARIOS
    assert set(stats.traces_by_service) == {a.service for a in APPS}
    by_conversation = Counter(t.conversation_id for t in first)
    assert max(by_conversation.values()) >= 2  # multi-turn conversations share gen_ai.conversation.id


def test_rate_limit_and_stop_event(broker, new_topic) -> None:
    topic = new_topic(1)
    with Fleet(broker.bootstrap, topic, seed=1) as fleet:
        began = time.monotonic()
        stats = fleet.run(n_traces=11, rate=20.0)
        assert time.monotonic() - began >= 0.45  # 11 traces at 20/s: the last is due at 0.5 s
        assert stats.traces == 11

        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        began = time.monotonic()
        stats = fleet.run(rate=50.0, stop_event=stop)
        assert time.monotonic() - began < 3
        assert 5 <= stats.traces <= 25
