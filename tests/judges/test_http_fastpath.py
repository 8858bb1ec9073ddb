"""The cheaper request/response path of the HTTP providers gives what httpx's own path gives:
the request ``client.post(url, json=body)`` builds, the value ``resp.json()`` reads, the cookies
the client keeps."""

from __future__ import annotations

import asyncio
import datetime
import json
import random

import httpx
import pytest

from judges.providers.transport import json_post, make_client
from judges.providers.jsonio import dumps_body, loads


def _httpx_json(body: object) -> bytes:
    return httpx.Request("POST", "http://x/", json=body).content


def _random_text(rng: random.Random) -> str:
    pool = [chr(c) for c in range(0, 0x250)] + ["\u2028", "\u2029", "\ufeff", "\U0001f600", "é", '"', "\\"]
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, 40)))


def test_dumps_body_is_httpx_json_byte_for_byte() -> None:
    rng = random.Random(5)
    floats = [0.0, -0.0, 0.1, 0.2, 0.7, 1.0, 1e-4, 9.99e-5, 1e-7, 5e-324, 1e15, 1e16, 1.5e20, 1e22, 1.7976931348623157e308,
              123456789012345.6, 1 / 3, -2.5]  # fmt: skip
    floats += [rng.uniform(0, 2) for _ in range(2000)] + [10 ** rng.uniform(-8, 300) for _ in range(2000)]
    for f in floats:
        assert dumps_body({"temperature": f}) == _httpx_json({"temperature": f}), f
    for _ in range(500):
        body = {"model": _random_text(rng), "messages": [{"role": "user", "content": _random_text(rng)}],
                "temperature": rng.choice(floats), "max_tokens": rng.randint(0, 2**64 - 1), "seed": None,
                "nested": [True, False, None, (1, 2), {"a": [rng.randint(-(2**63), 2**63)]}]}  # fmt: skip
        assert dumps_body(body) == _httpx_json(body)
    for odd in [{"n": 2**64}, {"n": -(2**63) - 1}, {1: "int key"}, {"s": "x"}, [1.5e-5, "x"]]:
        assert dumps_body(odd) == _httpx_json(odd)


@pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": float("inf")}, {"x": "\ud800"}, {"d": datetime.date(2024, 1, 1)},
                                 {"o": object()}])  # fmt: skip
def test_dumps_body_refuses_what_httpx_refuses(bad: dict) -> None:
    with pytest.raises(Exception) as ours:
        dumps_body(bad)
    with pytest.raises(Exception) as theirs:
        _httpx_json(bad)
    assert type(ours.value) is type(theirs.value)


@pytest.mark.parametrize("doc", [
    b'{"a": 1, "b": [1.5, -0, 1E5, 0.1e1, "\\u00e9\\n"], "c": null, "d": true}', b'{"a":1,"a":2}', b"[]", b'"x"',
    b"18446744073709551615", b"18446744073709551616", b"-9223372036854775809", b'{"n": 1234567890123456789012}',
    b"1e400", b"NaN", b"-Infinity", b'"\\ud800"', b"\xef\xbb\xbf{}", '{"é": "ü"}'.encode("utf-16"), b"\xff", b"",
    b"{", b" [1] ", b"[" * 300 + b"]" * 300, b'{"a": "\xed\xa0\x80"}',
])  # fmt: skip
def test_loads_is_json_loads(doc: bytes) -> None:
    try:
        text: str | None = doc.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        text = None
    for data in (doc, text):
        if data is None:
            continue
        try:
            expected: object = json.loads(data)
        except Exception as exc:  # noqa: BLE001
            with pytest.raises(type(exc)):
                loads(data)
            continue
        got = loads(data)
        assert got == expected or (got != got and expected != expected)
        assert json.dumps(got) == json.dumps(expected)  # same types: int stays int, float stays float


def test_loads_deep_nesting_raises_recursion_error_like_json() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(RecursionError):
        json.loads(deep)
    with pytest.raises(RecursionError):
        loads(deep)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/v1/chat/completions", "https://api.openai.com/v1/messages",
                                 "https://u:p@h\u00f6st.example:8443/v1/x?a=1&b=%20"])  # fmt: skip
def test_json_post_is_the_request_httpx_builds(url: str) -> None:
    client = make_client(30.0, 4, headers={"Authorization": "Bearer k", "Accept": "application/json"})
    body = {"model": "m", "messages": [{"role": "user", "content": 'h\u00e9llo "x"\n\x01'}], "temperature": 0.2}
    timeout = httpx.Timeout(12.0, connect=10.0)
    theirs = client.build_request("POST", url, json=body, timeout=timeout)
    ours = json_post(client, httpx.URL(url), dumps_body(body), timeout)
    assert (ours.method, ours.url, ours.headers.raw, ours.content, ours.extensions) == (
        theirs.method, theirs.url, theirs.headers.raw, theirs.content, theirs.extensions)
    asyncio.run(client.aclose())


def test_client_keeps_cookies_a_provider_sets() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        if len(seen) == 1:
            return httpx.Response(200, json={}, headers=[("set-cookie", "__cf_bm=abc; Path=/")])
        return httpx.Response(200, json={})

    async def run() -> None:
        client = make_client(5.0, 1)
        client._transport = httpx.MockTransport(handler)  # noqa: SLF001 - a test double
        for _ in range(3):
            await client.post("https://api.example/v1/x", json={})
        assert dict(client.cookies) == {"__cf_bm": "abc"}
        await client.aclose()

    asyncio.run(run())
    assert seen == [None, "__cf_bm=abc", "__cf_bm=abc"]


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_provider_sends_what_httpx_json_sends_and_keeps_cookies(protocol: str) -> None:
    """Every attempt of a provider puts on the wire what ``client.post(url, json=body)`` would; a
    cookie a provider sets (e.g. a load balancer's) comes back on the following requests."""
    from judges.providers import ChatRequest, ProviderSpec, build_provider

    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "input_tokens": 3, "output_tokens": 2}
        body = {"model": "m-1", "usage": usage, "choices": [{"message": {"content": "ok"}}],
                "content": [{"type": "text", "text": "ok"}]}  # fmt: skip
        cookie = [("set-cookie", "lb=one; Path=/")] if len(sent) == 1 else []
        return httpx.Response(200, content=json.dumps(body).encode(), headers=cookie)

    spec = ProviderSpec(type=protocol, name="p", base_url="https://llm.example/v1", api_key_env="K",
                        max_connections=1)  # fmt: skip
    req = ChatRequest(model="m", system="sys \u00e9", messages=(("user", 'a "b"\n\x02 \U0001f600'),), temperature=0.3,
                      seed=11, max_tokens=64, json_schema={"type": "object", "x": 1e-5})  # fmt: skip

    async def run() -> None:
        provider = build_provider(spec, env={"K": "key"})
        client = provider._client  # noqa: SLF001 - its pooled client
        client._transport = httpx.MockTransport(handler)  # noqa: SLF001 - a test double
        url, _headers, body = provider._request(req)  # noqa: SLF001
        expected = client.build_request("POST", url, json=body)  # no cookie yet
        for _ in range(3):
            resp = await provider.complete(req)
            assert (resp.text, resp.model, resp.input_tokens, resp.output_tokens) == ("ok", "m-1", 3, 2)
        for i, request in enumerate(sent):
            got = [(k, v) for k, v in request.headers.raw if k.lower() != b"cookie"]
            assert got == expected.headers.raw
            assert request.content == expected.content and request.url == expected.url
            assert request.headers.get("cookie") == (None if i == 0 else "lb=one")
        await provider.aclose()

    asyncio.run(run())
