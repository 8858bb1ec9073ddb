"""Shared machinery of the HTTP providers: one pooled ``httpx.AsyncClient``, the retry loop, the
circuit breaker and the mapping of transport and HTTP failures onto ``AttemptError`` kinds.

A concrete provider only says how to build the request (``_request``) and how to read a 2xx body
(``_parse``)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import ssl
import sys
from abc import ABC, abstractmethod
from typing import Any, Self

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

# httpcore runs ``import sniffio`` several times per request (``current_async_library``); when sniffio
# is not installed (it is optional with anyio 4) each of those failed imports searches sys.path
# again — measured: 8 % of the judge stage's CPU. A None entry makes the same import fail at once.
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
    """What a provider reads out of a 2xx body."""

    __slots__ = ("input_tokens", "model", "output_tokens", "text")

    def __init__(self, text: str, model: str, input_tokens: int, output_tokens: int):
        self.text = text
        self.model = model
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


#: connections per pooled client (see ``HttpProvider.__init__``)
POOL_SHARD = 4


class _Cookies(httpx.Cookies):
    """The client's cookie jar; reads a response's cookies only when it sets some. The stdlib jar
    builds an ``email.message.Message`` of every response's headers to find none (~3 % of a judge
    call's CPU), and does nothing else then."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class PooledClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose cookie jar is a :class:`_Cookies`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._jar = _Cookies(kwargs.get("cookies"))  # httpx reads the jar through ``cookies`` only

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._jar = _Cookies(cookies)


def make_client(timeout_s: float, max_connections: int = 32, *, headers: dict[str, str] | None = None,
                verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """A pooled client; connect and pool waits are capped at 10 s."""
    timeout = httpx.Timeout(connect=min(timeout_s, 10.0), read=timeout_s, write=timeout_s,
                            pool=min(timeout_s, 10.0))
    limits = httpx.Limits(max_connections=max_connections,
                          max_keepalive_connections=max_connections, keepalive_expiry=30.0)
    return PooledClient(timeout=timeout, limits=limits, follow_redirects=False, headers=headers, verify=verify)


def json_post(client: httpx.AsyncClient, url: httpx.URL, body: bytes, timeout: httpx.Timeout) -> httpx.Request:
    """The request ``client.build_request("POST", url, json=…, timeout=timeout)`` builds for a client
    without base URL, params or cookies, ``body`` being the JSON it would encode: the same method,
    URL, headers in the same order, body and extensions, without re-parsing the URL, re-merging the
    client's headers and re-encoding the body on every call."""
    headers = httpx.Headers([(b"Host", url.netloc)])
    headers.update(client.headers)
    headers["Content-Length"] = str(len(body))
    headers["Content-Type"] = "application/json"
    request = httpx.Request("POST", url, headers=headers, stream=httpx.ByteStream(body),
                            extensions={"timeout": timeout.as_dict()})
    request.read()
    return request


def require(cond: bool, what: str) -> None:
    if not cond:
        raise AttemptError("invalid_response", what)


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
        # httpcore's pool matches queued requests to connections, and checks every idle connection
        # for expiry (a readability probe of its socket), in O(connections) per request and
        # O(requests x connections) per event: at 128 in flight on one pool that was most of the
        # judge stage's CPU. So large pools are split into clients of at most POOL_SHARD
        # connections, and each request goes to the client with the fewest requests in flight
        # (which has a free connection whenever fewer than max_connections are in flight).
        # The shards share one TLS context (each would load the CA bundle: ~30 ms apiece) and carry the
        # provider's fixed headers, so a request does not pay httpx's per-request header merge.
        shards = max(1, -(-max_connections // POOL_SHARD))
        self._headers = self._fixed_headers()
        tls = httpx.create_ssl_context()
        self._clients = [make_client(timeout_s, -(-max_connections // shards), headers=self._headers, verify=tls)
                         for _ in range(shards)]  # fmt: skip
        self._in_flight = [0] * shards
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
                            output_tokens=parsed.output_tokens,
                            latency_s=self._clock() - start, attempts=attempts)

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
                load = self._in_flight
                i = load.index(min(load)) if len(load) > 1 else 0
                client = self._clients[i]
                load[i] += 1
                try:
                    same = headers is self._headers or headers == self._headers
                    if same and not client.cookies and (parsed_url := self._url(url)) is not None:
                        # what the ``post`` below sends, built cheaper
                        resp = await client.send(json_post(client, parsed_url, dumps_body(body), timeout))
                    else:
                        resp = await client.post(url, headers=None if same else headers, json=body,
                                                 timeout=timeout)
                finally:
                    load[i] -= 1
        except TimeoutError as err:
            raise AttemptError("timeout", f"{self.name}: no response within the deadline") from err
        except httpx.TimeoutException as err:
            raise AttemptError("timeout", f"{self.name}: {type(err).__name__} after {t:.1f}s") from err
        except httpx.TransportError as err:
            raise AttemptError("network", f"{self.name}: {type(err).__name__}: {err}") from err
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
        for client in self._clients:
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
