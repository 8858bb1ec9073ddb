"""Rows of the judging tables (``schemas/sql/0005_judging.sql``) built from verdicts and calls."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from judges.verdict import Verdict
from schemas.model import Trace

#: ReplacingMergeTree version of a verdict row: a real verdict replaces a placeholder, never the reverse.
STATUS_RANK = {"budget_skipped": 1, "error": 2, "unscored": 3, "ok": 4}

CALL_COLUMNS = (
    "call_id", "ts", "period", "trace_id", "judge", "judge_version", "rubric_hash", "tier", "purpose",
    "provider", "model", "model_reported", "status", "status_reason", "input_tokens", "output_tokens",
    "cost_usd", "latency_s", "attempts", "kafka_partition", "worker_run", "input_hash", "result",
)  # fmt: skip

VERDICT_COLUMNS = (
    "trace_id", "judge", "rubric_hash", "judge_version", "status", "status_reason", "label", "score",
    "explanation", "evidence", "tier", "tiers_called", "escalated", "escalation", "provider", "model",
    "model_reported", "temperature", "seed", "input_tokens", "output_tokens", "cost_usd", "latency_s",
    "attempts", "input_hash", "cache_hit", "monitoring_only", "quarantined", "sample_class",
    "sample_stratum", "inclusion_p", "policy_version", "service_name", "agent_name", "purpose",
    "judged_at", "kafka_partition", "kafka_offset", "version",
)  # fmt: skip

BACKLOG_COLUMNS = (
    "trace_id", "judge", "rubric_hash", "state", "reason", "envelope", "kafka_partition", "deferred_at",
    "updated_at",
)  # fmt: skip

REJUDGE_COLUMNS = (
    "trace_id", "judge", "rubric_hash", "model", "first_label", "second_label", "agree", "judged_at",
)  # fmt: skip

ALERT_COLUMNS = ("alert_id", "kind", "judge", "rubric_hash", "state", "message", "details", "created_at")

#: ``json.dumps(o, ensure_ascii=False)`` without building an encoder per call (same text)
_dumps = json.JSONEncoder(ensure_ascii=False).encode


def _json_list(items: list[str]) -> str:
    return _dumps(items) if items else "[]"


def result_json(v: Verdict) -> str:
    """What the verdict cache keeps of an ok call."""
    if v.status != "ok":
        return ""
    return _dumps({"label": v.label, "score": v.score, "explanation": v.explanation, "evidence": v.evidence})


@dataclass(frozen=True, slots=True)
class CallContext:
    """Where a call came from and whose budget it used."""

    purpose: str  # live | backlog | flake | drift | calibration
    partition: int
    offset: int = -1
    worker_run: str = ""


def call_row(call_id: str, ts_ms: int, period: int, tier: str, input_hash: str, ctx: CallContext, v: Verdict) -> tuple[Any, ...]:
    return (
        call_id, ts_ms, period, v.trace_id, v.judge, v.judge_version, v.rubric_hash, tier, ctx.purpose,
        v.provider, v.model, v.model_reported or "", v.status, v.status_reason, v.input_tokens,
        v.output_tokens, v.cost_usd, v.latency_s, v.attempts, ctx.partition, ctx.worker_run, input_hash,
        result_json(v),
    )  # fmt: skip


@dataclass(slots=True)
class VerdictRecord:
    """The final verdict of one (trace, judge, rubric version) with what the cascade did."""

    verdict: Verdict
    tier: str = ""
    tiers_called: list[str] = field(default_factory=list)
    escalation: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    attempts: int = 0
    input_hash: str = ""
    cache_hit: bool = False
    monitoring_only: bool = False
    quarantined: bool = False


def verdict_row(r: VerdictRecord, trace: Trace, meta: Mapping[str, Any], ctx: CallContext, judged_ms: int) -> tuple[Any, ...]:
    v = r.verdict
    d = meta.get("decision") or {}
    return (
        v.trace_id, v.judge, v.rubric_hash, v.judge_version, v.status, v.status_reason, v.label, v.score,
        v.explanation, _json_list(v.evidence), r.tier, r.tiers_called,
        1 if len(r.tiers_called) > 1 else 0, r.escalation, v.provider, v.model, v.model_reported or "",
        v.temperature, v.seed, r.input_tokens, r.output_tokens, r.cost_usd, r.latency_s, r.attempts,
        r.input_hash, 1 if r.cache_hit else 0, 1 if r.monitoring_only else 0, 1 if r.quarantined else 0,
        str(d.get("class") or ""), str(d.get("stratum") or ""), float(d.get("p") or 0.0),
        str(d.get("policy_version") or ""), trace.service_name, trace.agent_name or "", ctx.purpose,
        judged_ms, ctx.partition, ctx.offset, STATUS_RANK[v.status],
    )  # fmt: skip
