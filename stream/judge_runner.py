"""Judging one trace with one rubric: budget ladder, verdict cache, cascade, flake re-judge.

:class:`JudgeRunner` is plain async Python (no Kafka, no ClickHouse): the runtime
(:mod:`stream.judging`) gives it a decoded trace and collects what it returns — the final verdict
record, the ledger rows of every paid call, and optionally a backlog entry and a flake pair.

Budget ladder (per partition share, see :mod:`judges.budget`), applied before any call:
``NO_SUCCESS`` → success samples get a ``budget_skipped`` verdict; ``CHEAP_ONLY`` → no escalation;
``DEFER`` (or a reservation that does not fit) → ``budget_skipped`` and, for anything but a success
sample, a backlog entry judged later. A provider that answered 401/403/404 is paused
(``pause_probe_s``); its traces get an ``error`` verdict and a backlog entry, never a label.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from judges.budget import BudgetBook, Level
from judges.cascade import escalation_reason, required
from judges.config import JudgingConfig
from judges.flake import FlakeTracker
from judges.prompt import extract_values, input_hash
from judges.rubric import Rubric
from judges.rubric_judge import RubricJudge
from judges.verdict import Verdict
from schemas.model import Trace
from stream.judge_rows import CallContext, VerdictRecord, call_row

log = logging.getLogger(__name__)

#: provider error kinds worth judging again later (the backlog): the provider, not the trace, failed
TRANSIENT = ("provider_rate_limited", "provider_server", "provider_timeout", "provider_network",
             "provider_circuit_open", "provider_deadline")  # fmt: skip
CACHE_SIZE = 50_000


@dataclass(slots=True)
class Outcome:
    record: VerdictRecord
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    backlog_reason: str | None = None
    rejudge: tuple[str, str, str] | None = None  # (model, first label, second label)
    alerts: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, message, details json)


@dataclass(slots=True)
class Pause:
    until: float
    message: str


class JudgeRunner:
    def __init__(
        self,
        cfg: JudgingConfig,
        judges: Mapping[str, Mapping[str, RubricJudge]],  # rubric name -> tier -> judge
        budget: BudgetBook,
        flake: FlakeTracker,
        *,
        clock: Callable[[], float] = time.time,
        worker_run: str = "",
        on_call: Callable[[tuple[Any, ...]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        #: called with each paid call's ledger row as soon as the call returns, so the runtime can
        #: put it on the ledger without waiting for the rest of the batch (``Outcome.calls`` keeps it too)
        self.on_call = on_call
        self.judges = judges
        self.budget = budget
        self.flake = flake
        self.clock = clock
        self.worker_run = worker_run or uuid.uuid4().hex[:12]
        self.semaphore = asyncio.Semaphore(cfg.max_in_flight)
        self.paused: dict[str, Pause] = {}  # provider name -> pause
        self.monitoring_only: set[tuple[str, str]] = set()  # (judge, rubric_hash)
        self.tiers_disagree: set[tuple[str, str]] = set()  # (judge, rubric_hash) from calibration
        self.cache: OrderedDict[tuple[str, str, str], dict[str, Any]] = OrderedDict()
        self.stats: dict[str, int] = {
            "calls": 0, "cache_hits": 0, "escalations": 0, "budget_skipped": 0, "deferred": 0,
            "paused_skips": 0, "flake_pairs": 0,
        }  # fmt: skip

    # ---- state ------------------------------------------------------------------------------
    def remember(self, key: tuple[str, str, str], result: Mapping[str, Any]) -> None:
        self.cache[key] = dict(result)
        self.cache.move_to_end(key)
        while len(self.cache) > CACHE_SIZE:
            self.cache.popitem(last=False)

    def pause(self, provider: str, message: str) -> str | None:
        """Pause ``provider``; returns an alert message when it was not already paused."""
        was = self.paused.get(provider)
        self.paused[provider] = Pause(self.clock() + self.cfg.pause_probe_s, message)
        if was is not None and was.until > self.clock():
            return None
        log.error("JUDGE PAUSED: provider %r rejected our configuration (%s); its judges are paused "
                  "for %.0fs and their traces go to the backlog. Fix the API key / model name.",
                  provider, message, self.cfg.pause_probe_s)  # fmt: skip
        return f"provider {provider} paused: {message}"

    def _paused(self, provider: str) -> Pause | None:
        p = self.paused.get(provider)
        return p if p is not None and p.until > self.clock() else None

    def applicable(self, trace: Trace, meta: Mapping[str, Any]) -> list[Rubric]:
        out = []
        for tiers in self.judges.values():
            first = next(iter(tiers.values()))
            if first.applies(trace, meta):
                out.append(first.rubric)
        return out

    # ---- one (trace, rubric) ----------------------------------------------------------------
    async def run(self, trace: Trace, meta: Mapping[str, Any], rubric: Rubric, ctx: CallContext,
                  cached: Mapping[tuple[str, str, str], Mapping[str, Any]] | None = None,
                  values: Mapping[str, str] | None = None, ih: str | None = None) -> Outcome:  # fmt: skip
        """Never raises for a bad trace or a failing provider (see the module docstring). ``ih`` is
        ``input_hash(values)`` when the caller has it already."""
        tiers = self.judges[rubric.name]
        order = [t for t in self.cfg.tier_order(rubric) if t in tiers]
        first = tiers[order[0]]
        if values is None:
            values = extract_values(rubric, trace, meta, self.cfg.max_value_chars)
        if ih is None:
            ih = input_hash(values)
        common = {"trace_id": trace.trace_id, "judge": rubric.name, "judge_version": rubric.version,
                  "rubric_hash": rubric.rubric_hash, "provider": first.provider.name, "model": first.model,
                  "temperature": rubric.params.temperature, "seed": rubric.params.seed}  # fmt: skip
        flags = {"input_hash": ih, "monitoring_only": (rubric.name, rubric.rubric_hash) in self.monitoring_only,
                 "quarantined": self.flake.quarantined(rubric.name, rubric.rubric_hash)}  # fmt: skip
        sample_class = str((meta.get("decision") or {}).get("class") or "")
        failure_like = sample_class != "success"
        level = self.budget.level(ctx.partition, rubric.name)

        def skipped(reason: str, backlog: bool) -> Outcome:
            self.stats["budget_skipped"] += 1
            self.stats["deferred"] += int(backlog)
            rec = VerdictRecord(Verdict.budget_skipped(reason=reason, **common), tier=order[0], **flags)
            return Outcome(rec, backlog_reason=reason if backlog else None)

        if level >= Level.NO_SUCCESS and not failure_like and ctx.purpose == "live":
            return skipped(f"budget: success samples stopped ({level.name} of this partition's share)", False)
        if level >= Level.DEFER:
            return skipped("budget: share exhausted, deferred to the backlog", failure_like)
        if level >= Level.CHEAP_ONLY:
            order = order[:1]

        out = Outcome(VerdictRecord(Verdict.error(reason="no tier ran", **common)))
        calls: list[tuple[str, Verdict, bool]] = []  # (tier, verdict, cache hit)
        escalation = ""
        must = required(self.cfg.cascade, rubric, meta, service=trace.service_name, agent=trace.agent_name)
        disagree = (rubric.name, rubric.rubric_hash) in self.tiers_disagree
        for i, tier in enumerate(order):
            judge = tiers[tier]
            paused = self._paused(judge.provider.name)
            if paused is not None:
                if i == 0:
                    self.stats["paused_skips"] += 1
                    v = Verdict.error(reason=f"judge_paused: {paused.message}"[:500], **common)
                    out.record = VerdictRecord(v, tier=tier, **flags)
                    out.backlog_reason = "judge_paused"
                    return out
                escalation += "; next tier paused"
                break
            v, hit = await self._call(judge, tier, trace, meta, values, ih, ctx, cached, out)
            if v is None:  # the budget did not allow this call
                if i == 0:
                    return skipped("budget: call does not fit the remaining share, deferred", failure_like)
                escalation += "; stopped by budget"
                break
            calls.append((tier, v, hit))
            if v.status == "error" and v.status_reason.startswith("provider_config"):
                alert = self.pause(judge.provider.name, v.status_reason)
                if alert:
                    out.alerts.append(("paused", alert, ""))
            if i == len(order) - 1:
                break
            reason = escalation_reason(self.cfg.cascade, rubric, v, is_required=must, tiers_disagree=disagree)
            if reason is None:
                break
            escalation = reason
            self.stats["escalations"] += 1
        final_tier, final, final_hit = _final(calls)
        out.record = VerdictRecord(
            final, tier=final_tier, tiers_called=[t for t, _, _ in calls], escalation=escalation.strip("; "),
            input_tokens=sum(v.input_tokens for _, v, _ in calls), output_tokens=sum(v.output_tokens for _, v, _ in calls),
            cost_usd=sum(v.cost_usd for _, v, _ in calls), latency_s=sum(v.latency_s for _, v, _ in calls),
            attempts=sum(v.attempts for _, v, _ in calls), cache_hit=final_hit, **flags,
        )  # fmt: skip
        if final.status == "error" and final.status_reason.startswith(TRANSIENT + ("judge_paused", "provider_config")):
            out.backlog_reason = final.status_reason.split(":", 1)[0]
        if (final.status == "ok" and not final_hit and ctx.purpose == "live" and level == Level.NORMAL
                and self.flake.selected(trace.trace_id, rubric.name)):
            await self._rejudge(tiers[final_tier], final_tier, trace, meta, values, ih, ctx, final, out)
        return out

    async def _call(self, judge: RubricJudge, tier: str, trace: Trace, meta: Mapping[str, Any],
                    values: Mapping[str, str], ih: str, ctx: CallContext,
                    cached: Mapping[tuple[str, str, str], Mapping[str, Any]] | None,
                    out: Outcome, *, use_cache: bool = True) -> tuple[Verdict | None, bool]:  # fmt: skip
        key = (judge.rubric.rubric_hash, judge.model, ih)
        hit = (self.cache.get(key) or (cached or {}).get(key)) if (self.cfg.cache and use_cache) else None
        if hit is not None:
            self.stats["cache_hits"] += 1
            v = Verdict(
                trace_id=trace.trace_id, judge=judge.rubric.name, judge_version=judge.rubric.version,
                rubric_hash=judge.rubric.rubric_hash, provider=judge.provider.name, model=judge.model,
                model_reported=hit.get("model_reported") or None, temperature=judge.rubric.params.temperature,
                seed=judge.rubric.params.seed, label=hit["label"], score=hit.get("score"),
                explanation=hit.get("explanation", ""), evidence=list(hit.get("evidence") or []),
                status="ok", status_reason="cache_hit",
            )  # fmt: skip
            return v, True
        reservation = self.budget.try_reserve(ctx.partition, judge.rubric.name, judge.estimate_usd(values))
        if reservation is None:
            return None, False
        try:
            async with self.semaphore:
                v = await judge(trace, meta, values)
        except BaseException:  # cancelled mid-call: it may have been paid, count the estimate
            self.budget.settle(reservation, reservation.amount_usd)
            raise
        self.budget.settle(reservation, v.cost_usd)
        self.stats["calls"] += 1
        now = self.clock()
        row = call_row(uuid.uuid4().hex, int(now * 1000), reservation.period, tier, ih, ctx, v)
        out.calls.append(row)
        if self.on_call is not None:
            self.on_call(row)
        if v.status == "ok" and ctx.purpose in ("live", "backlog", "backfill"):
            self.remember(key, {"label": v.label, "score": v.score, "explanation": v.explanation,
                                "evidence": v.evidence, "model_reported": v.model_reported})  # fmt: skip
        return v, False

    async def _rejudge(self, judge: RubricJudge, tier: str, trace: Trace, meta: Mapping[str, Any],
                       values: Mapping[str, str], ih: str, ctx: CallContext, first: Verdict, out: Outcome) -> None:  # fmt: skip
        flake_ctx = CallContext("flake", ctx.partition, ctx.offset, ctx.worker_run)
        v, _ = await self._call(judge, tier, trace, meta, values, ih, flake_ctx, None, out, use_cache=False)
        if v is None or v.status != "ok":
            return
        self.stats["flake_pairs"] += 1
        out.rejudge = (judge.model, first.label or "", v.label or "")
        name, h = judge.rubric.name, judge.rubric.rubric_hash
        if self.flake.add(name, h, first.label or "", v.label or ""):
            out.record.quarantined = True
            msg = f"judge {name} ({h[:12]}) quarantined: self-disagreement above {self.cfg.flake.max_disagreement:.0%}"
            log.error("JUDGE QUARANTINED: %s", msg)
            out.alerts.append(("quarantine", msg, ""))


def _final(calls: list[tuple[str, Verdict, bool]]) -> tuple[str, Verdict, bool]:
    """The last tier's ok verdict; if the stronger tier failed, the cheaper ok one; else the last."""
    for tier, v, hit in reversed(calls):
        if v.status == "ok":
            return tier, v, hit
    return calls[-1]

