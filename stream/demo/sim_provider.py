"""A SIMULATED LLM judge provider for demos and tests — not a model, and no LLM is called.

:class:`SimulatedProvider` is a real HTTP server (stdlib ``ThreadingHTTPServer`` on 127.0.0.1)
speaking the OpenAI Chat Completions protocol (``POST /v1/chat/completions``), so the judging
stage runs end to end over real HTTP — providers, retries, ledger, budget, cascade — on a machine
that cannot reach any LLM provider. ``tracejudge demo`` uses it when no ``OPENAI_API_KEY`` is set
and says so; every response carries the header ``x-simulated: true``, every model name it reports
ends in ``-sim`` and every explanation starts with ``(simulated)``.

How it "judges" (deterministic rules, no language understanding): it reads the judge prompt that
:mod:`judges.prompt` builds — the rubric is recognized from the instructions in the system message,
the trace data from the ``<untrusted-NONCE>`` blocks of the user message — and looks for the
failure markers the demo fleet injects (:mod:`stream.demo.scenarios`):

* ``tool_error``: a tool span with ``status=ERROR`` / ``[ERROR]`` (or the word ``ERROR``);
* ``tool_loop``: the same tool call with the same arguments 3 or more times;
* ``no_answer``: an empty final answer (the agent raised, or its last LLM call failed);
* ``cut_off``: a final answer that stops mid-sentence (``finish_reason`` length);
* ``gave_up``: a final answer that says it could not do the task;
* ``frustration``: the user's latest message is a complaint or a correction.

Each rubric fails on the markers relevant to it (see :data:`RUBRIC_MARKERS`) and passes otherwise.
Confidence is high (0.85-0.97) for clear cases; for a deterministic ~15 % of inputs (by a hash of
the trace data, not of the per-call nonce) a cheap model is unsure (0.55-0.65), so a cheap → strong
cascade escalates sometimes. A strong model (name contains ``strong``, or listed in
``strong_models``) is always confident. Same input → same answer.

Optional: ``latency_s`` per answer (default 50 ms) and a deterministic share of HTTP 429 answers
with ``Retry-After: 1`` (``rate_limit_every``: every N-th request; default 0 = never). Token counts
are estimated from text length (chars / 4).

The grading rules live in :mod:`stream.demo.sim_rules`; the demo's judging YAML is written by
:mod:`stream.demo.judging_config`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any, Self

from stream.demo.sim_rules import UNCERTAIN_RATE, Judgement, judge_request, text_of, tokens
from stream.http_server import QuietHTTPServer

__all__ = ["SimulatedProvider", "judge_request", "SIM_API_KEY", "SIM_API_KEY_ENV", "SIM_HEADER"]

log = logging.getLogger(__name__)

SIM_API_KEY_ENV = "TRACEJUDGE_SIM_API_KEY"
SIM_API_KEY = "simulated"
SIM_HEADER = "x-simulated"
MAX_BODY_BYTES = 16 << 20

# ---- the HTTP server ---------------------------------------------------------------------------


class _Server(QuietHTTPServer):
    # socketserver listens with a backlog of 5: a judge opening a few dozen connections at once
    # overflowed it, and each dropped SYN was retried after Linux's 1 s initial RTO (measured: calls
    # of 1.24 s against a 0.2 s provider, in clusters). Real provider endpoints accept far more.
    request_queue_size = 1024


class SimulatedProvider:
    """A local OpenAI-compatible chat-completions server that judges by fixed rules (see module doc).

    ``with SimulatedProvider() as sim: ...`` or ``start()`` / ``stop()``; ``url`` is the server root,
    ``base_url`` the OpenAI ``base_url`` (``url + "/v1"``). Serves from a background thread.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.05,
                 rate_limit_every: int = 0, strong_models: Iterable[str] = (),
                 uncertain_rate: float = UNCERTAIN_RATE, api_key: str | None = None) -> None:  # fmt: skip
        if latency_s < 0 or rate_limit_every < 0 or not 0.0 <= uncertain_rate <= 1.0:
            raise ValueError("latency_s and rate_limit_every must be >= 0, uncertain_rate in [0, 1]")
        self.latency_s = latency_s
        self.rate_limit_every = rate_limit_every
        self.strong_models = frozenset(strong_models)
        self.uncertain_rate = uncertain_rate
        self.api_key = api_key
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._seq = 0
        self._httpd = _Server((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="simulated-provider", daemon=True)  # fmt: skip
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling -----------------------------------------------------------------------
    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def completion(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], Judgement]:
        """The chat-completion response body for ``body`` (no HTTP, no latency)."""
        verdict = judge_request(body, self.strong_models, self.uncertain_rate)
        content = json.dumps({"label": verdict.label, "score": verdict.score,
                              "explanation": verdict.explanation, "evidence": verdict.evidence})  # fmt: skip
        prompt = "".join(text_of(m.get("content")) for m in body.get("messages") or [])
        usage = {"prompt_tokens": tokens(prompt), "completion_tokens": tokens(content)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        resp = {
            "id": f"chatcmpl-sim-{uuid.uuid4().hex[:20]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": f"{body.get('model')}-sim",
            "system_fingerprint": "fp_simulated",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": None}}],
            "usage": usage,
        }  # fmt: skip
        return resp, verdict

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "tracejudge-simulated-provider/1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                log.debug("simulated provider: " + format, *args)

            def _send(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header(SIM_HEADER, "true")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, kind: str,
                       headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
                sim._count(f"http_{status}")
                self._send(status, {"error": {"message": f"(simulated) {message}", "type": kind,
                                              "param": None, "code": None}}, headers)  # fmt: skip

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                if self.path.rstrip("/") in ("/v1/models", "/models"):
                    self._send(200, {"object": "list", "data": []})
                else:
                    self._error(404, f"no route GET {self.path}", "invalid_request_error")

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self.close_connection = True
                    self._error(413, "request too large", "invalid_request_error")
                    return
                raw = self.rfile.read(length) if length else b""
                if self.path.split("?", 1)[0].rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                    self._error(404, f"no route POST {self.path}", "invalid_request_error")
                    return
                if sim.api_key is not None and self.headers.get("Authorization") != f"Bearer {sim.api_key}":
                    self._error(401, "invalid API key", "invalid_request_error")
                    return
                try:
                    body = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    self._error(400, "body is not JSON", "invalid_request_error")
                    return
                if (not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]
                        or not isinstance(body.get("messages"), list) or not body["messages"]
                        or not all(isinstance(m, dict) for m in body["messages"])):  # fmt: skip
                    self._error(400, "expected {model, messages: [{role, content}]}", "invalid_request_error")
                    return
                seq = sim._next_seq()
                if sim.latency_s:
                    time.sleep(sim.latency_s)
                if sim.rate_limit_every and seq % sim.rate_limit_every == 0:
                    sim._count("rate_limited")
                    self._error(429, "rate limit reached (simulated)", "rate_limit_exceeded", {"Retry-After": "1"})
                    return
                try:
                    resp, verdict = sim.completion(body)
                except Exception as exc:  # noqa: BLE001 - a bug here must answer, not hang the client
                    log.exception("simulated provider failed on a request")
                    self._error(500, f"{type(exc).__name__}: {exc}", "server_error")
                    return
                with sim._lock:
                    sim.stats["requests"] += 1
                    sim.stats[f"label:{verdict.label}"] += 1
                    sim.stats["uncertain"] += int(verdict.uncertain)
                    sim.stats[f"model:{body['model']}"] += 1
                self._send(200, resp)

        return Handler
