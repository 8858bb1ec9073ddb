"""Rows and messages for a trace's decision: gate results, signals, and the to-judge envelope."""

from __future__ import annotations

from typing import Any

from schemas.model import Trace
from stream import judge_envelope
from stream.assembly import CompletedTrace
from stream.decide import TraceDecision
from stream.gates.base import GateOutcome
from stream.rows import to_json

GATE_COLUMNS = (
    "trace_id", "gate", "gate_type", "outcome", "severity", "reason", "evidence", "policy_version",
    "service_name", "agent_name", "completed_at",
)  # fmt: skip
SIGNAL_COLUMNS = (
    "trace_id", "source", "type", "polarity", "rule", "signal_key", "evidence", "span_id",
    "message_index", "language", "is_late", "policy_version", "ts",
)  # fmt: skip


def _enum(v: Any) -> str:
    return str(getattr(v, "value", v))


def gate_rows(c: CompletedTrace, d: TraceDecision) -> list[tuple[Any, ...]]:
    t = c.trace
    completed_ms = t.completed_ns // 1_000_000
    return [
        (
            t.trace_id, r.gate, r.type, _enum(r.outcome), _enum(r.severity), r.reason,
            to_json([{"span_id": e.span_id, "text": e.text, "detail": e.detail} for e in r.evidence]),
            d.decision.policy_version, t.service_name, t.agent_name or "", completed_ms,
        )  # fmt: skip
        for r in d.gate_results
        if r.outcome in (GateOutcome.FAIL, GateOutcome.ERROR)
    ]


def signal_rows(c: CompletedTrace, d: TraceDecision) -> list[tuple[Any, ...]]:
    t = c.trace
    completed_ms = t.completed_ns // 1_000_000
    rows = []
    for s in d.signals:
        if s.key is not None:
            key = s.key  # an action event's id: what EventJoiner looks for to tell what a decision saw
        elif s.message_index is not None:
            key = str(s.message_index)
        else:
            key = s.span_id or str(s.ts_ns or "")
        ts = s.ts_ns // 1_000_000 if s.ts_ns else completed_ms
        rows.append((
            t.trace_id, s.source, s.type, s.polarity, s.rule, key, s.evidence or "", s.span_id or "",
            s.message_index if s.message_index is not None else -1, s.language or "", 0,
            d.decision.policy_version, ts,
        ))  # fmt: skip
    return rows


def decision_columns(d: TraceDecision | None) -> tuple[Any, ...]:
    if d is None:
        return ("", "", "", 0.0, 0, "", [], [], [])
    x = d.decision
    return (
        x.sample_class, x.rule, x.stratum, float(x.p), 1 if x.sampled else 0, x.policy_version,
        d.failed_gates, d.gate_errors + d.miner_errors, sorted({s.type for s in d.signals}),
    )


DECISION_COLUMNS = (
    "sample_class", "sample_rule", "sample_stratum", "inclusion_p", "sampled", "policy_version",
    "failed_gates", "gate_errors", "signals",
)  # fmt: skip


def encode_for_judges(trace: Trace, d: TraceDecision | None, max_bytes: int | None = None) -> bytes:
    """The to_judge envelope; larger than ``max_bytes`` (``max_judge_message_bytes``), its spans go
    by reference (:mod:`stream.judge_envelope`) — they are in ClickHouse before it is produced."""
    meta: dict[str, Any] = {}
    if d is not None:
        x = d.decision
        meta = {
            "decision": {"class": x.sample_class, "rule": x.rule, "stratum": x.stratum, "p": x.p,
                         "policy_version": x.policy_version},  # fmt: skip
            "failed_gates": [
                {"gate": r.gate, "type": r.type, "reason": r.reason,
                 "evidence": [{"span_id": e.span_id, "text": e.text} for e in r.evidence]}  # fmt: skip
                for r in d.gate_results
                if r.outcome == GateOutcome.FAIL
            ],
            "signals": [
                {"type": s.type, "polarity": s.polarity, "source": s.source, "evidence": s.evidence,
                 "message_index": s.message_index}  # fmt: skip
                for s in d.signals
            ],
        }
    return judge_envelope.encode(trace, meta, max_bytes)
