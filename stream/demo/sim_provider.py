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

:func:`demo_judging_config` writes the demo's judging YAML: the real OpenAI API when
``OPENAI_API_KEY`` is set (and ``TRACEJUDGE_DEMO_SIMULATE`` is not ``1``), this simulation otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Self

import yaml

log = logging.getLogger(__name__)

Mode = Literal["openai", "simulated"]
SIM_API_KEY_ENV = "TRACEJUDGE_SIM_API_KEY"
SIM_API_KEY = "simulated"
SIM_HEADER = "x-simulated"
UNCERTAIN_RATE = 0.15
MAX_BODY_BYTES = 16 << 20

#: which failure markers make each built-in rubric fail; an unknown rubric fails on any marker
ALL_MARKERS = frozenset({"tool_error", "tool_loop", "no_answer", "cut_off", "gave_up", "frustration"})
RUBRIC_MARKERS: dict[str, frozenset[str]] = {
    "task_completion": ALL_MARKERS,
    "tool_use_correctness": frozenset({"tool_error", "tool_loop"}),
    "groundedness": frozenset({"tool_error", "no_answer"}),
    "frustration_resolution": frozenset({"frustration", "no_answer", "gave_up", "tool_loop"}),
    "refusal_correctness": frozenset({"no_answer"}),
}
_WHY = {
    "tool_error": "a tool call failed",
    "tool_loop": "the same tool call was repeated without progress",
    "no_answer": "the agent gave no final answer",
    "cut_off": "the final answer stops mid-sentence",
    "gave_up": "the final answer says the task could not be done",
    "frustration": "the user's latest message is a complaint or correction",
}
_PASS_WHY = {
    "task_completion": "the final answer addresses the request and every tool call it relies on succeeded",
    "tool_use_correctness": "each tool call succeeded with plausible arguments and was not repeated",
    "groundedness": "the final answer is consistent with the tool results",
    "frustration_resolution": "the user's latest message shows no unresolved frustration",
    "refusal_correctness": "the agent answered a legitimate request",
}

# ---- reading the judge prompt ------------------------------------------------------------------

_BLOCK = re.compile(r"(?m)^([A-Z][A-Z0-9_]*):\n<untrusted-([0-9A-Za-z]+)>\n(.*?)\n</untrusted-\2>", re.DOTALL)
_ANY_TAG = re.compile(r"</?untrusted-[0-9A-Za-z]+>")
_LABELS = re.compile(r'"label":\s*<one of ([^>]*)>')
_TOOL_CALL = re.compile(r"(?m)^#\d+ (.+?) status=(?:ok|ERROR)\b")
_TOOL_ERROR = re.compile(r"(?m)^.*(?:status=ERROR|\[ERROR\]|\bERROR\b).*$")
_GAVE_UP = re.compile(
    r"\b(?:could(?:n'?t| not)|can(?:'|no)?t|unable to|failed to|try again later|still looking)\b", re.IGNORECASE
)
_FRUSTRATION = re.compile(
    r"that'?s (?:wrong|not what i asked)|not what i (?:asked|wanted)|\buseless\b|talk to a (?:human|person)"
    r"|not helping|still the wrong|\bno,? i (?:said|meant)\b|why is this so hard|doesn'?t (?:even )?(?:work|compile)"
    r"|just answer|i already (?:gave|told) you|never received",
    re.IGNORECASE,
)
_ENDS_SENTENCE = tuple(".!?)\"'`]}*:")


@dataclass(frozen=True)
class Judgement:
    label: str
    score: float
    explanation: str
    evidence: list[str]
    rubric: str
    markers: tuple[str, ...]
    uncertain: bool


def _text(content: Any) -> str:
    """A message's content as text (a string, or OpenAI content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


_rubric_lines: dict[str, str] | None = None


def _rubric_first_lines() -> dict[str, str]:
    """First instruction line of each built-in rubric's template -> rubric name."""
    global _rubric_lines
    if _rubric_lines is None:
        from judges.rubric import builtin_rubrics

        lines = {}
        for name, rubric in builtin_rubrics().items():
            first = next((ln.strip() for ln in rubric.template.splitlines() if ln.strip()), "")
            if first:
                lines[first] = name
        _rubric_lines = lines
    return _rubric_lines


def recognize_rubric(system: str, user: str = "") -> str:
    """The built-in rubric whose instructions the prompt carries, or ``"unknown"``."""
    for first, name in _rubric_first_lines().items():
        if first in system or first in user:
            return name
    return "unknown"


def _labels(system: str, user: str) -> list[str]:
    m = _LABELS.search(system) or _LABELS.search(user)
    if m:
        found = re.findall(r'"([^"]+)"', m.group(1))
        if found:
            return found
    return ["pass", "fail"]


def _last_user_message(blocks: Mapping[str, str], data: str) -> str:
    if "USER_MESSAGES" in blocks:
        lines = [ln for ln in blocks["USER_MESSAGES"].splitlines() if ln.strip()]
        return lines[-1] if lines else ""
    if "CONVERSATION" in blocks:
        users = re.findall(r"(?m)^\[user\] (.*)$", blocks["CONVERSATION"])
        return users[-1] if users else ""
    return data


def _clip(s: str, n: int = 160) -> str:
    s = s.strip()
    return s if len(s) <= n else s[: n - 1] + "…"


def find_markers(blocks: Mapping[str, str], data: str) -> list[tuple[str, str]]:
    """(marker, evidence quote) for every failure marker in the trace data."""
    found: list[tuple[str, str]] = []
    tool_text = "\n".join(blocks[k] for k in ("TOOL_CALLS", "TOOL_RESULTS") if k in blocks) if blocks else data
    err = _TOOL_ERROR.search(tool_text)
    if err:
        found.append(("tool_error", _clip(err.group(0))))
    calls = Counter(_TOOL_CALL.findall(tool_text))
    if calls:
        call, n = calls.most_common(1)[0]
        if n >= 3:
            found.append(("tool_loop", _clip(f"{call} x{n}")))
    if "FINAL_ANSWER" in blocks:
        final = blocks["FINAL_ANSWER"].strip()
        if final in ("", "(none)"):
            found.append(("no_answer", "final answer: (none)"))
        else:
            if not final.endswith(_ENDS_SENTENCE):
                found.append(("cut_off", _clip("…" + final[-80:])))
            gave_up = _GAVE_UP.search(final)
            if gave_up:
                found.append(("gave_up", _clip(final)))
    last_user = _last_user_message(blocks, data).replace("\u2019", "'")
    frustrated = _FRUSTRATION.search(last_user)
    if frustrated:
        found.append(("frustration", _clip(last_user if len(last_user) <= 160 else frustrated.group(0))))
    return found


def _unit(digest: bytes, offset: int) -> float:
    """A number in [0, 1) from 4 bytes of ``digest``."""
    return int.from_bytes(digest[offset : offset + 4], "big") / 2**32


def judge_request(body: Mapping[str, Any], strong_models: Iterable[str] = (),
                  uncertain_rate: float = UNCERTAIN_RATE) -> Judgement:  # fmt: skip
    """The simulated verdict for one chat-completions request body (pure, deterministic)."""
    messages = body.get("messages") or []
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    user = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "user")
    model = str(body.get("model") or "")
    rubric = recognize_rubric(system, user)
    labels = _labels(system, user)
    pass_label, fail_label = labels[0], labels[1] if len(labels) > 1 else labels[0]
    blocks = {name: value for name, _nonce, value in _BLOCK.findall(user)}
    data = "\n\n".join(f"{k}:\n{v}" for k, v in blocks.items()) if blocks else _ANY_TAG.sub("", user)
    relevant = RUBRIC_MARKERS.get(rubric, ALL_MARKERS)
    markers = [(m, ev) for m, ev in find_markers(blocks, data) if m in relevant]

    digest = hashlib.sha256(f"{rubric}\x00{data}".encode()).digest()  # the nonce is not part of it
    strong = "strong" in model.lower() or model in set(strong_models)
    uncertain = not strong and _unit(digest, 0) < uncertain_rate
    if strong:
        confidence = 0.93 + 0.05 * _unit(digest, 4)
    elif uncertain:
        confidence = 0.55 + 0.10 * _unit(digest, 4)
    else:
        confidence = 0.85 + 0.10 * _unit(digest, 4)
    confidence = round(confidence, 3)
    hedge = " Not certain: the evidence is thin." if uncertain else ""
    if markers:
        why = "; ".join(dict.fromkeys(_WHY[m] for m, _ in markers))
        return Judgement(fail_label, round(1.0 - confidence, 3),
                         f"(simulated) {fail_label}: {why}.{hedge}", [ev for _, ev in markers][:5],
                         rubric, tuple(m for m, _ in markers), uncertain)  # fmt: skip
    why = _PASS_WHY.get(rubric, "no failure markers found in the trace data")
    return Judgement(pass_label, confidence, f"(simulated) {pass_label}: {why}.{hedge}", [], rubric, (), uncertain)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


# ---- the HTTP server ---------------------------------------------------------------------------


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
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
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
        prompt = "".join(_text(m.get("content")) for m in body.get("messages") or [])
        usage = {"prompt_tokens": _tokens(prompt), "completion_tokens": _tokens(content)}
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


# ---- the demo's judging configuration ----------------------------------------------------------

OPENAI_CHEAP, OPENAI_STRONG = "gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06"
SIM_CHEAP, SIM_STRONG = "sim-cheap", "sim-strong"
#: USD per 1M tokens (input, output): OpenAI list prices of the pinned models
PRICES = {"cheap": (0.15, 0.60), "strong": (2.50, 10.00)}
DEMO_JUDGES = ["task_completion", "tool_use_correctness"]
DEMO_BUDGET_USD = 0.50


def judging_mode(env: Mapping[str, str] | None = None) -> Mode:
    """``openai`` when ``OPENAI_API_KEY`` is set and ``TRACEJUDGE_DEMO_SIMULATE`` is not ``1``."""
    env = os.environ if env is None else env
    if env.get("OPENAI_API_KEY") and env.get("TRACEJUDGE_DEMO_SIMULATE") != "1":
        return "openai"
    return "simulated"


def _provider(name: str, base_url: str, key_env: str, tier: str, **extra: Any) -> dict[str, Any]:
    price_in, price_out = PRICES[tier]
    return {"name": name, "type": "openai", "base_url": base_url, "api_key_env": key_env,
            "price_in_per_1m": price_in, "price_out_per_1m": price_out, **extra}  # fmt: skip


def demo_judging_config(path: Path, sim_url: str | None, env: Mapping[str, str] | None = None) -> tuple[Path, Mode]:
    """Write the demo's judging YAML to ``path``; return ``(path, mode)``.

    ``openai``: the real API (gpt-4o-mini → gpt-4o, list prices, structured output). ``simulated``:
    :class:`SimulatedProvider` at ``sim_url`` (its root or its ``/v1`` base URL), key variable
    ``TRACEJUDGE_SIM_API_KEY``, the same prices so costs look realistic. Prices are per provider in
    the judging config, so each tier has its own provider entry (same endpoint)."""
    mode = judging_mode(env)
    path = Path(path)
    if mode == "openai":
        base, key_env = "https://api.openai.com/v1", "OPENAI_API_KEY"
        models, names = (OPENAI_CHEAP, OPENAI_STRONG), ("openai", "openai-strong")
        extra: dict[str, Any] = {"structured_output": True}
        header = "# tracejudge demo: judges on the OpenAI API (OPENAI_API_KEY is set). Real calls, real cost,\n" \
                 f"# capped by the budget below (USD {DEMO_BUDGET_USD:.2f} per day).\n"  # fmt: skip
    else:
        if not sim_url:
            raise ValueError("simulated mode needs the simulated provider's URL")
        base = sim_url.rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        key_env, models, names = SIM_API_KEY_ENV, (SIM_CHEAP, SIM_STRONG), ("simulated", "simulated-strong")
        extra = {"timeout_s": 10.0, "deadline_s": 30.0, "backoff_base_s": 0.2, "backoff_max_s": 2.0}
        header = "# tracejudge demo: SIMULATED judges (stream/demo/sim_provider.py), not a model: a local\n" \
                 "# HTTP server that grades by fixed rules. Costs use OpenAI list prices to look realistic.\n"  # fmt: skip
    doc: dict[str, Any] = {
        "providers": [_provider(names[0], base, key_env, "cheap", **extra),
                      _provider(names[1], base, key_env, "strong", **extra)],
        "tiers": {"cheap": {"provider": names[0], "model": models[0]},
                  "strong": {"provider": names[1], "model": models[1]}},
        "judges": list(DEMO_JUDGES),
        "cascade": {"escalate_below": 0.75},
        "budget": {"period_s": 86400, "global_usd": DEMO_BUDGET_USD},
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path, mode
