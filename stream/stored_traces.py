"""Completed traces rebuilt from ClickHouse, as the worker assembled them.

``tracejudge backfill`` (re-judging) and ``tracejudge policy-diff`` (re-deciding) both start from
stored traces. A trace is its ``spans`` rows (FINAL; :data:`stream.rows.RAW_SPAN_SELECT` /
:func:`stream.rows.span_from_row`, re-normalized; late spans excluded, as from the assembled
trace) and its ``traces`` row (completion, first/last seen); with it come the stored decision,
the failed gates with their evidence (``gate_results``, in ``failed_gates`` order) and the signals
(``signals``), as the worker sent them on ``traces.to_judge``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from schemas.model import CompletionReason, Trace
from stream.rows import RAW_SPAN_SELECT, from_json, span_from_row
from stream.store import ClickHouseStore

#: the ``traces`` columns :func:`load_traces` takes, in this order (``c``: completed_at in ms)
TRACE_ROW_SELECT = (
    "trace_id, toUnixTimestamp64Milli(completed_at) AS c, completion_reason, toUnixTimestamp64Milli(first_seen), "
    "toUnixTimestamp64Milli(last_seen), sample_class, sample_rule, sample_stratum, inclusion_p, policy_version, "
    "failed_gates"
)


def load_traces(store: ClickHouseStore, trace_rows: Sequence[tuple[Any, ...]]) -> list[tuple[Trace, dict[str, Any]]]:
    """Traces and their to_judge meta for :data:`TRACE_ROW_SELECT` rows, in their order (traces
    without stored spans are left out). Sync: call it on the store's thread (``store.run``)."""
    ids = [str(r[0]) for r in trace_rows]
    if not ids:
        return []
    db = store.database
    _, span_rows = store.query(
        f"SELECT {RAW_SPAN_SELECT} FROM {db}.spans FINAL WHERE trace_id IN {{ids:Array(String)}} "
        "AND is_late = 0 ORDER BY trace_id, start_time, span_id", {"ids": ids})  # fmt: skip
    _, gate_rows = store.query(
        f"SELECT trace_id, gate, gate_type, reason, evidence FROM {db}.gate_results FINAL "
        "WHERE trace_id IN {ids:Array(String)} AND outcome = 'fail' ORDER BY trace_id, gate", {"ids": ids})  # fmt: skip
    _, signal_rows = store.query(
        f"SELECT trace_id, type, polarity, source, evidence, message_index FROM {db}.signals FINAL "
        "WHERE trace_id IN {ids:Array(String)} AND is_late = 0 "
        "ORDER BY trace_id, source = 'action', message_index, ts, type, rule, signal_key", {"ids": ids})  # fmt: skip
    spans: dict[str, list[Any]] = defaultdict(list)
    for row in span_rows:
        span, _offset = span_from_row(row)
        spans[span.trace_id].append(span)
    gates: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for tid, gate, gtype, reason, evidence in gate_rows:
        ev = [{"span_id": e.get("span_id"), "text": e.get("text")} for e in from_json(evidence or "[]")]
        gates[str(tid)].append({"gate": gate, "type": gtype, "reason": reason, "evidence": ev})
    signals: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for tid, stype, polarity, source, evidence, index in signal_rows:
        signals[str(tid)].append({"type": stype, "polarity": polarity, "source": source, "evidence": evidence,
                                  "message_index": None if int(index) < 0 else int(index)})  # fmt: skip
    out = []
    for (tid, completed_ms, reason, first_ms, last_ms, cls, rule, stratum, p, pv, failed) in trace_rows:
        if not spans.get(tid):
            continue
        try:
            completion = CompletionReason(reason)
        except ValueError:
            completion = CompletionReason.MAX_AGE
        trace = Trace.fast(trace_id=tid, spans=spans[tid], completion_reason=completion,
                           first_seen_ns=int(first_ms) * 1_000_000, last_seen_ns=int(last_ms) * 1_000_000,
                           completed_ns=int(completed_ms) * 1_000_000)  # fmt: skip
        order = {g: i for i, g in enumerate(failed)}
        meta = {
            "decision": {"class": cls, "rule": rule, "stratum": stratum, "p": float(p), "policy_version": pv},
            "failed_gates": sorted(gates.get(tid, []), key=lambda g: order.get(g["gate"], len(order))),
            "signals": signals.get(tid, []),
        }
        out.append((trace, meta))
    return out
