"""Anthropic Messages provider against the fake server: wire format, parsing, cost, errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.judges.fake_provider import (
    Fail,
    FakeClock,
    FakeProviderServer,
    RawBody,
    Reply,
)
from tests.judges.support import (
    REQ,
    call_once,
    expect_error,
    expect_response,
    make_provider,
)

SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string"}},
          "required": ["verdict"], "additionalProperties": False}


def test_success_parsing_wire_format_and_cost(server: FakeProviderServer, clock: FakeClock) -> None:
    server.script(Reply(text='{"verdict": "pass"}', input_tokens=2000, output_tokens=300,
                        model="claude-sonnet-4-5-20250929"))
    resp = expect_response(call_once(server, clock, "anthropic"))
    assert (resp.text, resp.model, resp.input_tokens, resp.output_tokens, resp.attempts) == (
        '{"verdict": "pass"}', "claude-sonnet-4-5-20250929", 2000, 300, 1)
    [sent] = server.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.body == {
        "model": "judge-model", "max_tokens": 256, "temperature": 0.0,
        "system": "You are a strict judge.",
        "messages": [{"role": "user", "content": "trace 1"},
                     {"role": "assistant", "content": "thinking"},
                     {"role": "user", "content": "verdict?"}],
    }


def test_cost_matches_usage(server: FakeProviderServer, clock: FakeClock) -> None:
    provider = make_provider(server, clock, "anthropic", price_in_per_1m=3.0, price_out_per_1m=15.0)
    assert provider.cost_usd(2000, 300) == pytest.approx(0.0105)
    assert provider.cost_usd(0, 0) == 0.0


def test_text_blocks_are_joined_and_other_blocks_skipped(server: FakeProviderServer,
                                                         clock: FakeClock) -> None:
    body = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                        {"type": "text", "text": '{"verdict": '},
                        {"type": "text", "text": '"fail"}'}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 5, "output_tokens": 6}}
    server.script(RawBody(json.dumps(body).encode()))
    resp = expect_response(call_once(server, clock, "anthropic"))
    assert resp.text == '{"verdict": "fail"}'


@pytest.mark.parametrize(("structured", "schema", "expected"), [
    (True, SCHEMA, {"format": {"type": "json_schema", "schema": SCHEMA}}),
    (False, SCHEMA, None),
    (True, None, None),
])
def test_structured_output(server: FakeProviderServer, clock: FakeClock, structured: bool,
                           schema: dict[str, object] | None, expected: object) -> None:
    server.script(Reply())
    expect_response(call_once(server, clock, "anthropic", req=replace(REQ, json_schema=schema),
                              structured_output=structured))
    body = server.requests[0].body
    assert body.get("output_config") == expected
    assert "response_format" not in body and "seed" not in body


def test_structured_output_sends_the_schema_without_bounds(server: FakeProviderServer, clock: FakeClock) -> None:
    """Anthropic refuses numeric, length and size bounds in an output schema with HTTP 400 (every
    call an error verdict); they are checked in code instead (judges/providers/wire_schema.py)."""
    from judges.rubric import default_output_schema

    server.script(Reply())
    schema = default_output_schema(["pass", "fail"])
    expect_response(call_once(server, clock, "anthropic", req=replace(REQ, json_schema=schema), structured_output=True))
    sent = server.requests[0].body["output_config"]["format"]["schema"]
    assert sent["properties"]["score"] == {"type": "number"} and sent["properties"]["explanation"] == {"type": "string"}


GOOD = {"model": "m", "content": [{"type": "text", "text": "x"}],
        "usage": {"input_tokens": 1, "output_tokens": 2}}


def _without(key: str) -> bytes:
    return json.dumps({k: v for k, v in GOOD.items() if k != key}).encode()


@pytest.mark.parametrize("body", [
    b"garbage",
    b'{"content": [{"type": "text", "text": "x"}',
    b'"just a string"',
    _without("content"), _without("usage"), _without("model"),
    json.dumps({**GOOD, "content": {"type": "text", "text": "x"}}).encode(),
    json.dumps({**GOOD, "content": [{"type": "text"}]}).encode(),
    json.dumps({**GOOD, "usage": {"input_tokens": 1.5, "output_tokens": 2}}).encode(),
])
def test_invalid_response(server: FakeProviderServer, clock: FakeClock, body: bytes) -> None:
    server.script(RawBody(body))
    err = expect_error(call_once(server, clock, "anthropic"))
    assert err.kind == "invalid_response"
    assert len(server.requests) == 1


@pytest.mark.parametrize(("content", "stop", "refusal"), [
    ([], "refusal", "stop_reason refusal"),
    ([{"type": "tool_use", "id": "t", "name": "n", "input": {}}], "tool_use", None),
    ([], "max_tokens", None),
])
def test_a_billed_answer_without_text_keeps_its_usage(server: FakeProviderServer, clock: FakeClock,
                                                      content: list[object], stop: str, refusal: str | None) -> None:  # fmt: skip
    """It was refused as an invalid response with no usage, so a billed call cost $0 on the
    budget and the ledger: now its tokens come back with an empty text and the stop reason."""
    body = {**GOOD, "content": content, "stop_reason": stop, "usage": {"input_tokens": 5000, "output_tokens": 3}}
    server.script(RawBody(json.dumps(body).encode()))
    resp = expect_response(call_once(server, clock, "anthropic"))
    assert (resp.text, resp.input_tokens, resp.output_tokens, resp.stop_reason, resp.refusal) == (
        "", 5000, 3, stop, refusal)


def test_minimal_body_is_accepted(server: FakeProviderServer, clock: FakeClock) -> None:
    server.script(RawBody(json.dumps(GOOD).encode()))
    resp = expect_response(call_once(server, clock, "anthropic"))
    assert (resp.text, resp.model, resp.input_tokens, resp.output_tokens) == ("x", "m", 1, 2)


@pytest.mark.parametrize(("status", "kind"), [
    (401, "config"), (403, "config"), (404, "config"), (400, "invalid_request"),
    (413, "invalid_request"),
])
def test_client_errors_are_not_retried(server: FakeProviderServer, clock: FakeClock, status: int,
                                       kind: str) -> None:
    server.script(Fail(status, message="invalid x-api-key"))
    err = expect_error(call_once(server, clock, "anthropic"))
    assert (err.kind, err.status, err.attempts) == (kind, status, 1)
    assert "invalid x-api-key" in err.message
    assert len(server.requests) == 1


@pytest.mark.parametrize("retry_after", [None, "3"])
def test_529_overloaded_is_retried_like_503(server: FakeProviderServer, clock: FakeClock,
                                            retry_after: str | None) -> None:
    server.script(Fail(529, retry_after=retry_after, message="Overloaded"), Reply())
    resp = expect_response(call_once(server, clock, "anthropic"))
    assert resp.attempts == 2 and len(server.requests) == 2
    if retry_after is not None:
        assert clock.sleeps[0] >= 3.0
        assert server.requests[1].arrived_at - server.requests[0].arrived_at >= 3.0
