"""Verdicts: invalid output is unscored, provider failure is an error; neither is ever a "fail"."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from judges.providers.base import ProviderError
from judges.rubric import builtin_rubrics
from judges.rubric_judge import RubricJudge
from judges.verdict import Verdict
from tests.judges.fake_llm import ScriptedLLM, build_trace

COMMON = {"trace_id": "t1", "judge": "j", "judge_version": "1", "rubric_hash": "h"}
TRACE = build_trace("Where is order 42?", "It shipped.", '{"status": "shipped"}')
GOOD = {"label": "fail", "score": 0.2, "explanation": "Claims shipping without evidence.", "evidence": ["It shipped."]}


def _judge(script: list[str | ProviderError]) -> tuple[RubricJudge, ScriptedLLM]:
    llm = ScriptedLLM(script)
    return RubricJudge(builtin_rubrics()["groundedness"], llm, "judge-mini", tier="cheap"), llm


def _run(script: list[str | ProviderError]) -> Verdict:
    judge, _ = _judge(script)
    return asyncio.run(judge(TRACE, {}))


def test_constructors_never_carry_a_label() -> None:
    for make in (Verdict.unscored, Verdict.error, Verdict.budget_skipped):
        v = make(reason="r", label="fail", score=0.0, **COMMON)  # label/score are dropped
        assert v.label is None and v.score is None and v.status != "ok" and not v.is_judged
    assert Verdict.budget_skipped(**COMMON).status_reason == "budget_exhausted"


def test_model_rejects_inconsistent_status() -> None:
    with pytest.raises(ValidationError):
        Verdict(status="error", label="fail", **COMMON)
    with pytest.raises(ValidationError):
        Verdict(status="ok", **COMMON)
    with pytest.raises(ValidationError):
        Verdict(status="ok", label="pass", score=1.5, **COMMON)


@pytest.mark.parametrize("text", [json.dumps(GOOD), "```json\n" + json.dumps(GOOD) + "\n```", f"  {json.dumps(GOOD)}\n"])
def test_ok_verdict_records_everything(text: str) -> None:
    judge, llm = _judge([text])
    v = asyncio.run(judge(TRACE, {}))
    r = judge.rubric
    assert (v.status, v.label, v.score, v.evidence) == ("ok", "fail", 0.2, ["It shipped."])
    assert v.trace_id == TRACE.trace_id and v.judge == "groundedness" and v.judge_version == r.version
    assert v.rubric_hash == r.rubric_hash and v.provider == "fake"
    assert v.model == "judge-mini" and v.model_reported == "judge-mini-2025-01-01"
    assert v.temperature == r.params.temperature and v.seed == r.params.seed == llm.requests[0].seed
    assert v.input_tokens > 0 and v.output_tokens > 0 and v.attempts == 1 and v.latency_s > 0
    assert v.cost_usd == pytest.approx(llm.cost_usd(v.input_tokens, v.output_tokens)) and v.cost_usd > 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I think it fails.", "not JSON"),
        ("", "not JSON"),
        ('{"label": "fail", "score": 0.1, "explanation": "x"} trailing', "not JSON"),
        ("```json\n{}\n```\n```json\n{}\n```", "not JSON"),
        ("[1, 2]", "expected an object"),
        (json.dumps({**GOOD, "label": "FAIL"}), "label"),
        (json.dumps({**GOOD, "label": "partial"}), "label"),
        (json.dumps({**GOOD, "score": 7}), "outside [0, 1]"),
        (json.dumps({**GOOD, "score": -0.1}), "outside [0, 1]"),
        (json.dumps({**GOOD, "score": "0.5"}), "not a number"),
        (json.dumps({**GOOD, "score": True}), "not a number"),
        ('{"label": "fail", "score": NaN, "explanation": "x"}', "not a number"),
        (json.dumps({"label": "fail", "score": 0.1}), "missing fields ['explanation']"),
        (json.dumps({"score": 0.1, "explanation": "x"}), "missing fields ['label']"),
        (json.dumps({**GOOD, "explanation": ""}), "explanation"),
        (json.dumps({**GOOD, "explanation": "x" * 5000}), "explanation longer"),
        (json.dumps({**GOOD, "evidence": "a quote"}), "evidence"),
    ],
)
def test_invalid_output_is_unscored_never_fail(text: str, reason: str) -> None:
    v = _run([text])
    assert v.status == "unscored" and v.label is None and v.score is None
    assert v.status_reason.startswith("invalid_output: ") and reason in v.status_reason
    assert v.input_tokens > 0 and v.cost_usd > 0  # the call was still paid for


@pytest.mark.parametrize("kind", ["config", "rate_limited", "server", "timeout", "invalid_response",
                                  "circuit_open", "deadline", "network"])  # fmt: skip
def test_provider_error_is_error_never_fail(kind: str) -> None:
    v = _run([ProviderError(kind, "boom", status=401 if kind == "config" else None, attempts=3)])
    assert v.status == "error" and v.label is None and v.score is None
    assert v.status_reason.startswith(f"provider_{kind}: ") and v.attempts == 3
    assert v.model == "judge-mini" and v.cost_usd == 0.0


def test_prompt_failure_is_an_error() -> None:
    class Odd:
        trace_id = "t-odd"
        service_name = ""
        agent_name = None
        spans = None  # breaks extraction

    judge, llm = _judge([json.dumps(GOOD)])
    v = asyncio.run(judge(Odd(), {}))  # type: ignore[arg-type]
    assert v.status == "error" and v.status_reason.startswith("prompt_error") and not llm.requests


def test_tier_must_be_one_the_rubric_allows() -> None:
    with pytest.raises(ValueError, match="tier 'premium'"):
        RubricJudge(builtin_rubrics()["groundedness"], ScriptedLLM([]), "m", tier="premium")


REFUSED_OPENAI = {"model": "m-1", "choices": [{"message": {"role": "assistant", "content": None,
                                                           "refusal": "I can't help with that."},
                                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 50_000, "completion_tokens": 12}}  # fmt: skip
REFUSED_ANTHROPIC = {"model": "m-1", "content": [], "stop_reason": "refusal",
                     "usage": {"input_tokens": 50_000, "output_tokens": 12}}  # fmt: skip
CUT = {"model": "m-1", "choices": [{"message": {"role": "assistant", "content": '{"label": "fail", "sc'},
                                    "finish_reason": "length"}],
       "usage": {"prompt_tokens": 50_000, "completion_tokens": 512}}  # fmt: skip


@pytest.mark.parametrize(("protocol", "body", "reason"), [
    ("openai", REFUSED_OPENAI, "refused: I can't help with that."),
    ("anthropic", REFUSED_ANTHROPIC, "refused: stop_reason refusal"),
    ("openai", CUT, "invalid_output: not JSON (cut at max_tokens 512)"),
])  # fmt: skip
def test_a_refused_or_cut_answer_is_unscored_and_its_cost_recorded(protocol: str, body: dict[str, object],
                                                                   reason: str) -> None:  # fmt: skip
    """Over real HTTP with the real providers: a refusal was an invalid-response error at $0,
    though the provider billed its 50,000 input tokens (on the budget and the ledger, nothing)."""
    from tests.judges.fake_provider import FakeClock, FakeProviderServer, RawBody
    from tests.judges.support import make_provider

    with FakeProviderServer() as server:
        server.script(RawBody(json.dumps(body).encode()))
        provider = make_provider(server, FakeClock(), protocol, price_in_per_1m=2.5, price_out_per_1m=10.0)  # type: ignore[arg-type]
        judge = RubricJudge(builtin_rubrics()["groundedness"], provider, "m", tier="cheap")

        async def run() -> Verdict:
            try:
                return await judge(TRACE, {})
            finally:
                await provider.aclose()

        v = asyncio.run(run())
    assert v.status == "unscored" and v.label is None and v.status_reason == reason
    out = 512 if body is CUT else 12
    assert (v.input_tokens, v.output_tokens) == (50_000, out)
    assert v.cost_usd == pytest.approx((50_000 * 2.5 + out * 10.0) / 1e6)


def test_the_cost_estimate_covers_text_that_takes_a_token_or_more_per_character() -> None:
    """The budget reserves the estimate before a call; it was chars/3 tokens, a third of what
    8,000 CJK characters (a token or more each) cost, so calls in flight could overrun their
    share by that much. ASCII text is estimated as before."""
    judge, llm = _judge([])
    fixed = len(judge.rubric.template) // 3 + 600
    out = judge.rubric.params.max_tokens
    ascii_ = judge.estimate_usd({"x": "a" * 9_000})
    assert ascii_ == pytest.approx(llm.cost_usd(fixed + 3_000, out), abs=llm.cost_usd(1, 0))
    cjk = judge.estimate_usd({"x": "雪" * 8_000})  # 3 bytes each
    assert cjk >= llm.cost_usd(fixed + 8_000, out)  # at least a token per character
    emoji = judge.estimate_usd({"x": "🧪" * 4_000})  # 4 bytes each, often 2 tokens
    assert emoji >= llm.cost_usd(fixed + 7_000, out)
