"""A scriptable local HTTP server speaking the OpenAI Chat Completions and Anthropic Messages wire
protocols (chosen by request path), for provider tests without any network.

Each incoming request consumes the next scripted step (``Reply``, ``Fail``, ``Hang``, ``RawBody``);
once the script is empty, ``default`` answers. Every request is recorded with its headers, JSON
body and arrival time on an injectable clock (so tests using a fake clock can check that no request
arrived before a requested ``Retry-After``)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal, Self

from stream.http_server import QuietHTTPServer

Protocol = Literal["openai", "anthropic"]


@dataclass(frozen=True)
class Reply:
    """A 200 with a well-formed completion."""
    text: str = '{"verdict": "pass"}'
    input_tokens: int = 100
    output_tokens: int = 20
    model: str | None = None  # default: "<request model>-2025-01-01"


@dataclass(frozen=True)
class Fail:
    """An error status with the protocol's error body and optional ``Retry-After``."""
    status: int
    retry_after: str | None = None
    message: str = "scripted failure"


@dataclass(frozen=True)
class Hang:
    """Accept the request, then send nothing for ``seconds`` (or until the server closes)."""
    seconds: float = 30.0


@dataclass(frozen=True)
class RawBody:
    """Send ``body`` verbatim (garbage, truncated JSON, JSON missing fields…)."""
    body: bytes
    status: int = 200
    content_type: str = "application/json"


@dataclass(frozen=True)
class Func:
    """Decide the step from the request body (e.g. judge by the prompt, obey injections, count)."""
    fn: Callable[[Any], Reply | Fail | Hang | RawBody]


Step = Reply | Fail | Hang | RawBody | Func


@dataclass
class RecordedRequest:
    protocol: Protocol
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any
    arrived_at: float  # on the server's clock


@dataclass(frozen=True)
class SentResponse:
    """A response fully written to the client: what the provider would bill (``usage`` of a 200
    completion; ``None`` for errors and raw bodies)."""
    request: RecordedRequest
    status: int
    usage: tuple[int, int] | None  # (input tokens, output tokens)
    sent_at: float  # on the server's clock, after the last byte was written
    started_at: float = 0.0  # on the server's clock, before the first byte: the client had nothing earlier


_OPENAI_ERRORS = {400: "invalid_request_error", 401: "invalid_request_error",
                  403: "permission_denied", 404: "invalid_request_error", 429: "rate_limit_exceeded",
                  500: "server_error", 503: "server_error"}
_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error",
                     403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
                     500: "api_error", 503: "api_error", 529: "overloaded_error"}


def success_body(protocol: Protocol, step: Reply, request_model: str) -> dict[str, Any]:
    model = step.model or f"{request_model}-2025-01-01"
    if protocol == "openai":
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": model, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": step.text, "refusal": None}}],
            "usage": {"prompt_tokens": step.input_tokens, "completion_tokens": step.output_tokens,
                      "total_tokens": step.input_tokens + step.output_tokens},
        }
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
        "model": model, "content": [{"type": "text", "text": step.text}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": step.input_tokens, "output_tokens": step.output_tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }


def error_body(protocol: Protocol, step: Fail) -> dict[str, Any]:
    if protocol == "openai":
        return {"error": {"message": step.message,
                          "type": _OPENAI_ERRORS.get(step.status, "server_error"),
                          "param": None, "code": None}}
    return {"type": "error", "error": {"type": _ANTHROPIC_ERRORS.get(step.status, "api_error"),
                                       "message": step.message}}


class FakeProviderServer:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.requests: list[RecordedRequest] = []
        #: every response fully sent, in order; ``on_response`` (if set) is called with each one,
        #: from the handler thread, right after its last byte was written
        self.responses: list[SentResponse] = []
        self.on_response: Callable[[SentResponse], None] | None = None
        self.default: Step = Fail(500, message="unscripted request")
        self._script: deque[Step] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = QuietHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.label = "fake provider"
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *steps: Step) -> None:
        with self._lock:
            self._script.extend(steps)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next(self) -> Step:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so the client's pool is exercised

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                arrived = server.clock()
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path.endswith("/chat/completions"):
                    protocol: Protocol = "openai"
                elif self.path == "/v1/messages":
                    protocol = "anthropic"
                else:
                    self._send(404, b'{"error": {"message": "unknown path"}}')
                    return
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw
                rec = RecordedRequest(protocol, self.path, {k.lower(): v for k, v in self.headers.items()},
                                      body, arrived)
                with server._lock:
                    server.requests.append(rec)
                self._answer(protocol, server._next(), body, rec)

            def _answer(self, protocol: Protocol, step: Step, body: Any, rec: RecordedRequest) -> None:
                if isinstance(step, Func):
                    step = step.fn(body)
                if isinstance(step, Hang):
                    server._closing.wait(step.seconds)
                    self.close_connection = True
                    return
                if isinstance(step, RawBody):
                    self._send(step.status, step.body, step.content_type, request=rec)
                    return
                if isinstance(step, Fail):
                    headers = {"retry-after": step.retry_after} if step.retry_after else {}
                    self._send(step.status, json.dumps(error_body(protocol, step)).encode(),
                               extra=headers, request=rec)
                    return
                model = body.get("model", "unknown") if isinstance(body, dict) else "unknown"
                self._send(200, json.dumps(success_body(protocol, step, model)).encode(), request=rec,
                           usage=(step.input_tokens, step.output_tokens))

            def _send(self, status: int, payload: bytes, content_type: str = "application/json",
                      extra: dict[str, str] | None = None, request: RecordedRequest | None = None,
                      usage: tuple[int, int] | None = None) -> None:
                started = server.clock()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
                if request is None:
                    return
                self.wfile.flush()
                sent = SentResponse(request, status, usage, server.clock(), started)
                with server._lock:
                    server.responses.append(sent)
                if server.on_response is not None:
                    server.on_response(sent)

        return Handler


@dataclass
class FakeClock:
    """Monotonic clock + async sleep that records requested delays and advances time instantly."""
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds
