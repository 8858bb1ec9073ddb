"""``tracejudge export-cases``: judged failures as offline eval cases, in a versioned dataset.

A *case* is one failing trace, written so an eval harness can replay it: what the agent saw
(``input``: the conversation as normalized messages, the system instructions, the tool payloads),
what it answered (``observed_output``), how it was graded (``grader``: the rubric version, or the
gate rule for a failure only a gate caught), the verdict and the evidence (failed gates and
signals), and ``expected_output: null`` for a human to fill in.

Selection (all values in SQL are validated here first: hex ids, parsed datetimes, names):

* verdicts: ``verdicts FINAL`` with status ``ok``, the given label (default ``fail``), judged in
  ``[since, until)``, optionally one judge; one case per (trace, judge, rubric hash);
* gate-only failures (unless ``judge`` is given or the label is not ``fail``): traces completed in
  ``[since, until)`` with a failed gate and no ``ok`` verdict with the label, from any judge;
  one case per trace, graded by its most severe failed gate.

Each trace is joined with its ``traces FINAL`` row (a verdict without one is skipped and counted)
and rebuilt from ``spans FINAL`` (not late spans: what the judge saw) through
:func:`stream.rows.span_from_row`.

The dataset directory holds one subdirectory per set (``blocking``, ``monitoring``, ``backlog``;
assigned by ordered rules, first match wins, see :func:`parse_rules`) with ``<id>.yaml`` per case,
or ``cases.jsonl`` per set, plus ``manifest.json`` (every case id, set, file and sha256, and the
dataset version = a hash of them) and ``CHANGELOG.md`` (one entry per export that changed
something). The dataset is cumulative: an export adds and updates the cases it selects and leaves
the others. Exports are deterministic (ids from content, ``created_at`` = judged_at, no wall
clock anywhere), so re-exporting the same data changes no byte. ``expected_output``, a set
``owner`` and any key a human added to a case are kept when the case is exported again. A
gate-only case whose trace has since been judged ``fail`` is replaced by the verdict's case (which
takes what a human wrote in it), not kept beside it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal


from schemas.model import CompletionReason, Message, Trace
from stream.gates import trace_view
from stream.rows import RAW_SPAN_SELECT, span_from_row
from schemas.user_messages import user_messages
from stream.case_rules import DEFAULT_SET, SEVERITY_RANK, SetRule, assign_set
from stream.export_dataset import (  # noqa: F401 - re-exported for callers of this module
    CASE_FORMAT_VERSION,
    SETS,
    Dataset,
    ExportError,
    iso_ms,
    parse_time,
)

Query = Callable[[str], tuple[list[str], list[Any]]]

HUMAN_FIELDS = ("expected_output", "owner")  # kept from the existing case when set
_CHUNK = 200  # traces per round of span / gate / signal queries
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\- ]{0,63}$")
_DB = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # as stream.store accepts
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


# ---- validated SQL values ---------------------------------------------------------------------


def _id_list(ids: Iterable[str]) -> str:
    ids = list(ids)
    for t in ids:
        if not _HEX32.match(t):
            raise ExportError(f"not a 32-hex trace id: {t[:64]!r}")
    return ", ".join(f"'{t}'" for t in ids)  # validated hex only: nothing to escape


@dataclass(frozen=True)
class ExportOptions:
    since: str
    until: str
    judge: str | None = None
    label: str = "fail"
    fmt: Literal["yaml", "jsonl"] = "yaml"
    owner: str | None = None
    rules: list[SetRule] = field(default_factory=list)

    def window(self) -> tuple[int, int]:
        """Validate every option that reaches SQL or the files; the window as Unix milliseconds."""
        since, until = parse_time(self.since), parse_time(self.until)
        if until <= since:
            raise ExportError("--until must be after --since")
        if self.judge is not None and not _NAME.match(self.judge):
            raise ExportError(f"not a judge name: {self.judge[:64]!r}")
        if not _LABEL.match(self.label):
            raise ExportError(f"not a label: {self.label[:64]!r}")
        if self.fmt not in ("yaml", "jsonl"):
            raise ExportError(f"unknown format {self.fmt!r} (yaml | jsonl)")
        return since, until


# ---- selection ----------------------------------------------------------------------------------


@dataclass
class Selected:
    """One case to build: a verdict (``judge`` set) or a trace's gate-only failure."""

    trace_id: str
    created_ms: int
    judge: str | None = None
    rubric_hash: str = ""
    judge_version: str = ""
    verdict: dict[str, Any] = field(default_factory=dict)
    gate: str = ""  # gate-only: the grading rule
    policy_version: str = ""


def _select(query: Query, db: str, o: ExportOptions) -> list[Selected]:
    since, until = o.window()  # every value below is validated there
    judge_sql = f" AND judge = '{o.judge}'" if o.judge else ""
    _, rows = query(
        "SELECT trace_id, judge, rubric_hash, judge_version, label, score, explanation, evidence, model, tier, "
        f"monitoring_only, quarantined, toUnixTimestamp64Milli(judged_at) AS ms FROM {db}.verdicts FINAL "
        f"WHERE status = 'ok' AND label = '{o.label}'{judge_sql} AND ms >= {since} AND ms < {until} "
        "ORDER BY trace_id, judge, rubric_hash"
    )
    out = []
    for tid, judge, rhash, jver, label, score, expl, evidence, model, tier, mon, quar, ms in rows:
        verdict = {
            "label": label, "score": score, "confidence": _confidence(str(rhash), label, score),
            "explanation": expl, "evidence": _json_list(evidence), "model": model, "tier": tier,
            "monitoring_only": bool(mon), "quarantined": bool(quar),
        }  # fmt: skip
        out.append(Selected(str(tid), int(ms), str(judge), str(rhash), str(jver), verdict))
    if o.judge is None and o.label == "fail":
        _, rows = query(
            "SELECT trace_id, gate, severity, reason, policy_version, toUnixTimestamp64Milli(completed_at) AS ms "
            f"FROM {db}.gate_results FINAL WHERE outcome = 'fail' AND ms >= {since} AND ms < {until} "
            f"AND trace_id NOT IN (SELECT trace_id FROM {db}.verdicts FINAL WHERE status = 'ok' AND label = 'fail') "
            "ORDER BY trace_id, gate"
        )
        primary: dict[str, tuple[Any, ...]] = {}
        for r in rows:  # the most severe failed gate grades the case (ties: first by name)
            best = primary.get(r[0])
            if best is None or SEVERITY_RANK.get(r[2], -1) > SEVERITY_RANK.get(best[2], -1):
                primary[r[0]] = r
        for tid, (_, gate, _sev, reason, policy, ms) in sorted(primary.items()):
            verdict = {"label": "fail", "score": None, "confidence": None, "explanation": reason,
                       "evidence": [], "model": None, "tier": None}  # fmt: skip
            out.append(Selected(str(tid), int(ms), gate=str(gate), policy_version=str(policy), verdict=verdict))
    return out


_FIRST_LABELS: dict[str, str] | None = None


def _confidence(rubric_hash: str, label: Any, score: Any) -> float | None:
    """As the cascade computes it: ``score`` for the rubric's first label, ``1 - score`` for any
    other. The first label is taken from the built-in rubric with this hash, else ``pass``."""
    global _FIRST_LABELS
    if score is None:
        return None
    if _FIRST_LABELS is None:
        from judges.rubric import builtin_rubrics

        _FIRST_LABELS = {r.rubric_hash: r.labels[0] for r in builtin_rubrics().values()}
    first = _FIRST_LABELS.get(rubric_hash, "pass")
    return round(float(score) if label == first else 1.0 - float(score), 6)


def _json_list(text: Any) -> list[Any]:
    try:
        value = json.loads(text) if text else []
    except (TypeError, ValueError):
        return [text]
    return value if isinstance(value, list) else [value]


# ---- context of the selected traces -------------------------------------------------------------


@dataclass
class TraceContext:
    info: dict[str, Any]
    trace: Trace
    gates: list[dict[str, Any]]
    signals: list[dict[str, Any]]


def _load_context(query: Query, db: str, ids: list[str]) -> dict[str, TraceContext]:
    """Trace rows, spans (rebuilt), failed gates and signals of ``ids``; ids without a trace row
    or without spans are absent."""
    idl = _id_list(ids)
    _, trows = query(
        "SELECT trace_id, service_name, agent_name, completion_reason, "
        f"toUnixTimestamp64Milli(completed_at) FROM {db}.traces FINAL WHERE trace_id IN ({idl})"
    )
    _, srows = query(
        f"SELECT {RAW_SPAN_SELECT} FROM {db}.spans FINAL WHERE trace_id IN ({idl}) AND is_late = 0 "
        "ORDER BY trace_id, start_time, span_id"
    )
    _, grows = query(
        "SELECT trace_id, gate, gate_type, severity, reason, evidence FROM "
        f"{db}.gate_results FINAL WHERE trace_id IN ({idl}) AND outcome = 'fail' ORDER BY trace_id, gate"
    )
    _, sigrows = query(
        "SELECT trace_id, source, type, polarity, rule, evidence, span_id, message_index, is_late FROM "
        f"{db}.signals FINAL WHERE trace_id IN ({idl}) ORDER BY trace_id, source, type, rule, signal_key"
    )
    spans: dict[str, list[Any]] = {}
    for row in srows:
        spans.setdefault(str(row[0]), []).append(span_from_row(tuple(row))[0])
    gates: dict[str, list[dict[str, Any]]] = {}
    for tid, gate, gtype, sev, reason, evidence in grows:
        gates.setdefault(str(tid), []).append(
            {"gate": gate, "type": gtype, "severity": sev, "reason": reason, "evidence": _json_list(evidence)}
        )
    signals: dict[str, list[dict[str, Any]]] = {}
    for tid, source, stype, pol, rule, evidence, span_id, idx, late in sigrows:
        signals.setdefault(str(tid), []).append({
            "source": source, "type": stype, "polarity": pol, "rule": rule, "evidence": evidence,
            "span_id": span_id or None, "message_index": None if int(idx) < 0 else int(idx), "late": bool(late),
        })  # fmt: skip
    out = {}
    for tid, service, agent, reason, completed in trows:
        tid = str(tid)
        if tid not in spans:
            continue
        try:
            completion = CompletionReason(reason)
        except ValueError:
            completion = CompletionReason.ROOT_ENDED_IDLE
        trace = Trace.fast(trace_id=tid, spans=spans[tid], completion_reason=completion, completed_ns=int(completed) * 10**6)
        info = {"trace_id": tid, "service": service, "agent": agent or None, "completed_at": iso_ms(int(completed))}
        out[tid] = TraceContext(info, trace, gates.get(tid, []), signals.get(tid, []))
    return out


# ---- the case ---------------------------------------------------------------------------------


def _msg_key(m: Message) -> tuple[Any, ...]:
    return (m.role, m.content.strip(), m.tool_call_id, tuple((c.name, c.arguments) for c in m.tool_calls))


def _msg_doc(m: Message) -> dict[str, Any]:
    d: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name:
        d["name"] = m.name
    if m.tool_calls:
        d["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls]
    if m.tool_call_id:
        d["tool_call_id"] = m.tool_call_id
    return d


def _history_length(known: list[Any], new: list[Any]) -> int:
    """Length of the longest prefix of ``new`` found as a contiguous run of ``known`` (the
    conversation history an LLM call repeats; see :mod:`schemas.user_messages`)."""
    for k in range(min(len(known), len(new)), 0, -1):
        head = new[:k]
        if any(known[i : i + k] == head for i in range(len(known) - k + 1)):
            return k
    return 0


def case_input(trace: Trace) -> tuple[dict[str, Any], str]:
    """(``input``, ``observed_output``): the conversation the agent had up to its final answer
    (history repeated across LLM calls kept once; system messages separately), the tool payloads,
    and the final answer itself."""
    final_span, final_text = trace_view.final_output(trace)
    known: list[Any] = []
    messages: list[dict[str, Any]] = []
    systems: list[str] = []
    for s in sorted(trace.llm_spans, key=lambda s: (s.start_ns, s.end_ns, s.span_id)):
        if s.system_instructions and s.system_instructions not in systems:
            systems.append(s.system_instructions)
        inputs = [m for m in s.input_messages if m.role not in ("system", "developer")]
        keys = [_msg_key(m) for m in inputs]
        skip = _history_length(known, keys)
        for m, k in zip(inputs[skip:], keys[skip:], strict=True):
            messages.append(_msg_doc(m))
            known.append(k)
        outputs = s.output_messages
        last = max((i for i, m in enumerate(outputs) if m.content), default=-1) if s.span_id == final_span else -1
        for i, m in enumerate(outputs):
            known.append(_msg_key(m))
            if i != last and (m.content or m.tool_calls):  # the final answer goes to observed_output
                messages.append(_msg_doc(m))
    if not messages:  # no LLM content captured: the user's input from the agent span
        messages = [{"role": "user", "content": u.text} for u in user_messages(trace)]
    if not final_text and trace.root is not None:
        final_text = next((m.content for m in reversed(trace.root.output_messages) if m.content), "")
    tools = []
    for u in trace_view.tool_uses(trace):
        error = (u.span.error_type or u.span.status_message or "error") if u.span is not None and u.span.is_error else None
        status = None if u.span is None else ("error" if error else "ok")
        tools.append({"name": u.name, "call_id": u.call_id, "arguments": u.arguments, "result": u.result,
                      "status": status, "error": error})  # fmt: skip
    doc = {"system_instructions": "\n\n".join(systems) or None, "messages": messages, "tools": tools}
    return doc, final_text


def case_id(trace_id: str, grader: str, version: str) -> str:
    return "case-" + hashlib.sha256(f"{trace_id}\n{grader}\n{version}".encode()).hexdigest()[:16]


def build_case(sel: Selected, ctx: TraceContext, owner: str | None, rules: list[SetRule]) -> dict[str, Any]:
    """The case document (keys in reading order); ``set`` from the rules."""
    inp, observed = case_input(ctx.trace)
    if sel.judge is not None:
        cid = case_id(sel.trace_id, sel.judge, sel.rubric_hash)
        version = f"{sel.rubric_hash[:12]}.c{CASE_FORMAT_VERSION}"
        grader = {"type": "rubric", "judge": sel.judge, "rubric_hash": sel.rubric_hash, "judge_version": sel.judge_version}
    else:
        cid = case_id(sel.trace_id, "gate", sel.gate)
        version = f"{sel.policy_version[:12] or 'policy'}.c{CASE_FORMAT_VERSION}"
        grader = {"type": "gate", "rule": sel.gate, "policy_version": sel.policy_version}
        evidence = next((g["evidence"] for g in ctx.gates if g["gate"] == sel.gate), [])
        sel = replace(sel, verdict={**sel.verdict, "evidence": evidence})
    case: dict[str, Any] = {
        "id": cid, "version": version, "set": DEFAULT_SET, "category": sel.judge or sel.gate,
        "owner": owner, "created_at": iso_ms(sel.created_ms),
        "source": dict(ctx.info),
        "grader": grader, "input": inp, "expected_output": None, "observed_output": observed,
        "verdict": sel.verdict, "evidence": {"gates": ctx.gates, "signals": ctx.signals},
    }  # fmt: skip
    case["set"] = assign_set(case, rules)
    return case


def merge_human(case: dict[str, Any], old: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keep what a human owns in an existing case: a filled-in ``expected_output``, the ``owner``
    once set, and any key the exporter does not write (notes, tags, ...)."""
    if not isinstance(old, Mapping):
        return case
    for k in HUMAN_FIELDS:
        if old.get(k) is not None:
            case[k] = old[k]
    for k, v in old.items():
        if k not in case:
            case[k] = v
    return case


# ---- export -------------------------------------------------------------------------------------


@dataclass
class ExportReport:
    dataset_version: str
    selected: int = 0
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)  # gate-only cases a failing verdict's case replaced
    unchanged: int = 0
    skipped_no_trace: list[str] = field(default_factory=list)  # verdicts of traces without row or spans
    total: int = 0
    per_set: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.moved or self.removed)


def export_cases(query: Query, db: str, out: Path, options: ExportOptions) -> ExportReport:
    """Select, build and write the cases; update ``manifest.json`` and ``CHANGELOG.md``."""
    options.window()
    if not _DB.match(db):
        raise ExportError(f"invalid database name {db!r}")
    dataset = Dataset.open(out, options.fmt)
    selected = _select(query, db, options)
    report = ExportReport(dataset_version="", selected=len(selected))
    by_trace: dict[str, list[Selected]] = {}
    for sel in selected:
        by_trace.setdefault(sel.trace_id, []).append(sel)
    ids = sorted(by_trace)
    for i in range(0, len(ids), _CHUNK):  # bounded memory: the spans of one chunk of traces at a time
        chunk = ids[i : i + _CHUNK]
        contexts = _load_context(query, db, chunk)
        for sel in (s for tid in chunk for s in by_trace[tid]):
            ctx = contexts.get(sel.trace_id)
            if ctx is None:
                report.skipped_no_trace.append(sel.trace_id)
                continue
            case = build_case(sel, ctx, options.owner, options.rules)
            old = dataset.existing_doc(case["id"])
            for gate_cid in _superseded(dataset, sel, ctx):
                old = old or dataset.existing_doc(gate_cid)  # what a human wrote in it comes along
                dataset.drop(gate_cid)
                report.superseded.append(gate_cid)
            dataset.put(merge_human(case, old))
    dataset.commit(report, options)
    return report


def _superseded(dataset: Dataset, sel: Selected, ctx: TraceContext) -> list[str]:
    """The gate-only cases of ``sel``'s trace that a failing verdict now replaces: a trace exported
    while its judging was pending (deferred to the backlog, say) and judged ``fail`` since. Kept,
    it stood beside the verdict's case: two cases for one failure, graded differently."""
    if sel.judge is None or sel.verdict.get("label") != "fail":
        return []
    ids = (case_id(sel.trace_id, "gate", str(g["gate"])) for g in ctx.gates)
    return [cid for cid in dict.fromkeys(ids) if dataset.has(cid)]
