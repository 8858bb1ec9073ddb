"""The providers' HTTP client over aiohttp, against real local sockets: what goes on the wire, how
connection failures are classified, the connection limit, cookies and proxies from the environment."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from judges.providers import ChatRequest, ProviderError, ProviderSpec, build_provider

REQ = ChatRequest(model="m", system="sys", messages=(("user", "hi"),), temperature=0.0, seed=1, max_tokens=16)
OK_BODY = json.dumps({"model": "m-1", "usage": {"prompt_tokens": 3, "completion_tokens": 2},
                      "choices": [{"message": {"content": "ok"}}]}).encode()  # fmt: skip

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Wire"], Awaitable[None]]


class Wire:
    """A raw HTTP/1.1 server on 127.0.0.1: records each request's head and body, and the
    connections it saw (open at once, and in all)."""

    def __init__(self) -> None:
        self.requests: list[tuple[list[str], bytes]] = []
        self.connections = 0
        self.open = 0
        self.max_open = 0

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[list[str], bytes] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")[:-2]
        length = next(int(v) for k, _, v in (ln.partition(":") for ln in lines[1:]) if k.lower() == "content-length")
        body = await reader.readexactly(length)
        self.requests.append((lines, body))
        return lines, body


def ok_response(extra: str = "", body: bytes = OK_BODY) -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body  # fmt: skip


async def serve(handler: Handler) -> tuple[asyncio.Server, Wire, str]:
    wire = Wire()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        wire.connections += 1
        wire.open += 1
        wire.max_open = max(wire.max_open, wire.open)
        try:
            await handler(reader, writer, wire)
        finally:
            wire.open -= 1
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    return server, wire, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def answer_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: Wire, delay: float = 0.0,
                     extra: str = "") -> None:  # fmt: skip
    while await wire.read_request(reader) is not None:
        await asyncio.sleep(delay)
        writer.write(ok_response(extra))
        await writer.drain()


def provider(base_url: str, **overrides: Any) -> Any:
    fields: dict[str, Any] = {"type": "openai", "name": "p", "base_url": base_url + "/v1", "api_key_env": "K",
                              "timeout_s": 0.5, "max_attempts": 1, "breaker_failures": 100}  # fmt: skip
    return build_provider(ProviderSpec(**{**fields, **overrides}), env={"K": "key"}, rng=random.Random(1))


def test_the_wire_carries_httpx_request_and_the_cookie_once() -> None:
    """Request line, headers (in httpx's order), body: what ``client.post(url, json=body)`` builds;
    a cookie the provider set comes back on the next requests, once."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: Wire) -> None:
        await answer_all(reader, writer, wire, extra="Set-Cookie: lb=one; Path=/\r\n" if not wire.requests else "")

    async def run() -> None:
        server, wire, url = await serve(handler)
        p = provider(url)
        target, _headers, body = p._request(REQ)  # noqa: SLF001
        expected = p._client.build_request("POST", target, json=body)  # noqa: SLF001 - no cookie yet
        for _ in range(3):
            assert (await p.complete(REQ)).text == "ok"
        await p.aclose()
        server.close()
        assert len(wire.requests) == 3 and wire.connections == 1  # kept alive
        want = [(k.decode().lower(), v.decode()) for k, v in expected.headers.raw]
        for i, (lines, sent) in enumerate(wire.requests):
            assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
            headers = [(k.lower(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])]
            cookies = [v for k, v in headers if k == "cookie"]
            assert [h for h in headers if h[0] != "cookie"] == want
            assert cookies == ([] if i == 0 else ["lb=one"])
            assert sent == expected.content

    asyncio.run(run())


def test_connections_are_limited_and_reused() -> None:
    async def run() -> None:
        server, wire, url = await serve(lambda r, w, wire: answer_all(r, w, wire, delay=0.05))
        p = provider(url, max_connections=2)
        answers = await asyncio.gather(*[p.complete(REQ) for _ in range(12)])
        await p.aclose()
        server.close()
        assert [a.text for a in answers] == ["ok"] * 12
        assert wire.max_open == 2 and wire.connections == 2

    asyncio.run(run())


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: Wire) -> None:
    await wire.read_request(reader)
    await asyncio.sleep(5)


async def _close_before_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: Wire) -> None:
    await wire.read_request(reader)


async def _close_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: Wire) -> None:
    await wire.read_request(reader)
    writer.write(ok_response()[:-10])
    await writer.drain()


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: Wire) -> None:
    await wire.read_request(reader)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()


@pytest.mark.parametrize(("handler", "kind"), [
    (_silent, "timeout"), (_close_before_answering, "network"), (_close_mid_body, "network"), (_garbage, "network"),
])  # fmt: skip
def test_transport_failures_are_classified(handler: Handler, kind: str) -> None:
    """A silent server is a timeout; a connection closed (before or during the answer) or a reply
    that is not HTTP is a network failure: each an ``AttemptError`` the retry loop understands,
    never an aiohttp exception escaping the provider."""

    async def run() -> ProviderError:
        server, wire, url = await serve(handler)
        p = provider(url, timeout_s=0.3)
        try:
            with pytest.raises(ProviderError) as err:
                await p.complete(REQ)
        finally:
            await p.aclose()
            server.close()
        assert len(wire.requests) == 1
        return err.value

    err = asyncio.run(run())
    assert (err.kind, err.attempts) == (kind, 1), err


def test_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """As with httpx's own transport, ``HTTP_PROXY`` routes the requests through the proxy."""

    async def run() -> None:
        proxy, wire, proxy_url = await serve(answer_all)
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        p = provider("http://llm.invalid:8080")
        resp = await p.complete(REQ)
        await p.aclose()
        proxy.close()
        assert resp.text == "ok"
        assert wire.requests[0][0][0] == "POST http://llm.invalid:8080/v1/chat/completions HTTP/1.1"

    asyncio.run(run())
