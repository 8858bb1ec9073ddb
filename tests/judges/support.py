"""Helpers for provider tests: specs pointing at the fake server, one-call runner, outcome checks."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from judges.providers import (
    ChatRequest,
    ChatResponse,
    ProviderError,
    ProviderSpec,
    build_provider,
)
from judges.providers.http import HttpProvider
from tests.judges.fake_provider import FakeClock, FakeProviderServer, Protocol

ENV = {"FAKE_OPENAI_KEY": "sk-test-openai", "FAKE_ANTHROPIC_KEY": "sk-ant-test"}

REQ = ChatRequest(model="judge-model", system="You are a strict judge.",
                  messages=(("user", "trace 1"), ("assistant", "thinking"), ("user", "verdict?")),
                  temperature=0.0, seed=7, max_tokens=256)


def make_spec(server: FakeProviderServer, protocol: Protocol, **overrides: Any) -> ProviderSpec:
    fields: dict[str, Any] = {
        "type": protocol, "name": f"fake-{protocol}",
        "base_url": server.url + ("/v1" if protocol == "openai" else ""),
        "api_key_env": "FAKE_OPENAI_KEY" if protocol == "openai" else "FAKE_ANTHROPIC_KEY",
        "timeout_s": 0.3, "max_attempts": 3, "deadline_s": 60.0,
        "backoff_base_s": 0.5, "backoff_max_s": 8.0,
        "price_in_per_1m": 3.0, "price_out_per_1m": 15.0,
        "breaker_failures": 100, "breaker_cooldown_s": 30.0,
    }
    fields.update(overrides)
    return ProviderSpec(**fields)


def make_provider(server: FakeProviderServer, clock: FakeClock, protocol: Protocol,
                  **overrides: Any) -> HttpProvider:
    return build_provider(make_spec(server, protocol, **overrides), sleep=clock.sleep, clock=clock,
                          env=ENV, rng=random.Random(7))


async def outcome(provider: HttpProvider, req: ChatRequest = REQ) -> ChatResponse | ProviderError:
    try:
        return await provider.complete(req)
    except ProviderError as err:
        return err


def call_once(server: FakeProviderServer, clock: FakeClock, protocol: Protocol,
              req: ChatRequest = REQ, **overrides: Any) -> ChatResponse | ProviderError:
    """Build a provider, make one ``complete`` call, close it; the response or the error."""

    async def run() -> ChatResponse | ProviderError:
        provider = make_provider(server, clock, protocol, **overrides)
        try:
            return await outcome(provider, req)
        finally:
            await provider.aclose()

    return asyncio.run(run())


def expect_error(result: ChatResponse | ProviderError) -> ProviderError:
    assert isinstance(result, ProviderError), f"expected an error, got {result!r}"
    return result


def expect_response(result: ChatResponse | ProviderError) -> ChatResponse:
    assert isinstance(result, ChatResponse), f"expected a response, got {result!r}"
    return result
