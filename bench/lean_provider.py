"""A lean stand-in for a remote LLM provider: OpenAI chat completions over real HTTP/1.1, fixed latency.

    python -m bench.lean_provider --latency 0.2 --label <first label of the rubric>

Prints its base URL (``http://127.0.0.1:PORT/v1``) on stdout, then serves until stdin closes or it is
killed. Runs in its own process (``bench/judge.py`` starts it). Unlike the demo's simulated provider
(:mod:`stream.demo.sim_provider`: a thread per connection, regex grading of every prompt) it does as
little per request as an HTTP server can: one asyncio protocol per keep-alive connection, the
request's headers and ``Content-Length`` body read, the ``model`` field picked out of the body,
and after ``--latency`` seconds (a loop timer, no thread) a fixed valid completion whose content is
``{"label": LABEL, "score": 0.9, ...}``. The benchmark measures the judge, not this server: the
server's own CPU per request is reported next to the judge's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import threading

_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)\s*$")


def completion_body(label: str, model: bytes, prompt_bytes: int) -> bytes:
    content = json.dumps({"label": label, "score": 0.9, "explanation": "(lean bench provider) fixed answer.",
                          "evidence": []})  # fmt: skip
    return json.dumps({
        "id": "chatcmpl-lean", "object": "chat.completion", "created": 0, "model": model.decode() + "-lean",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_bytes // 4, "completion_tokens": len(content) // 4,
                  "total_tokens": prompt_bytes // 4 + len(content) // 4},
    }).encode()  # fmt: skip


class _Conn(asyncio.Protocol):
    def __init__(self, server: LeanServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:  # one request at a time per connection (httpx does not pipeline), but be correct
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            m = _LENGTH.search(self.buf, 0, end)
            length = int(m.group(1)) if m else 0
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            self.server.requests += 1
            asyncio.get_running_loop().call_later(self.server.latency_s, self._answer, body)

    def _answer(self, body: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        m = _MODEL.search(body)
        payload = self.server.body(m.group(1) if m else b"unknown", len(body))
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(payload)).encode() + b"\r\nx-simulated: true\r\n\r\n" + payload)  # fmt: skip

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class LeanServer:
    def __init__(self, latency_s: float, label: str) -> None:
        self.latency_s = latency_s
        self.label = label
        self.requests = 0
        self._bodies: dict[tuple[bytes, int], bytes] = {}

    def body(self, model: bytes, prompt_bytes: int) -> bytes:
        key = (model, prompt_bytes // 4)
        b = self._bodies.get(key)
        if b is None:
            b = self._bodies[key] = completion_body(self.label, model, prompt_bytes)
        return b

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: _Conn(self), host, port, backlog=1024)
        print(f"http://{host}:{srv.sockets[0].getsockname()[1]}/v1", flush=True)
        done = asyncio.Event()
        # the parent closes our stdin (or dies): stop serving
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(done.set)), daemon=True).start()
        async with srv:
            await done.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--label", required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    asyncio.run(LeanServer(args.latency, args.label).serve(port=args.port))


if __name__ == "__main__":
    main()
