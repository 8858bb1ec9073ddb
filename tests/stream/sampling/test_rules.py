"""TraceFacts from a Trace, and Match conditions (globs, regex, attributes, AND)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.model import CompletionReason, Span, SpanKind, Trace
from stream.sampling.rules import Match, TraceFacts, facts_from

TID = "0af7651916cd43dd8448eb211c80319c"


def _trace() -> Trace:
    root = Span(trace_id=TID, span_id="a" * 16, name="invoke_agent support", start_ns=1_000_000,
                end_ns=51_000_000, service_name="support-bot", agent_name="support", kind=SpanKind.AGENT,
                attributes={"tenant": "acme", "synthetic": False, "tier": 2},
                resource_attributes={"deployment.environment": "prod", "tenant": "resource-level"})  # fmt: skip
    chat = Span(trace_id=TID, span_id="b" * 16, parent_span_id="a" * 16, name="chat gpt-4o-mini",
                start_ns=2_000_000, end_ns=3_000_000, kind=SpanKind.LLM, request_model="gpt-4o-mini")  # fmt: skip
    tool = Span(trace_id=TID, span_id="c" * 16, parent_span_id="a" * 16, name="execute_tool lookup",
                start_ns=4_000_000, end_ns=5_000_000, kind=SpanKind.TOOL, response_model="claude-haiku")  # fmt: skip
    return Trace(trace_id=TID, spans=[chat, root, tool], completion_reason=CompletionReason.ROOT_ENDED_IDLE)


def test_facts_from_trace() -> None:
    f = facts_from(_trace(), ["tool_error"], ["frustration"], ["thanks"])
    assert f.trace_id == TID and f.service == "support-bot" and f.agent == "support"
    assert f.route == "invoke_agent support"
    assert f.models == ["claude-haiku", "gpt-4o-mini"]
    assert f.span_count == 3 and f.duration_ms == 50.0
    assert (f.failed_gates, f.negative_signals, f.positive_signals) == (["tool_error"], ["frustration"], ["thanks"])
    # root span attributes over its resource attributes
    assert f.attributes == {"tenant": "acme", "synthetic": False, "tier": 2, "deployment.environment": "prod"}


def test_facts_from_trace_without_root_or_signals() -> None:
    orphan = Span(trace_id=TID, span_id="d" * 16, parent_span_id="e" * 16, name="orphan")
    f = facts_from(Trace(trace_id=TID, spans=[orphan], completion_reason=CompletionReason.MAX_AGE))
    assert f.route == "orphan" and f.agent == "" and f.failed_gates == [] and f.models == []


FACTS = facts_from(_trace())


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, True),
        ({"service": "support-bot"}, True),
        ({"service": "support"}, False),  # exact unless it has glob characters
        ({"service": "support-*"}, True),
        ({"service": "Support-*"}, False),  # case-sensitive
        ({"agent": "sup?ort"}, True),
        ({"route": "invoke_agent *"}, True),
        ({"route": "GET /health*"}, False),
        ({"model": "gpt-4o*"}, True),  # any model of the trace
        ({"model": "claude-*"}, True),
        ({"model": "gemini*"}, False),
        ({"root_name": r"agent\s+sup"}, True),  # re.search
        ({"root_name": r"^support"}, False),
        ({"attribute": {"tenant": "acme"}}, True),
        ({"attribute": {"tenant": "ac*"}}, True),
        ({"attribute": {"deployment.environment": "prod"}}, True),
        ({"attribute": {"tenant": "other"}}, False),
        ({"attribute": {"missing": "*"}}, False),
        ({"attribute": {"synthetic": False}}, True),
        ({"attribute": {"synthetic": "false"}}, True),  # text form of a boolean
        ({"attribute": {"tier": 2}}, True),
        ({"attribute": {"tier": True}}, False),  # a boolean never equals a number
        ({"attribute": {"tier": "2"}}, True),
        ({"service": "support-bot", "agent": "support", "model": "gpt*", "attribute": {"tenant": "acme"}}, True),
        ({"service": "support-bot", "agent": "other"}, False),  # all conditions AND-ed
    ],
    ids=lambda v: str(v) if not isinstance(v, bool) else ("match" if v else "no-match"),
)
def test_match(spec: dict[str, object], expected: bool) -> None:
    assert Match.model_validate(spec).matches(FACTS) is expected


def test_empty_match_and_facts_defaults() -> None:
    assert Match().is_empty and Match().matches(TraceFacts(TID))
    assert not Match(agent="*").is_empty


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"root_name": "("}, "invalid regular expression"),
        ({"services": "x"}, "Extra inputs are not permitted"),
        ({"attribute": {"k": [1]}}, "attribute.k"),
    ],
    ids=["bad-regex", "unknown-field", "non-scalar-attribute"],
)
def test_invalid_match(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Match.model_validate(spec)
