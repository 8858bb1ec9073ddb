"""A judge defined by a rubric: prompt → provider → output validated in code → ``Verdict``.

Never raises for a bad trace, a bad answer or a failing provider: invalid model output becomes an
``unscored`` verdict, a provider error an ``error`` verdict; neither ever carries a label.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from judges.prompt import DEFAULT_MAX_VALUE_CHARS, build_request, request_from_values
from judges.providers.base import ChatResponse, Provider, ProviderError
from judges.providers.jsonio import loads
from judges.rubric import Rubric
from judges.verdict import Verdict
from schemas.model import Trace
from stream.prices import ModelPrice

log = logging.getLogger(__name__)

MAX_EXPLANATION_CHARS = 4000
MAX_EVIDENCE_ITEMS = 20
MAX_EVIDENCE_CHARS = 2000
_FENCE = re.compile(r"\A```(?:json)?[ \t]*\n(.*?)\n?```\Z", re.DOTALL | re.IGNORECASE)


class InvalidOutput(ValueError):
    """The model's answer does not satisfy the rubric's output contract."""


@dataclass(frozen=True, slots=True)
class ParsedOutput:
    label: str
    score: float
    explanation: str
    evidence: list[str]


def parse_output(text: str, labels: list[str]) -> ParsedOutput:
    """Strict JSON (or exactly one ```json fenced block) with a known label and a score in [0, 1]."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        doc = loads(body)  # json.loads, by orjson when that reads the same
    except (json.JSONDecodeError, RecursionError):
        raise InvalidOutput("not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidOutput(f"expected an object, got {type(doc).__name__}")
    missing = [k for k in ("label", "score", "explanation") if k not in doc]
    if missing:
        raise InvalidOutput(f"missing fields {missing}")
    label, score, explanation = doc["label"], doc["score"], doc["explanation"]
    if not isinstance(label, str) or label not in labels:
        raise InvalidOutput(f"label {str(label)[:40]!r} not in {labels}")
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise InvalidOutput("score is not a number")
    if not 0.0 <= score <= 1.0:
        raise InvalidOutput(f"score {score} outside [0, 1]")
    if not isinstance(explanation, str) or not explanation.strip():
        raise InvalidOutput("explanation is not a non-empty string")
    if len(explanation) > MAX_EXPLANATION_CHARS:
        raise InvalidOutput(f"explanation longer than {MAX_EXPLANATION_CHARS} chars")
    evidence = doc.get("evidence", [])
    if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
        raise InvalidOutput("evidence is not a list of strings")
    if len(evidence) > MAX_EVIDENCE_ITEMS:
        raise InvalidOutput(f"more than {MAX_EVIDENCE_ITEMS} evidence items")
    return ParsedOutput(label, float(score), explanation.strip(), [e[:MAX_EVIDENCE_CHARS] for e in evidence])


class RubricJudge:
    """``await judge(trace, meta)`` → :class:`Verdict` for one rubric on one provider/model."""

    def __init__(
        self,
        rubric: Rubric,
        provider: Provider,
        model: str,
        tier: str = "cheap",
        *,
        defended: bool = True,
        max_value_chars: int = DEFAULT_MAX_VALUE_CHARS,
        price: ModelPrice | None = None,
    ) -> None:
        """``price``: of ``model`` (judges/pricing.py resolves it per tier); None: the provider's own."""
        if tier not in rubric.tiers:
            raise ValueError(f"rubric {rubric.name!r} does not run on tier {tier!r} (tiers: {rubric.tiers})")
        self.rubric = rubric
        self.provider = provider
        self.model = model
        self.tier = tier
        self.defended = defended
        self.max_value_chars = max_value_chars
        self._cost = price.cost if price is not None else provider.cost_usd

    @property
    def name(self) -> str:
        return self.rubric.name

    def applies(self, trace: Trace, meta: Mapping[str, Any]) -> bool:
        return self.rubric.applies(meta, service=trace.service_name, agent=trace.agent_name)

    def _common(self, trace_id: str) -> dict[str, Any]:
        return {
            "trace_id": trace_id,
            "judge": self.rubric.name,
            "judge_version": self.rubric.version,
            "rubric_hash": self.rubric.rubric_hash,
            "provider": self.provider.name,
            "model": self.model,
            "temperature": self.rubric.params.temperature,
            "seed": self.rubric.params.seed,
        }

    def _usage(self, resp: ChatResponse) -> dict[str, Any]:
        return {
            "model_reported": resp.model,
            "input_tokens": resp.input_tokens,
            "output_tokens": resp.output_tokens,
            "cost_usd": self._cost(resp.input_tokens, resp.output_tokens),
            "latency_s": resp.latency_s,
            "attempts": resp.attempts,
        }

    def estimate_usd(self, values: Mapping[str, str]) -> float:
        """An upper estimate of one call's cost: prompt ~ chars/3 tokens, plus one more token per
        two UTF-8 bytes beyond the first of each character (CJK text and emoji take a token or more
        per character, where chars/3 alone reserved a third of what such a call costs), plus fixed
        instructions; output at the rubric's ``max_tokens`` (what a budget reserves before the call)."""
        texts = [self.rubric.template, *values.values()]
        chars = sum(len(t) for t in texts)
        wide = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) - chars  # 0 for ASCII
        return self._cost(chars // 3 + wide // 2 + 600, self.rubric.params.max_tokens)

    async def __call__(
        self, trace: Trace, meta: Mapping[str, Any], values: Mapping[str, str] | None = None
    ) -> Verdict:
        """Judge ``trace``; ``values`` (from :func:`judges.prompt.extract_values`) skips re-extraction."""
        common = self._common(trace.trace_id)
        try:
            if values is not None:
                req = request_from_values(self.rubric, values, model=self.model, defended=self.defended)
            else:
                req = build_request(
                    self.rubric, trace, meta, model=self.model, defended=self.defended,
                    max_value_chars=self.max_value_chars,
                )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - an odd trace must not stop the judge loop
            log.warning("judge %s: prompt failed on trace %s: %r", self.name, trace.trace_id, exc)
            return Verdict.error(reason=f"prompt_error: {type(exc).__name__}: {exc}"[:500], **common)
        try:
            resp = await self.provider.complete(req)
        except ProviderError as exc:
            return Verdict.error(reason=f"provider_{exc.kind}: {exc}"[:500], attempts=exc.attempts, **common)
        usage = self._usage(resp)  # a refusal or an unusable answer was billed all the same: recorded
        if resp.refusal is not None:
            return Verdict.unscored(reason=f"refused: {resp.refusal}"[:500], **common, **usage)
        try:
            out = parse_output(resp.text, self.rubric.labels)
        except InvalidOutput as exc:
            cut = (f" (cut at max_tokens {self.rubric.params.max_tokens})"
                   if resp.stop_reason in ("length", "max_tokens") else "")  # fmt: skip
            return Verdict.unscored(reason=f"invalid_output: {exc}{cut}"[:500], **common, **usage)
        return Verdict(
            label=out.label, score=out.score, explanation=out.explanation, evidence=out.evidence,
            status="ok", **common, **usage,
        )  # fmt: skip
