"""``cost``: token usage over ``max_total_tokens`` and/or USD cost over ``max_cost_usd``.

Cost is computed per LLM span from its token usage and ``prices`` (USD per million input / output
tokens) for the span's model. A price key matches a model exactly, as a glob (``gpt-4o*``), or as
a prefix (``gpt-4o-mini`` matches ``gpt-4o-mini-2024-07-18``; the longest prefix wins). When a
span with tokens has a model without a price, the cost part is ``not_applicable`` with the model
named (an unknown cost is never reported as cheap), unless the priced spans alone are over the
limit: prices are never negative, so that is a failure whatever the rest cost.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.model import Span, Trace
from stream.gates.base import BaseGate, Evidence, GateOutcome, GateResult, GateSpecBase, Severity
from stream.gates.trace_view import token_totals

_GLOB_CHARS = frozenset("*?[")


class ModelPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_1m: float = Field(ge=0)
    output_per_1m: float = Field(ge=0)


class CostSpec(GateSpecBase):
    type: Literal["cost"] = "cost"
    severity: Severity = "warning"
    max_total_tokens: int | None = Field(default=200_000, gt=0, description="limit on the trace's total tokens")
    max_cost_usd: float | None = Field(default=None, gt=0, description="limit on the trace's cost in USD")
    prices: dict[str, ModelPrice] = Field(default_factory=dict, description="model (or glob/prefix) → price")

    @model_validator(mode="after")
    def _some_limit(self) -> Self:
        if self.max_total_tokens is None and self.max_cost_usd is None:
            raise ValueError("set max_total_tokens and/or max_cost_usd")
        if self.max_cost_usd is not None and not self.prices:
            raise ValueError("max_cost_usd needs a prices table")
        return self


class PriceTable:
    """Model name → price: exact match, then globs (in order), then the longest prefix."""

    def __init__(self, prices: dict[str, ModelPrice]) -> None:
        self.exact = dict(prices)
        self.globs = [(k, p) for k, p in prices.items() if _GLOB_CHARS & set(k)]
        self.prefixes = sorted(((k, p) for k, p in prices.items() if not _GLOB_CHARS & set(k)),
                               key=lambda kp: -len(kp[0]))  # fmt: skip
        self._cache: dict[str, ModelPrice | None] = {}

    def lookup(self, model: str) -> ModelPrice | None:
        if model in self._cache:
            return self._cache[model]
        price = self.exact.get(model)
        if price is None:
            price = next((p for k, p in self.globs if fnmatchcase(model, k)), None)
        if price is None:
            price = next((p for k, p in self.prefixes if model.startswith(k)), None)
        if len(self._cache) < 4096:  # model names are few; bound it anyway
            self._cache[model] = price
        return price


def span_cost(span: Span, price: ModelPrice) -> float:
    return (span.usage.input * price.input_per_1m + span.usage.output * price.output_per_1m) / 1_000_000


class CostGate(BaseGate):
    type = "cost"

    def __init__(self, spec: CostSpec) -> None:
        super().__init__(spec)
        self.max_tokens = spec.max_total_tokens
        self.max_cost = spec.max_cost_usd
        self.prices = PriceTable(spec.prices)

    def evaluate(self, trace: Trace) -> GateResult:
        tokens_in, tokens_out, total = token_totals(trace)
        if not total:
            return self.not_applicable("no token usage recorded")
        parts: list[tuple[GateOutcome, str, list[Evidence]]] = []
        if self.max_tokens is not None:
            over = total > self.max_tokens
            cmp = ">" if over else "<="
            parts.append((GateOutcome.FAIL if over else GateOutcome.PASS, f"{total} tokens {cmp} {self.max_tokens}",
                          [Evidence(None, None, f"{tokens_in} input + {tokens_out} output tokens")]))  # fmt: skip
        if self.max_cost is not None:
            parts.append(self._cost_part(trace, self.max_cost))
        failed = [p for p in parts if p[0] == GateOutcome.FAIL]
        reason = "; ".join(p[1] for p in parts)
        if failed:
            return self.failed(reason, [e for p in failed for e in p[2]])
        if all(p[0] == GateOutcome.NOT_APPLICABLE for p in parts):
            return self.not_applicable(reason)
        return self.passed(reason)

    def _cost_part(self, trace: Trace, limit: float) -> tuple[GateOutcome, str, list[Evidence]]:
        spans = trace.llm_spans or trace.spans
        costs: list[tuple[float, Span, str]] = []
        unknown: dict[str, None] = {}
        for s in spans:
            if not (s.usage.input or s.usage.output):
                continue
            model = s.model or ""
            price = self.prices.lookup(model) if model else None
            if price is None:
                unknown[model or "(no model)"] = None
            else:
                costs.append((span_cost(s, price), s, model))
        total = sum(c for c, _, _ in costs)
        if unknown and total <= limit:  # what the unpriced spans cost could go either way
            return GateOutcome.NOT_APPLICABLE, f"cost unknown: no price for model {', '.join(unknown)}", []
        if total <= limit:
            return GateOutcome.PASS, f"cost ${total:.4f} <= ${limit:g}", []
        top = sorted(costs, key=lambda c: -c[0])
        evidence = [
            Evidence(s.span_id, None, f"{m}: {s.usage.input} in / {s.usage.output} out tokens = ${c:.4f}")
            for c, s, m in top
        ]
        if unknown:  # prices are never negative: the priced spans alone are over the limit
            return (GateOutcome.FAIL, f"cost at least ${total:.4f} > ${limit:g} (no price for model "
                    f"{', '.join(unknown)})", evidence)  # fmt: skip
        return GateOutcome.FAIL, f"cost ${total:.4f} > ${limit:g}", evidence
