"""The HTTP client behind every provider: an ``httpx.AsyncClient`` whose transport is aiohttp.

The providers speak httpx (requests, responses, timeouts, cookies, proxies from the environment);
the bytes go over aiohttp's connection pool (``httpx-aiohttp``, by an httpx maintainer; the
OpenAI SDK offers the same transport). httpcore's pool matches queued requests to connections, and
probes every idle connection's socket for expiry, in O(connections) per request: at 128 calls in
flight httpx's send path was a third of the judge stage's main-thread samples even with the pool
split into shards of four connections. With this transport, interleaved runs of
``bench/judge.py --kafka`` went from 205 to 233 calls/s (medians of 3; bench/README.md).

What changes against httpx's own transport, and how it is kept the same:

* aiohttp's session would keep a cookie jar of its own next to the client's; it gets a dummy one,
  so cookies stay the client's (``client.cookies``), as the fast request path assumes.
* aiohttp's exceptions come out as httpx's (``map_aiohttp_exceptions``), but that mapping reports a
  refused or reset connection as ``ConnectTimeout``: :func:`failure_kind` classifies by the aiohttp
  exception underneath instead (timeout only for aiohttp's timeouts).
* Timeouts: httpx's connect, read and pool timeouts become aiohttp's ``sock_connect``,
  ``sock_read`` and ``connect``; its write timeout has no aiohttp counterpart, and an attempt stays
  bounded by the call's deadline (``asyncio.timeout`` in ``HttpProvider._send``).
* HTTP/2 is not offered (aiohttp has none); the providers never asked for it.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


class _Cookies(httpx.Cookies):
    """The client's cookie jar; reads a response's cookies only when it sets some. The stdlib jar
    builds an ``email.message.Message`` of every response's headers to find none (~3 % of a judge
    call's CPU), and does nothing else then."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


def _transport(verify: Any, cert: Any, trust_env: bool, limits: httpx.Limits,
               proxy: httpx.Proxy | None = None) -> AiohttpTransport:  # fmt: skip
    transport = AiohttpTransport(verify=verify, cert=cert, trust_env=trust_env, limits=limits, proxy=proxy)

    def session() -> aiohttp.ClientSession:  # made on the first request, inside the running loop
        connector = aiohttp.TCPConnector(limit=limits.max_connections or 0, keepalive_timeout=limits.keepalive_expiry,
                                         ssl=transport.ssl_context)  # fmt: skip
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    transport.client = session
    return transport


class PooledClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` over aiohttp (also through a proxy from the environment) whose
    cookie jar is a :class:`_Cookies`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._jar = _Cookies(kwargs.get("cookies"))  # httpx reads the jar through ``cookies`` only

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._jar = _Cookies(cookies)

    def _init_transport(self, verify: Any = True, cert: Any = None, trust_env: bool = True, http1: bool = True,
                        http2: bool = False, limits: httpx.Limits = httpx.Limits(),
                        transport: httpx.AsyncBaseTransport | None = None, **_: Any) -> httpx.AsyncBaseTransport:  # fmt: skip
        return transport if transport is not None else _transport(verify, cert, trust_env, limits)

    def _init_proxy_transport(self, proxy: httpx.Proxy, verify: Any = True, cert: Any = None, trust_env: bool = True,
                              http1: bool = True, http2: bool = False, limits: httpx.Limits = httpx.Limits(),
                              **_: Any) -> httpx.AsyncBaseTransport:  # fmt: skip
        return _transport(verify, cert, trust_env, limits, proxy)


def make_client(timeout_s: float, max_connections: int = 32, *, headers: dict[str, str] | None = None,
                verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """A pooled client; connect and pool waits are capped at 10 s."""
    timeout = httpx.Timeout(connect=min(timeout_s, 10.0), read=timeout_s, write=timeout_s,
                            pool=min(timeout_s, 10.0))
    limits = httpx.Limits(max_connections=max_connections,
                          max_keepalive_connections=max_connections, keepalive_expiry=30.0)
    return PooledClient(timeout=timeout, limits=limits, follow_redirects=False, headers=headers, verify=verify)


def failure_kind(err: BaseException) -> str:
    """``"timeout"`` or ``"network"`` for a transport failure (an ``httpx.TransportError``, or an
    aiohttp error the mapping let through)."""
    cause = err if isinstance(err, aiohttp.ClientError) else err.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return "timeout" if isinstance(cause, TimeoutError) else "network"
    return "timeout" if isinstance(err, httpx.TimeoutException | TimeoutError) else "network"


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
