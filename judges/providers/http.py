"""Shared machinery of the HTTP providers: one pooled client (:mod:`judges.providers.transport`),
the retry loop, the circuit breaker and the mapping of transport and HTTP failures onto
``AttemptError`` kinds.

A concrete provider only says how to build the request (``_request``) and how to read a 2xx body
(``_parse``)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import sys
from abc import ABC, abstractmethod
from typing import Any, Self

import aiohttp
import httpx

from judges.providers.base import ChatRequest, ChatResponse, ProviderError
from judges.providers.breaker import CircuitBreaker
from judges.providers.jsonio import dumps_body, loads
from judges.providers.retry import (
    RETRY_AFTER_STATUSES,
    AttemptError,
    Clock,
    RetryPolicy,
    Sleep,
    classify_status,
    parse_retry_after,
    run_with_retry,
)
from judges.providers.transport import failure_kind, json_post, make_client

# httpcore (httpx's own transport: the alert webhook's client) runs ``import sniffio`` several times
# per request (``current_async_library``); when sniffio is not installed (it is optional with anyio 4)
# each of those failed imports searches sys.path again — measured: 8 % of the judge stage's CPU
# while the providers used that transport. A None entry makes the same import fail at once.
if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

# httpx logs every request at INFO ("HTTP Request: POST ... 200 OK"): at a few hundred judge calls a
# second that is a flood of log lines and ~6 % of the judge stage's CPU (measured in the worker,
# whose default level is info); every call is on the ledger anyway. Unless configured otherwise,
# only its warnings are shown.
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)

#: Attempt failures that count against the breaker (the provider itself is unhealthy).
BREAKER_KINDS = frozenset({"rate_limited", "server", "timeout", "network", "invalid_response"})


class Parsed:
    """What a provider reads out of a 2xx body. A body with usage but no text (a refusal, an
    answer cut at max_tokens before any text) is parsed, not refused: the call was billed, and
    its tokens must reach the budget and the ledger; the judge reads the empty text."""

    __slots__ = ("input_tokens", "model", "output_tokens", "refusal", "stop_reason", "text")

    def __init__(self, text: str, model: str, input_tokens: int, output_tokens: int,
                 stop_reason: str | None = None, refusal: str | None = None):  # fmt: skip
        self.text = text
        self.model = model
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.stop_reason = stop_reason
        self.refusal = refusal


def require(cond: bool, what: str) -> None:
    if not cond:
        raise AttemptError("invalid_response", what)


def billed(body: Any, input_key: str, output_key: str) -> tuple[str, int, int]:
    """``(model, input tokens, output tokens)`` of a 2xx body, read before anything else: a body
    with usage was billed, whatever else it holds (a refusal, no text)."""
    require(isinstance(body, dict), "body is not a JSON object")
    usage = body.get("usage")
    require(isinstance(usage, dict), "usage missing")
    model = body.get("model")
    require(isinstance(model, str) and model != "", "model missing")
    return (model, as_token_count(usage.get(input_key), f"usage.{input_key}"),
            as_token_count(usage.get(output_key), f"usage.{output_key}"))  # fmt: skip


def as_token_count(value: Any, what: str) -> int:
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            f"{what} is not a non-negative integer")
    return int(value)


class HttpProvider(ABC):
    def __init__(self, *, name: str, base_url: str, api_key: str, timeout_s: float,
                 price_in_per_1m: float, price_out_per_1m: float, structured_output: bool,
                 policy: RetryPolicy, breaker: CircuitBreaker, sleep: Sleep, clock: Clock,
                 max_connections: int = 32):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.price_in_per_1m = price_in_per_1m
        self.price_out_per_1m = price_out_per_1m
        self.structured_output = structured_output
        self.policy = policy
        self.breaker = breaker
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._clock = clock
        # one pooled client; its fixed headers are the provider's, so a request does not pay httpx's
        # per-request header merge
        self._headers = self._fixed_headers()
        self._client = make_client(timeout_s, max_connections, headers=self._headers)
        self._urls: dict[str, httpx.URL | None] = {}  # see _url

    # -- what a concrete provider supplies ------------------------------------------------------
    @abstractmethod
    def _request(self, req: ChatRequest) -> tuple[str, dict[str, str], dict[str, Any]]:
        """(url, headers, JSON body) of one attempt."""

    def _fixed_headers(self) -> dict[str, str]:
        """Headers every request of this provider carries (set on its clients once); ``_request``
        returns them, or headers of its own, which are then sent with each request."""
        return {}

    @abstractmethod
    def _parse(self, body: Any) -> Parsed:
        """Read a 2xx JSON body; raise ``AttemptError("invalid_response")`` when unusable."""

    @staticmethod
    def _error_detail(body: Any) -> str:
        """Human-readable message from an error body (both APIs use ``{"error": {"message"}}``)."""
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            return str(err.get("message") or err.get("type") or err)
        return ""

    # -- Provider --------------------------------------------------------------------------------
    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.price_in_per_1m + output_tokens * self.price_out_per_1m) / 1e6

    async def complete(self, req: ChatRequest) -> ChatResponse:
        if not self.breaker.allow():
            raise ProviderError("circuit_open", f"{self.name}: circuit open, retry in "
                                f"{self.breaker.retry_in():.1f}s")
        start = self._clock()
        url, headers, body = self._request(req)
        sent = 0

        async def attempt(remaining_s: float) -> Parsed:
            nonlocal sent
            if sent and not self.breaker.allow():  # the first attempt holds the slot taken above
                raise ProviderError("circuit_open", f"{self.name}: circuit opened during retries",
                                    attempts=sent)
            sent += 1
            return await self._attempt(url, headers, body, remaining_s)

        parsed, attempts = await run_with_retry(attempt, self.policy, sleep=self._sleep,
                                                clock=self._clock)
        return ChatResponse(text=parsed.text, model=parsed.model, input_tokens=parsed.input_tokens,
                            output_tokens=parsed.output_tokens, latency_s=self._clock() - start,
                            attempts=attempts, stop_reason=parsed.stop_reason, refusal=parsed.refusal)

    async def _attempt(self, url: str, headers: dict[str, str], body: dict[str, Any],
                       remaining_s: float) -> Parsed:
        """One request, its outcome reported to the breaker (which has already let it through)."""
        try:
            parsed = await self._send(url, headers, body, remaining_s)
        except AttemptError as err:
            if err.kind in BREAKER_KINDS:
                self.breaker.record_failure()
            else:
                self.breaker.release()
            raise
        except BaseException:
            self.breaker.release()  # cancelled: no verdict on the provider's health
            raise
        self.breaker.record_success()
        return parsed

    async def _send(self, url: str, headers: dict[str, str], body: dict[str, Any],
                    remaining_s: float) -> Parsed:
        t = min(self._timeout_s, remaining_s)
        timeout = httpx.Timeout(t, connect=min(t, 10.0))
        try:
            async with asyncio.timeout(remaining_s):
                client = self._client
                same = headers is self._headers or headers == self._headers
                if same and not client.cookies and (parsed_url := self._url(url)) is not None:
                    # what the ``post`` below sends, built cheaper
                    resp = await client.send(json_post(client, parsed_url, dumps_body(body), timeout))
                else:
                    resp = await client.post(url, headers=None if same else headers, json=body, timeout=timeout)
        except (httpx.TransportError, aiohttp.ClientError) as err:
            kind = failure_kind(err)
            what = f"{type(err).__name__} after {t:.1f}s" if kind == "timeout" else f"{type(err).__name__}: {err}"
            raise AttemptError(kind, f"{self.name}: {what}") from err
        except TimeoutError as err:
            raise AttemptError("timeout", f"{self.name}: no response within the deadline") from err
        try:
            payload: Any = loads(resp.content)  # what resp.json() returns, read by orjson when it can
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        if not resp.is_success:
            kind = classify_status(resp.status_code)
            retry_after = (parse_retry_after(resp.headers)
                           if resp.status_code in RETRY_AFTER_STATUSES else None)
            detail = self._error_detail(payload) or resp.text[:200]
            raise AttemptError(kind, f"{self.name}: {detail}", resp.status_code, retry_after)
        require(payload is not None, f"{self.name}: response body is not JSON")
        return self._parse(payload)

    def _url(self, url: str) -> httpx.URL | None:
        """``url`` parsed (once), if absolute (a relative one is left to the client to merge)."""
        try:
            return self._urls[url]
        except KeyError:
            parsed = httpx.URL(url)
            absolute = None if parsed.is_relative_url or not parsed.host else parsed
            if len(self._urls) < 64:
                self._urls[url] = absolute
            return absolute

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
