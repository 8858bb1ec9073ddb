"""OpenAI-compatible provider against the fake server: wire format, parsing, cost, errors."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from judges.providers import ProviderError, build_provider
from tests.judges.fake_provider import (
    Fail,
    FakeClock,
    FakeProviderServer,
    RawBody,
    Reply,
)
from tests.judges.support import (
    ENV,
    REQ,
    call_once,
    expect_error,
    expect_response,
    make_provider,
    make_spec,
)

SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string"}},
          "required": ["verdict"], "additionalProperties": False}


def test_success_parsing_wire_format_and_cost(server: FakeProviderServer, clock: FakeClock) -> None:
    server.script(Reply(text='{"verdict": "fail"}', input_tokens=1234, output_tokens=567,
                        model="gpt-4o-mini-2024-07-18"))
    resp = expect_response(call_once(server, clock, "openai", price_in_per_1m=0.15,
                                     price_out_per_1m=0.6))
    assert (resp.text, resp.model, resp.input_tokens, resp.output_tokens, resp.attempts) == (
        '{"verdict": "fail"}', "gpt-4o-mini-2024-07-18", 1234, 567, 1)
    assert resp.latency_s >= 0
    [sent] = server.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test-openai"
    assert sent.body == {
        "model": "judge-model",
        "messages": [{"role": "system", "content": "You are a strict judge."},
                     {"role": "user", "content": "trace 1"},
                     {"role": "assistant", "content": "thinking"},
                     {"role": "user", "content": "verdict?"}],
        "temperature": 0.0, "max_tokens": 256, "seed": 7,
    }


def test_cost_usd(server: FakeProviderServer) -> None:
    spec = make_spec(server, "openai", price_in_per_1m=0.15, price_out_per_1m=0.6)
    provider = build_provider(spec, env=ENV)
    assert provider.cost_usd(1_000_000, 0) == pytest.approx(0.15)
    assert provider.cost_usd(1234, 567) == pytest.approx((1234 * 0.15 + 567 * 0.6) / 1e6)
    asyncio.run(provider.aclose())


@pytest.mark.parametrize(("structured", "schema", "expected"), [
    (True, SCHEMA, {"type": "json_schema",
                    "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}}),
    (False, SCHEMA, None),
    (True, None, None),
])
def test_response_format(server: FakeProviderServer, clock: FakeClock, structured: bool,
                         schema: dict[str, object] | None, expected: object) -> None:
    server.script(Reply())
    expect_response(call_once(server, clock, "openai", req=replace(REQ, json_schema=schema),
                              structured_output=structured))
    assert server.requests[0].body.get("response_format") == expected


@pytest.mark.parametrize(("model", "field", "expected"), [
    ("judge-model", None, "max_tokens"),  # a compatible server: what they take
    ("o3-mini", None, "max_completion_tokens"),  # OpenAI reasoning models refuse max_tokens
    ("gpt-5-mini-2025-08-07", None, "max_completion_tokens"),
    ("judge-model", "max_completion_tokens", "max_completion_tokens"),  # set on the provider
])
def test_the_output_length_parameter(server: FakeProviderServer, clock: FakeClock, model: str, field: str | None,
                                     expected: str) -> None:  # fmt: skip
    server.script(Reply())
    expect_response(call_once(server, clock, "openai", req=replace(REQ, model=model), max_tokens_field=field))
    body = server.requests[0].body
    assert body[expected] == 256 and not ({"max_tokens", "max_completion_tokens"} - {expected}) & set(body)


def test_openais_own_api_gets_max_completion_tokens_for_every_model(server: FakeProviderServer,
                                                                    clock: FakeClock) -> None:  # fmt: skip
    provider = make_provider(server, clock, "openai", base_url="https://api.openai.com/v1")
    _url, _headers, body = provider._request(replace(REQ, model="gpt-4o-mini"))  # built, not sent
    asyncio.run(provider.aclose())
    assert body["max_completion_tokens"] == 256 and "max_tokens" not in body


def test_structured_output_sends_the_schema_without_bounds(server: FakeProviderServer, clock: FakeClock) -> None:
    from judges.rubric import default_output_schema

    server.script(Reply())
    schema = default_output_schema(["pass", "fail"])
    expect_response(call_once(server, clock, "openai", req=replace(REQ, json_schema=schema), structured_output=True))
    sent = server.requests[0].body["response_format"]["json_schema"]["schema"]
    assert sent["properties"]["score"] == {"type": "number"} and "maxItems" not in sent["properties"]["evidence"]


def test_no_seed_no_system_when_absent(server: FakeProviderServer, clock: FakeClock) -> None:
    server.script(Reply())
    expect_response(call_once(server, clock, "openai", req=replace(REQ, seed=None, system="")))
    body = server.requests[0].body
    assert "seed" not in body
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


GOOD = ('{"model": "m", "choices": [{"message": {"role": "assistant", "content": "x"}}], '
        '"usage": {"prompt_tokens": 1, "completion_tokens": 2}}')


@pytest.mark.parametrize("body", [
    b"not json at all",
    b'{"choices": [',
    b"<html><body>502 Bad Gateway</body></html>",
    b"[]",
    b'{"choices": [], "model": "m", "usage": {"prompt_tokens": 1, "completion_tokens": 1}}',
    GOOD.replace('"content": "x"', '"content": 7').encode(),
    GOOD.replace(', "usage": {"prompt_tokens": 1, "completion_tokens": 2}', "").encode(),
    GOOD.replace('"prompt_tokens": 1', '"prompt_tokens": "1"').encode(),
    GOOD.replace('"completion_tokens": 2', '"completion_tokens": -2').encode(),
    GOOD.replace('"model": "m", ', "").encode(),
])
def test_invalid_response_is_not_retried(server: FakeProviderServer, clock: FakeClock,
                                         body: bytes) -> None:
    server.script(RawBody(body))
    err = expect_error(call_once(server, clock, "openai"))
    assert err.kind == "invalid_response"
    assert err.attempts == 1 and len(server.requests) == 1


@pytest.mark.parametrize(("message", "finish", "refusal"), [
    ('"content": null, "refusal": "I cannot help with that"', "stop", "I cannot help with that"),
    ('"content": null', "length", None),  # a reasoning model that spent every token before any text
])
def test_a_billed_answer_without_text_keeps_its_usage(server: FakeProviderServer, clock: FakeClock, message: str,
                                                      finish: str, refusal: str | None) -> None:  # fmt: skip
    """It was refused as an invalid response with no usage, so a billed call cost $0 on the
    budget and the ledger: now its tokens come back with an empty text and the refusal."""
    body = GOOD.replace('"content": "x"', message).replace('"role": "assistant", ', "")
    body = body.replace("}}]", f'}}, "finish_reason": "{finish}"}}]').replace('"prompt_tokens": 1', '"prompt_tokens": 5000')
    server.script(RawBody(body.encode()))
    resp = expect_response(call_once(server, clock, "openai"))
    assert (resp.text, resp.input_tokens, resp.output_tokens, resp.stop_reason, resp.refusal) == (
        "", 5000, 2, finish, refusal)


def test_well_formed_minimal_body_is_accepted(server: FakeProviderServer, clock: FakeClock) -> None:
    server.script(RawBody(GOOD.encode()))  # the invalid-body table is built from this one
    resp = expect_response(call_once(server, clock, "openai"))
    assert (resp.text, resp.model, resp.input_tokens, resp.output_tokens) == ("x", "m", 1, 2)


@pytest.mark.parametrize(("status", "kind"), [
    (401, "config"), (403, "config"), (404, "config"), (400, "invalid_request"),
    (422, "invalid_request"),
])
def test_client_errors_are_not_retried(server: FakeProviderServer, clock: FakeClock, status: int,
                                       kind: str) -> None:
    server.script(Fail(status, message="Incorrect API key provided"))
    err = expect_error(call_once(server, clock, "openai"))
    assert (err.kind, err.status, err.attempts) == (kind, status, 1)
    assert "Incorrect API key provided" in err.message
    assert len(server.requests) == 1
    assert clock.sleeps == []


def test_missing_api_key_env_is_a_config_error_naming_it(server: FakeProviderServer) -> None:
    spec = make_spec(server, "openai", api_key_env="TJ_NOT_SET_KEY")
    with pytest.raises(ProviderError) as info:
        build_provider(spec, env={"OTHER": "x"})
    assert info.value.kind == "config"
    assert "TJ_NOT_SET_KEY" in str(info.value)
