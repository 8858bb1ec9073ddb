"""The demo's SIMULATED judge provider: a real HTTP server speaking OpenAI Chat Completions, driven by
the project's own provider and ``RubricJudge`` over real HTTP."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from judges.prompt import build_request
from judges.providers.base import ChatRequest
from judges.providers.config import ProviderSpec, build_provider
from judges.providers.http import HttpProvider
from judges.rubric import builtin_rubrics
from judges.rubric_judge import RubricJudge, parse_output
from judges.verdict import Verdict
from schemas.decode import decode_message
from schemas.model import CompletionReason, Trace
from stream.demo.scenarios import APPS, SCENARIO_WEIGHTS, Conversation, plan_turn
from stream.demo.sim_provider import SimulatedProvider, judge_request
from stream.demo.spans import emit_turn
from tests.judges.fake_llm import build_trace

RUBRICS = builtin_rubrics()
META: dict[str, Any] = {"decision": {"class": "suspected_failure"}, "failed_gates": [], "signals": []}


@pytest.fixture
def sim() -> Iterator[SimulatedProvider]:
    with SimulatedProvider(latency_s=0.0) as server:
        yield server


def provider(url: str, **kw: Any) -> HttpProvider:
    spec = ProviderSpec(type="openai", name="simulated", base_url=url, api_key_env="KEY",
                        price_in_per_1m=0.15, price_out_per_1m=0.60, **kw)  # fmt: skip
    return build_provider(spec, env={"KEY": "x"}, **({"sleep": _no_sleep} if "max_attempts" in kw else {}))


async def _no_sleep(_s: float) -> None:
    return None


def judge(sim: SimulatedProvider, trace: Trace, rubric: str = "task_completion", model: str = "sim-cheap",
          tier: str = "cheap") -> Verdict:  # fmt: skip
    async def run() -> Verdict:
        async with provider(sim.base_url, structured_output=True) as p:
            return await RubricJudge(RUBRICS[rubric], p, model, tier)(trace, META)

    return asyncio.run(run())


def failing(seed: int = 0) -> Trace:
    return build_trace("Where is my order 42?", "Sorry, the order service is down.", "ERROR: order service down",
                       tool_error=True, seed=seed)  # fmt: skip


def clean(seed: int = 0, user: str = "Where is my order 42?") -> Trace:
    return build_trace(user, "Your order 42 ships tomorrow.", '{"status": "shipped", "eta": "tomorrow"}', seed=seed)


def body_of(req: ChatRequest) -> dict[str, Any]:
    messages = [{"role": "system", "content": req.system}, *({"role": r, "content": c} for r, c in req.messages)]
    return {"model": req.model, "messages": messages}


def confidence(label: str, score: float) -> float:
    return score if label == "pass" else 1.0 - score


# ---- protocol --------------------------------------------------------------------------------------


def test_openai_protocol_shape_over_http(sim: SimulatedProvider) -> None:
    req = build_request(RUBRICS["task_completion"], clean(), META, model="sim-cheap")
    resp = httpx.post(f"{sim.base_url}/chat/completions", json=body_of(req),
                      headers={"Authorization": "Bearer x"}, timeout=5)  # fmt: skip
    assert resp.status_code == 200
    assert resp.headers["x-simulated"] == "true"
    body = resp.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int) and abs(body["created"] - time.time()) < 60
    assert body["model"] == "sim-cheap-sim"
    content = body["choices"][0]["message"]["content"]
    assert body["choices"][0]["message"]["role"] == "assistant"
    out = parse_output(content, ["pass", "fail"])
    assert out.label == "pass" and out.explanation.startswith("(simulated)")
    usage = body["usage"]
    prompt_chars = len(req.system) + sum(len(c) for _, c in req.messages)
    assert usage["prompt_tokens"] == prompt_chars // 4
    assert usage["completion_tokens"] == len(content) // 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_accepted_by_the_projects_openai_compat_provider(sim: SimulatedProvider) -> None:
    async def run() -> Any:
        async with provider(sim.base_url, structured_output=True) as p:
            req = build_request(RUBRICS["task_completion"], failing(), META, model="sim-cheap")
            return await p.complete(req), p.cost_usd(1_000_000, 0)

    resp, price = asyncio.run(run())
    assert resp.model == "sim-cheap-sim" and resp.attempts == 1
    assert resp.input_tokens > 100 and resp.output_tokens > 5
    assert parse_output(resp.text, ["pass", "fail"]).label == "fail"
    assert price == pytest.approx(0.15)


def test_errors_are_openai_shaped_and_marked_simulated(sim: SimulatedProvider) -> None:
    wrong = httpx.post(f"{sim.url}/v1/completions", json={}, timeout=5)
    assert wrong.status_code == 404 and wrong.headers["x-simulated"] == "true"
    assert "message" in wrong.json()["error"]
    garbage = httpx.post(f"{sim.base_url}/chat/completions", content=b"{nope", timeout=5)
    assert garbage.status_code == 400 and garbage.json()["error"]["type"] == "invalid_request_error"
    empty = httpx.post(f"{sim.base_url}/chat/completions", json={"model": "m", "messages": []}, timeout=5)
    assert empty.status_code == 400
    assert httpx.get(f"{sim.base_url}/models", timeout=5).json()["object"] == "list"


def test_api_key_is_checked_when_configured() -> None:
    with SimulatedProvider(latency_s=0.0, api_key="secret") as server:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        bad = httpx.post(f"{server.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer x"})
        good = httpx.post(f"{server.base_url}/chat/completions", json=body,
                          headers={"Authorization": "Bearer secret"})  # fmt: skip
    assert bad.status_code == 401 and good.status_code == 200


def test_rate_limits_with_retry_after_and_the_provider_retries() -> None:
    with SimulatedProvider(latency_s=0.0, rate_limit_every=2) as server:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        first = httpx.post(f"{server.base_url}/chat/completions", json=body)
        second = httpx.post(f"{server.base_url}/chat/completions", json=body)
        assert first.status_code == 200
        assert second.status_code == 429 and second.headers["retry-after"] == "1"
        assert second.headers["x-simulated"] == "true"

        async def run() -> Any:  # request 3 is answered, 4 is limited and retried as 5
            async with provider(server.base_url, max_attempts=3) as p:
                req = build_request(RUBRICS["task_completion"], clean(), META, model="sim-cheap")
                return [await p.complete(req) for _ in range(2)]

        a, b = asyncio.run(run())
        assert (a.attempts, b.attempts) == (1, 2)
        assert server.stats["rate_limited"] == 2


def test_latency_is_simulated() -> None:
    with SimulatedProvider(latency_s=0.2) as server:
        start = time.monotonic()
        resp = httpx.post(f"{server.base_url}/chat/completions",
                          json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert resp.status_code == 200 and time.monotonic() - start >= 0.2


def test_stop_closes_the_port() -> None:
    server = SimulatedProvider(latency_s=0.0).start()
    url = server.base_url
    assert httpx.get(f"{url}/models").status_code == 200
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models", timeout=2)


# ---- judging -----------------------------------------------------------------------------------------


def test_failing_trace_fails_and_clean_trace_passes_through_rubric_judge(sim: SimulatedProvider) -> None:
    bad, good = judge(sim, failing()), judge(sim, clean())
    assert (bad.status, bad.label, good.status, good.label) == ("ok", "fail", "ok", "pass")
    assert bad.model_reported == "sim-cheap-sim" and bad.cost_usd > 0 and bad.input_tokens > 0
    assert any("ERROR" in e for e in bad.evidence)
    tool_bad = judge(sim, failing(), rubric="tool_use_correctness")
    tool_good = judge(sim, clean(), rubric="tool_use_correctness")
    assert (tool_bad.label, tool_good.label) == ("fail", "pass")


def test_user_frustration_fails_task_completion(sim: SimulatedProvider) -> None:
    for app in APPS:
        for line in app.frustration:
            v = judge_request(body_of(build_request(RUBRICS["task_completion"], clean(user=line), META,
                                                    model="sim-cheap")))  # fmt: skip
            assert v.label == "fail" and "frustration" in v.markers, line
    verdict = judge(sim, clean(user="That's wrong, I never received anything."))
    assert verdict.label == "fail"


def _fleet_trace(scenario: str, seed: int) -> Trace:
    """One turn of the demo fleet (real OTel SDK spans → OTLP protobuf → decoded ``Trace``)."""
    rng = random.Random(seed)
    app = APPS[seed % len(APPS)]
    exporter = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": app.service}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    plan = plan_turn(rng, app, scenario, Conversation(f"conv-{seed}", "user-1"))
    emit_turn(tp.get_tracer("demo"), plan, rng, time.time_ns())
    tp.shutdown()
    spans = decode_message(encode_spans(exporter.get_finished_spans()).SerializeToString())
    return Trace.fast(trace_id=spans[0].trace_id, spans=spans, completion_reason=CompletionReason.ROOT_ENDED_IDLE)


#: what each demo scenario should get: (task_completion, tool_use_correctness)
EXPECTED = {
    "healthy": ("pass", "pass"),
    "tool_error": ("fail", "fail"),
    "agent_exception": ("fail", "pass"),
    "tool_loop": ("fail", "fail"),
    "frustrated_user": ("fail", "pass"),
    "truncated": ("fail", "pass"),
}


def test_every_demo_scenario_gets_the_expected_label() -> None:
    assert set(EXPECTED) == set(SCENARIO_WEIGHTS)
    for scenario, expected in EXPECTED.items():
        for seed in range(12):
            trace = _fleet_trace(scenario, seed)
            got = tuple(
                judge_request(body_of(build_request(RUBRICS[r], trace, META, model="sim-cheap"))).label
                for r in ("task_completion", "tool_use_correctness")
            )
            assert got == expected, (scenario, seed)


def test_demo_scenarios_over_http(sim: SimulatedProvider) -> None:
    for scenario, (expected, _) in EXPECTED.items():
        assert judge(sim, _fleet_trace(scenario, 1)).label == expected, scenario


def test_cheap_is_unsure_sometimes_strong_never() -> None:
    traces = [clean(seed=s, user=f"Where is my order {s}?") for s in range(60)]
    traces += [failing(seed=s) for s in range(60)]
    cheap_unsure = strong_conf = 0
    for t in traces:
        cheap = judge_request(body_of(build_request(RUBRICS["task_completion"], t, META, model="sim-cheap")))
        strong = judge_request(body_of(build_request(RUBRICS["task_completion"], t, META, model="sim-strong")))
        assert cheap.label == strong.label
        c = confidence(cheap.label, cheap.score)
        assert 0.55 <= c <= 0.65 or c >= 0.85
        cheap_unsure += c < 0.75
        assert confidence(strong.label, strong.score) >= 0.9
        strong_conf += 1
    assert 0.05 * len(traces) <= cheap_unsure <= 0.3 * len(traces)  # ~15 %
    # a strong model named in strong_models, whatever its name
    t = next(t for t in traces if judge_request(body_of(build_request(RUBRICS["task_completion"], t, META,
                                                                      model="gpt-x"))).uncertain)  # fmt: skip
    v = judge_request(body_of(build_request(RUBRICS["task_completion"], t, META, model="gpt-x")), strong_models={"gpt-x"})
    assert not v.uncertain and confidence(v.label, v.score) >= 0.9


def test_strong_model_is_confident_through_http_and_the_cascade_threshold(sim: SimulatedProvider) -> None:
    for seed in range(10):
        for t in (failing(seed), clean(seed)):
            v = judge(sim, t, model="sim-strong", tier="strong")
            assert v.status == "ok" and confidence(str(v.label), float(v.score or 0)) >= 0.75
            assert v.model_reported == "sim-strong-sim"


def test_same_input_same_answer(sim: SimulatedProvider) -> None:
    t = failing(3)
    a, b = judge(sim, t), judge(sim, t)  # different nonces per call
    assert (a.label, a.score, a.explanation, a.evidence) == (b.label, b.score, b.explanation, b.evidence)
    req = build_request(RUBRICS["tool_use_correctness"], t, META, model="sim-cheap")
    assert judge_request(body_of(req)) == judge_request(body_of(req))


def test_unknown_rubric_fails_on_any_marker_and_uses_its_labels() -> None:
    body = {"model": "m", "messages": [
        {"role": "system", "content": 'Grade it. Answer: {"label": <one of "good", "bad">, "score": ...}'},
        {"role": "user", "content": "TOOL_CALLS:\n<untrusted-abcdef0123456789>\n#1 lookup(x) status=ERROR\n"
                                    "</untrusted-abcdef0123456789>"},
    ]}  # fmt: skip
    v = judge_request(body)
    assert (v.rubric, v.label) == ("unknown", "bad")


def test_response_body_is_plain_json_for_other_clients(sim: SimulatedProvider) -> None:
    """Any OpenAI client reads it: content is a JSON string, not an object."""
    body = {"model": "sim-cheap", "messages": [{"role": "user", "content": "hello"}],
            "response_format": {"type": "json_object"}}  # fmt: skip
    resp = httpx.post(f"{sim.base_url}/chat/completions", json=body, timeout=5).json()
    assert json.loads(resp["choices"][0]["message"]["content"])["label"] in ("pass", "fail")
