from __future__ import annotations

from typing import Any

import pytest

from schemas.model import Trace
from stream.gates.base import GateOutcome
from stream.gates.cost import CostGate, CostSpec, PriceTable
from tests.stream.gates.conftest import AGENT_FIXTURES, ERROR_FIXTURES, AgentTrace, fixture_trace

PRICES = {
    "gpt-4o": {"input_per_1m": 2.5, "output_per_1m": 10.0},
    "gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.6},
    "claude-*-sonnet*": {"input_per_1m": 3.0, "output_per_1m": 15.0},
}


def trace(*calls: tuple[str, int, int]) -> Trace:
    t = AgentTrace()
    for i, (model, tokens_in, tokens_out) in enumerate(calls):
        t.llm(user="hi" if i == 0 else None, answer="ok", model=model, tokens=(tokens_in, tokens_out))
    return t.build()


@pytest.mark.parametrize(
    ("calls", "spec", "outcome", "reason", "details"),
    [
        ([("gpt-4o-mini", 1000, 200)], {}, GateOutcome.PASS, "1200 tokens <= 200000", []),
        ([("gpt-4o-mini", 150_000, 60_000)], {}, GateOutcome.FAIL, "210000 tokens > 200000",
         ["150000 input + 60000 output tokens"]),
        # 1M in + 100k out on gpt-4o = 2.5 + 1.0 = $3.50
        ([("gpt-4o-2024-08-06", 1_000_000, 100_000)], {"max_total_tokens": None, "max_cost_usd": 3.0},
         GateOutcome.FAIL, "cost $3.5000 > $3", ["gpt-4o-2024-08-06: 1000000 in / 100000 out tokens = $3.5000"]),
        # the longer prefix wins: gpt-4o-mini prices, $0.15 + $0.06
        ([("gpt-4o-mini-2024-07-18", 1_000_000, 100_000)], {"max_total_tokens": None, "max_cost_usd": 3.0},
         GateOutcome.PASS, "cost $0.2100 <= $3", []),
        ([("claude-3-5-sonnet-latest", 100_000, 10_000), ("gpt-4o", 100_000, 0)],
         {"max_total_tokens": 1000, "max_cost_usd": 0.5}, GateOutcome.FAIL,
         "210000 tokens > 1000; cost $0.7000 > $0.5",
         ["200000 input + 10000 output tokens", "claude-3-5-sonnet-latest: 100000 in / 10000 out tokens = $0.4500",
          "gpt-4o: 100000 in / 0 out tokens = $0.2500"]),
        ([("mistral-large", 1000, 10)], {"max_total_tokens": None, "max_cost_usd": 1.0}, GateOutcome.NOT_APPLICABLE,
         "cost unknown: no price for model mistral-large", []),
        ([("mistral-large", 1000, 10)], {"max_cost_usd": 1.0}, GateOutcome.PASS,
         "1010 tokens <= 200000; cost unknown: no price for model mistral-large", []),
        ([("gpt-4o", 0, 0)], {}, GateOutcome.NOT_APPLICABLE, "no token usage recorded", []),
        # the priced spans alone are over: a failure whatever the unpriced one cost (it hid it)
        ([("gpt-4o-2024-08-06", 1_000_000, 100_000), ("mistral-large", 20, 0)],
         {"max_total_tokens": None, "max_cost_usd": 1.0}, GateOutcome.FAIL,
         "cost at least $3.5000 > $1 (no price for model mistral-large)",
         ["gpt-4o-2024-08-06: 1000000 in / 100000 out tokens = $3.5000"]),
    ],
    ids=["tokens-under", "tokens-over", "cost-over-prefix", "longest-prefix", "both-over-glob", "unknown-model",
         "unknown-model-tokens-ok", "no-usage", "unknown-model-known-part-over"],
)
def test_cost(calls: list[tuple[str, int, int]], spec: dict[str, Any], outcome: GateOutcome, reason: str,
              details: list[str]) -> None:  # fmt: skip
    r = CostGate(CostSpec.model_validate({"prices": PRICES, **spec})).evaluate(trace(*calls))
    assert (r.outcome, r.reason) == (outcome, reason)
    assert [e.detail for e in r.evidence] == details


def test_price_lookup_order() -> None:
    exact = {"gpt-4o-mini-2024-07-18": {"input_per_1m": 9, "output_per_1m": 9}}
    table = PriceTable(CostSpec.model_validate({"prices": {**PRICES, **exact}}).prices)
    assert table.lookup("gpt-4o-mini-2024-07-18").input_per_1m == 9  # type: ignore[union-attr]  # exact
    assert table.lookup("gpt-4o-mini-2025").input_per_1m == 0.15  # type: ignore[union-attr]  # longest prefix
    assert table.lookup("claude-3-7-sonnet").input_per_1m == 3.0  # type: ignore[union-attr]  # glob
    assert table.lookup("o3") is None


@pytest.mark.parametrize("stem", AGENT_FIXTURES)
def test_agent_fixtures_cost(stem: str) -> None:
    r = CostGate(CostSpec.model_validate({"prices": PRICES, "max_cost_usd": 0.01})).evaluate(fixture_trace(stem))
    assert r.outcome == GateOutcome.PASS
    assert r.reason == "231 tokens <= 200000; cost $0.0000 <= $0.01"


@pytest.mark.parametrize("stem", ERROR_FIXTURES)
def test_error_fixtures_have_no_usage(stem: str) -> None:
    assert CostGate(CostSpec()).evaluate(fixture_trace(stem)).outcome == GateOutcome.NOT_APPLICABLE
