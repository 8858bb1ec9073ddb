"""Known rows for the dashboard tests: six hours of traffic with decisions, verdicts of two judges
(and an older judge version that must be ignored), gates, signals, judge calls, an alert, and one
failing trace whose every piece of text is hostile (HTML, script, SQL)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from schemas.model import Span, StatusCode
from schemas.normalize import normalize_span
from stream.rows import SPAN_COLUMNS, span_row
from stream.store import ClickHouseStore

HOSTILE = '<script>window.__pwned=1;alert(1)</script>"><img src=x onerror="window.__pwned=2">'
SQLISH = "'; DROP TABLE traces; -- {t:String}"
NEW, OLD = "b" * 64, "a" * 64
HOURS = 6
FAILURES, SUCCESSES = 10, 40  # per hour
SUCCESS_P = 0.1

TRACE_COLS = ["trace_id", "service_name", "agent_name", "root_name", "start_time", "end_time", "duration_ms",
              "span_count", "error_count", "first_seen", "last_seen", "completed_at", "sample_class",
              "sample_rule", "sample_stratum", "inclusion_p", "sampled", "failed_gates", "signals"]  # fmt: skip
VERDICT_COLS = ["trace_id", "judge", "rubric_hash", "judge_version", "status", "label", "score", "explanation",
                "evidence", "tier", "model", "cost_usd", "judged_at", "version"]  # fmt: skip
CALL_COLS = ["call_id", "ts", "period", "trace_id", "judge", "rubric_hash", "tier", "purpose", "model", "status",
             "input_tokens", "output_tokens", "cost_usd", "kafka_partition"]  # fmt: skip


@dataclass
class Seeded:
    now: float
    hour0: int  # the first hour bucket (epoch s)
    traces: list[dict[str, Any]] = field(default_factory=list)  # trace_id, bucket, stratum, p, sampled
    labels: dict[str, dict[str, bool]] = field(default_factory=dict)  # judge -> trace -> passed (newest version)
    failing: list[tuple[str, str]] = field(default_factory=list)  # (trace, judge) of fail verdicts, newest first
    hostile_id: str = ""
    spend_today: float = 0.0  # charged to the budget in the current UTC day
    spend_total: float = 0.0  # every judge call (calibration included)
    gate_hits: dict[str, int] = field(default_factory=dict)
    signal_counts: dict[str, int] = field(default_factory=dict)


def _span(tid: str, sid: str, parent: str | None, name: str, start_ns: int, ms: float, attrs: dict[str, Any],
          error: bool = False) -> Span:  # fmt: skip
    s = Span(trace_id=tid, span_id=sid, parent_span_id=parent, name=name, start_ns=start_ns,
             end_ns=start_ns + int(ms * 1e6), attributes=attrs, service_name="support-bot",
             status_code=StatusCode.ERROR if error else StatusCode.UNSET, status_message=HOSTILE if error else "")  # fmt: skip
    return normalize_span(s)


def agent_spans(tid: str, start_ns: int, text: str) -> list[Span]:
    """invoke_agent root → chat (messages) → execute_tool (error, result) → chat."""
    user = [{"role": "user", "parts": [{"type": "text", "content": f"Where is my order? {text}"}]}]
    out = [{"role": "assistant", "parts": [{"type": "text", "content": f"Checking. {text}"}], "finish_reason": "stop"}]
    sid = lambda i: f"{int(tid[:8], 16) % 10**6:06d}{i:010d}"  # noqa: E731 - 16 hex digits
    return [
        _span(tid, sid(1), None, f"invoke_agent support {text}", start_ns, 2400.0,
              {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"}),
        _span(tid, sid(2), sid(1), f"chat gpt-4o-mini {text}", start_ns + 10**8, 900.0,
              {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
               "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30,
               "gen_ai.input.messages": json.dumps(user), "gen_ai.output.messages": json.dumps(out)}),
        _span(tid, sid(3), sid(1), f"execute_tool lookup_order {text}", start_ns + 11 * 10**8, 400.0,
              {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order",
               "gen_ai.tool.call.arguments": json.dumps({"order": text}), "gen_ai.tool.call.result": f"error: {text}"},
              error=True),
        _span(tid, sid(4), sid(1), "chat gpt-4o-mini", start_ns + 16 * 10**8, 700.0,
              {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}),
    ]  # fmt: skip


def seed(store: ClickHouseStore, now: float, seed_value: int = 11) -> Seeded:
    rng = random.Random(seed_value)
    hour0 = (int(now) // 3600 - (HOURS - 1)) * 3600
    out = Seeded(now=now, hour0=hour0)
    traces, verdicts, calls, gates, signals, spans = [], [], [], [], [], []
    out.labels = {"task_completion": {}, "tool_use_correctness": {}}
    fail_times: list[tuple[int, str, str]] = []
    n = 0
    for h in range(HOURS):
        bucket = hour0 + h * 3600
        for k in range(FAILURES + SUCCESSES):
            n += 1
            tid = f"{n:032x}"
            failure = k < FAILURES
            stratum, cls, p = ("suspected_failure", "suspected_failure", 1.0) if failure else ("success:base", "success", SUCCESS_P)
            sampled = failure or k % 10 == 0
            done_ms = (bucket + 60 + k * 50) * 1000  # inside the hour, never in the future of `now`'s hour
            done_ms = min(done_ms, int(now * 1000))
            name, agent = "invoke_agent support", "support"
            if h == HOURS - 1 and k == 0:  # the first failure of the newest hour
                name, agent = f"invoke_agent {HOSTILE} {SQLISH}", HOSTILE
                out.hostile_id = tid
            gates_failed = ["tool_errors"] if failure else []
            sigs = ["frustration"] if failure and k % 2 == 0 else []
            traces.append([tid, "support-bot", agent, name, done_ms * 10**6 - 3 * 10**9, done_ms * 10**6, 3000.0, 4,
                           1 if failure else 0, done_ms, done_ms, done_ms, cls, "gate:tool_errors" if failure else "success:base",
                           stratum, p, int(sampled), gates_failed, sigs])  # fmt: skip
            out.traces.append({"trace_id": tid, "bucket": bucket, "stratum": stratum, "p": p, "sampled": sampled})
            if failure:
                outcome = "error" if k == FAILURES - 1 else "fail"
                reason = HOSTILE if tid == out.hostile_id else "tool lookup_order returned an error"
                gates.append([tid, "tool_errors", "tool_error", outcome, "high", reason,
                              json.dumps([{"span_id": "0" * 16, "text": reason, "detail": SQLISH}]), done_ms])  # fmt: skip
                out.gate_hits["tool_errors"] = out.gate_hits.get("tool_errors", 0) + 1
                if k < 3:
                    gates.append([tid, "latency", "latency", "fail", "low", "slow", "[]", done_ms])
                    out.gate_hits["latency"] = out.gate_hits.get("latency", 0) + 1
            for s in sigs:
                signals.append([tid, "semantic", s, "negative", "en:frustration", "0", HOSTILE if tid == out.hostile_id else "this is useless", done_ms])
                out.signal_counts[s] = out.signal_counts.get(s, 0) + 1
            if failure and k == 1:
                signals.append([tid, "action", "thumbs_down", "negative", "thumbs_down", f"ev{n}", "", done_ms])
                out.signal_counts["thumbs_down"] = out.signal_counts.get("thumbs_down", 0) + 1
            if not sampled:
                continue
            judged_ms = min(done_ms + 500, int(now * 1000))
            passed = (rng.random() < 0.4) if failure else (rng.random() < 0.95)
            if tid == out.hostile_id:
                passed = False
            label = "pass" if passed else "fail"
            explanation = f"{HOSTILE} {SQLISH}" if tid == out.hostile_id else f"the agent {'did' if passed else 'did not'} finish"
            evidence = json.dumps([HOSTILE, SQLISH] if tid == out.hostile_id else ["order status shown"])
            cost = 0.0021 if failure else 0.0007
            verdicts.append([tid, "task_completion", NEW, "2", "ok", label, 0.8 if passed else 0.2, explanation, evidence,
                             "cheap", "gpt-4o-mini", cost, judged_ms, 4])  # fmt: skip
            verdicts.append([tid, "task_completion", OLD, "1", "ok", "fail", 0.1, "old", "[]", "cheap", "gpt-4o-mini", 0.0,
                             judged_ms - 3600_000, 4])  # an older version: never mixed in  # fmt: skip
            out.labels["task_completion"][tid] = passed
            if not passed:
                fail_times.append((judged_ms, tid, "task_completion"))
            if k % 2 == 0:
                tu = rng.random() < 0.7
                verdicts.append([tid, "tool_use_correctness", "c" * 64, "1", "ok", "pass" if tu else "fail", 0.7, "ok", "[]",
                                 "cheap", "gpt-4o-mini", 0.001, judged_ms, 4])  # fmt: skip
                out.labels["tool_use_correctness"][tid] = tu
                if not tu:
                    fail_times.append((judged_ms, tid, "tool_use_correctness"))
            elif k == 1:  # an unscored verdict: counted by status, never a label
                verdicts.append([tid, "tool_use_correctness", "c" * 64, "1", "unscored", None, None, "", "[]", "cheap",
                                 "gpt-4o-mini", 0.0, judged_ms, 3])  # fmt: skip
            calls.append([f"call-{n}", judged_ms, judged_ms // 1000 // 86400, tid, "task_completion", NEW, "cheap", "live",
                          "gpt-4o-mini", "ok", 800, 60, cost, 0])  # fmt: skip
            if judged_ms // 1000 // 86400 == int(now) // 86400:
                out.spend_today += cost
            out.spend_total += cost
            if failure and k < 2:
                spans.extend(agent_spans(tid, done_ms * 10**6 - 3 * 10**9, HOSTILE if tid == out.hostile_id else "#" + str(n)))
    calls.append(["call-calibration", int(now * 1000) - 1000, int(now) // 86400, "", "task_completion", NEW, "strong",
                  "calibration", "gpt-4o", "ok", 5000, 500, 0.5, -1])  # not charged to the live budget  # fmt: skip
    store.insert("traces", traces, TRACE_COLS)
    store.insert("verdicts", verdicts, VERDICT_COLS)
    store.insert("judge_calls", calls, CALL_COLS)
    store.insert("gate_results", gates, ["trace_id", "gate", "gate_type", "outcome", "severity", "reason", "evidence", "completed_at"])
    store.insert("signals", signals, ["trace_id", "source", "type", "polarity", "rule", "signal_key", "evidence", "ts"])
    store.insert("spans", [span_row(s, "otlp_spans", 0, i, int(now * 1000), False) for i, s in enumerate(spans)], SPAN_COLUMNS)
    store.insert("judge_alerts", [["al-1", "quarantine", "task_completion", NEW, "firing", f"flaky judge {HOSTILE}", "{}",
                                   int(now * 1000) - 5000]],
                 ["alert_id", "kind", "judge", "rubric_hash", "state", "message", "details", "created_at"])  # fmt: skip
    out.spend_total += 0.5
    out.failing = [(tid, judge) for _, tid, judge in sorted(fail_times, key=lambda x: (-x[0], x[1], x[2]))]
    return out
