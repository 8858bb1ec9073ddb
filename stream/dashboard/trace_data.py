"""One trace for the drill-down page: its row, its spans in tree order, verdicts, gates, signals."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from schemas.model import Span
from stream.dashboard.queries import Query
from stream.rows import RAW_SPAN_SELECT, span_from_row

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_SPANS = 1000

TRACE_FIELDS = (
    "service_name", "agent_name", "root_name", "conversation_id", "user_id", "start_ms", "duration_ms",
    "span_count", "error_count", "llm_call_count", "tool_call_count", "total_tokens", "completion_reason",
    "completed_ms", "sample_class", "sample_rule", "sample_stratum", "inclusion_p", "sampled",
    "failed_gates", "gate_errors", "signals",
)  # fmt: skip
VERDICT_FIELDS = (
    "judge", "judge_version", "rubric_hash", "status", "status_reason", "label", "score", "explanation",
    "evidence", "tier", "tiers_called", "escalation", "model", "cost_usd", "judged_ms", "monitoring_only",
    "quarantined", "cache_hit",
)  # fmt: skip


def valid_trace_id(value: str) -> str | None:
    """The canonical (lowercase) id, or None if ``value`` is not 32 hex digits."""
    v = value.strip().lower() if isinstance(value, str) else ""
    return v if TRACE_ID.match(v) else None


@dataclass(frozen=True, slots=True)
class SpanNode:
    span: Span
    depth: int


@dataclass(slots=True)
class TraceDetail:
    trace_id: str
    trace: dict[str, Any] | None
    spans: list[SpanNode] = field(default_factory=list)
    spans_total: int = 0
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    gates: list[tuple[Any, ...]] = field(default_factory=list)
    signals: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.trace is not None or bool(self.spans) or bool(self.verdicts)


def span_tree(spans: list[Span]) -> list[SpanNode]:
    """Depth-first, children by start time; spans whose parent is absent are roots."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[Span]] = {}
    for s in spans:
        parent = s.parent_span_id if s.parent_span_id in ids and s.parent_span_id != s.span_id else None
        children.setdefault(parent, []).append(s)
    for group in children.values():
        group.sort(key=lambda s: (s.start_ns, s.span_id))
    out: list[SpanNode] = []
    seen: set[str] = set()
    stack = [(s, 0) for s in reversed(children.get(None, []))]
    while stack:
        s, depth = stack.pop()
        if s.span_id in seen:
            continue
        seen.add(s.span_id)
        out.append(SpanNode(s, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(s.span_id, [])))
    out.extend(SpanNode(s, 0) for s in spans if s.span_id not in seen)  # cycles: still shown
    return out


def load_trace(query: Query, db: str, trace_id: str) -> TraceDetail:
    params = {"t": trace_id}
    _, rows = query(
        "SELECT service_name, agent_name, root_name, conversation_id, user_id, toUnixTimestamp64Milli(start_time), "
        "duration_ms, span_count, error_count, llm_call_count, tool_call_count, total_tokens, completion_reason, "
        "toUnixTimestamp64Milli(completed_at), sample_class, sample_rule, sample_stratum, inclusion_p, sampled, "
        f"failed_gates, gate_errors, signals FROM {db}.traces FINAL WHERE trace_id = {{t:String}}",
        params,
    )
    detail = TraceDetail(trace_id, dict(zip(TRACE_FIELDS, rows[0], strict=True)) if rows else None)
    _, count = query(f"SELECT count() FROM {db}.spans FINAL WHERE trace_id = {{t:String}}", params)
    detail.spans_total = int(count[0][0]) if count else 0
    _, span_rows = query(
        f"SELECT {RAW_SPAN_SELECT} FROM {db}.spans FINAL WHERE trace_id = {{t:String}} "
        "ORDER BY start_time, span_id LIMIT {n:UInt32}",
        {**params, "n": MAX_SPANS},
    )
    detail.spans = span_tree([span_from_row(tuple(r))[0] for r in span_rows])
    _, vrows = query(
        "SELECT judge, judge_version, rubric_hash, status, status_reason, label, score, explanation, evidence, tier, "
        "tiers_called, escalation, model, cost_usd, toUnixTimestamp64Milli(judged_at), monitoring_only, quarantined, "
        f"cache_hit FROM {db}.verdicts FINAL WHERE trace_id = {{t:String}} ORDER BY judge, judged_at DESC",
        params,
    )
    detail.verdicts = [dict(zip(VERDICT_FIELDS, r, strict=True)) for r in vrows]
    for v in detail.verdicts:
        v["evidence"] = _json_list(v["evidence"])
    _, detail.gates = query(
        f"SELECT gate, gate_type, outcome, severity, reason, evidence FROM {db}.gate_results FINAL "
        "WHERE trace_id = {t:String} ORDER BY gate",
        params,
    )
    _, detail.signals = query(
        f"SELECT source, type, polarity, rule, evidence, message_index, is_late FROM {db}.signals FINAL "
        "WHERE trace_id = {t:String} ORDER BY source, type, signal_key",
        params,
    )
    return detail


def _json_list(text: Any) -> list[str]:
    try:
        doc = json.loads(text or "[]")
    except (TypeError, ValueError):
        return [str(text)]
    if isinstance(doc, list):
        return [x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in doc]
    return [json.dumps(doc, ensure_ascii=False)]


def gate_evidence(text: Any) -> list[str]:
    """Gate evidence (JSON array of {span_id, text, detail}) as short lines."""
    out = []
    for item in _json_list(text):
        try:
            doc = json.loads(item)
        except ValueError:
            out.append(item)
            continue
        if isinstance(doc, dict):
            out.append(" · ".join(str(doc[k]) for k in ("span_id", "text", "detail") if doc.get(k)))
        else:
            out.append(item)
    return out
