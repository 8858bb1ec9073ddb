"""`tracejudge export-cases` on real embedded ClickHouse: real spans, verdicts, gates and signals in,
eval cases, manifest and changelog out."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from judges.rubric import builtin_rubrics
from schemas.decode import decode_message
from schemas.model import CompletionReason, Trace
from stream.decision_rows import GATE_COLUMNS, SIGNAL_COLUMNS
from stream.case_rules import parse_rules
from stream.export_cases import ExportError, ExportOptions, export_cases
from stream.export_dataset import render
from stream.judge_rows import STATUS_RANK
from stream.rows import SPAN_COLUMNS, TRACE_COLUMNS, span_row, trace_row
from stream.store import ClickHouseStore
from tests.factories import T0, SpanSpec, genai_trace, proto

MS0 = T0 // 1_000_000  # 2025-10-09T08:53:20Z
SINCE, UNTIL = "2025-10-09T00:00:00Z", "2025-10-10"
TC_HASH = builtin_rubrics()["task_completion"].rubric_hash
TU_HASH = "b" * 64
# YAML-significant and otherwise awkward text, as a user and a tool might produce it
HOSTILE_USER = "key: value\n- item # not a comment\n&anchor *alias !tag {a: [1, 2]} 'q' \"dq\"\n---\n...\nyes\tno ~ null\x85NEL \u2028LS"
HOSTILE_RESULT = '{"status": "shipped", "note": "%YAML 1.1\\n@at `tick` | > <<: x"}'
FINAL = "Your order #42: shipped — ETA: tomorrow.\n\n- item: 雪 🧪"
RULES = parse_rules(yaml.safe_load("""
- set: blocking
  when: {gate_severity_at_least: error, min_confidence: 0.8}
- set: monitoring
  when: {signals_any: ["thumbs_*"]}
"""))


def _msg(role: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": role, "parts": list(parts)}


def _text(t: str) -> dict[str, Any]:
    return {"type": "text", "content": t}


def agent_trace(rng: random.Random) -> list[SpanSpec]:
    """A two-call agent: ask, call a tool, answer. The second call repeats the history."""
    tid, root = rng.randbytes(16), rng.randbytes(8)
    start = T0 + 10**9
    call = {"type": "tool_call", "id": "call_1", "name": "lookup_order", "arguments": {"order": 42}}
    chat = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.system_instructions": "You are a support agent. Never promise dates."}  # fmt: skip
    first_in = [_msg("system", _text("You are a support agent. Never promise dates.")), _msg("user", _text(HOSTILE_USER))]
    first_out = [_msg("assistant", call)]
    second_in = [*first_in, *first_out, _msg("tool", {"type": "tool_call_response", "id": "call_1", "response": HOSTILE_RESULT})]
    second_out = [{**_msg("assistant", _text(FINAL)), "finish_reason": "stop"}]
    ms = 10**6
    return [
        SpanSpec(tid, root, name="invoke_agent support", start=start, end=start + 900 * ms,
                 attrs={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"}),
        SpanSpec(tid, rng.randbytes(8), root, "chat gpt-4o-mini", start + 10 * ms, start + 100 * ms,
                 {**chat, "gen_ai.input.messages": json.dumps(first_in), "gen_ai.output.messages": json.dumps(first_out)}),
        SpanSpec(tid, rng.randbytes(8), root, "execute_tool lookup_order", start + 110 * ms, start + 200 * ms,
                 {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order", "gen_ai.tool.call.id": "call_1",
                  "gen_ai.tool.call.arguments": '{"order": 42}', "gen_ai.tool.call.result": HOSTILE_RESULT}),
        SpanSpec(tid, rng.randbytes(8), root, "chat gpt-4o-mini", start + 210 * ms, start + 800 * ms,
                 {**chat, "gen_ai.input.messages": json.dumps(second_in), "gen_ai.output.messages": json.dumps(second_out)}),
    ]  # fmt: skip


def store_trace(store: ClickHouseStore, specs: list[SpanSpec], completed_ms: int, with_trace_row: bool = True) -> str:
    spans = decode_message(proto(specs))
    store.insert("spans", [span_row(s, "otlp_spans", 0, 7, completed_ms, late=False) for s in spans], SPAN_COLUMNS)
    trace = Trace.fast(trace_id=spans[0].trace_id, spans=spans, completion_reason=CompletionReason.ROOT_ENDED_IDLE,
                       first_seen_ns=completed_ms * 10**6, last_seen_ns=completed_ms * 10**6, completed_ns=completed_ms * 10**6)  # fmt: skip
    if with_trace_row:
        store.insert("traces", [trace_row(trace, "otlp_spans", 0, 7)], TRACE_COLUMNS)
    return spans[0].trace_id


VERDICT_COLS = ["trace_id", "judge", "rubric_hash", "judge_version", "status", "label", "score", "explanation",
                "evidence", "tier", "model", "judged_at", "version"]  # fmt: skip


def verdict(tid: str, judge: str, rhash: str, label: str, score: float, judged_ms: int) -> list[Any]:
    return [tid, judge, rhash, "1", "ok", label, score, f"{judge} says {label}: order: #42", json.dumps(["the answer promises a date"]),
            "strong", "gpt-4o-2024-08-06", judged_ms, STATUS_RANK["ok"]]  # fmt: skip


def gate(tid: str, name: str, gtype: str, severity: str, completed_ms: int) -> tuple[Any, ...]:
    evidence = json.dumps([{"span_id": "ab" * 8, "text": "ETA: tomorrow", "detail": name}])
    return (tid, name, gtype, "fail", severity, f"{name} failed", evidence, "policyv1abcdef99", "support-bot", "support", completed_ms)


def signal(tid: str, stype: str, key: str, ts_ms: int) -> tuple[Any, ...]:
    return (tid, "action" if stype.startswith("thumbs") else "semantic", stype, "negative", f"{stype}:rule", key, "ugh",
            "", -1, "en", 0, "policyv1abcdef99", ts_ms)  # fmt: skip


def seed(store: ClickHouseStore) -> dict[str, str]:
    """Traces: a (judged fail, error gate, confident -> blocking), b (judged fail, thumbs_down ->
    monitoring), c (gate-only failure -> backlog), d (judged pass), e (judged fail, outside the
    window), f (judged fail, no trace row)."""
    rng = random.Random(11)
    ids = {"a": store_trace(store, agent_trace(rng), MS0 + 1000)}
    for k in "bcdef":
        ids[k] = store_trace(store, genai_trace(rng, 5), MS0 + 2000, with_trace_row=k != "f")
    store.insert("verdicts", [
        verdict(ids["a"], "task_completion", TC_HASH, "fail", 0.1, MS0 + 5000),
        verdict(ids["b"], "tool_use_correctness", TU_HASH, "fail", 0.4, MS0 + 6000),
        verdict(ids["d"], "task_completion", TC_HASH, "pass", 0.9, MS0 + 6000),
        verdict(ids["e"], "task_completion", TC_HASH, "fail", 0.1, MS0 + 2 * 86_400_000),
        verdict(ids["f"], "task_completion", TC_HASH, "fail", 0.1, MS0 + 7000),
    ], VERDICT_COLS)  # fmt: skip
    store.insert("gate_results", [
        gate(ids["a"], "tool_errors", "tool_error", "error", MS0 + 1000),
        gate(ids["c"], "loop", "loop", "warning", MS0 + 2000),
        gate(ids["c"], "latency", "latency", "info", MS0 + 2000),
    ], GATE_COLUMNS)  # fmt: skip
    store.insert("signals", [
        signal(ids["a"], "frustration", "0", MS0 + 1000),
        signal(ids["b"], "thumbs_down", "ev-1", MS0 + 2500),
    ], SIGNAL_COLUMNS)  # fmt: skip
    return ids


def _id(tid: str, grader: str, version: str) -> str:
    return "case-" + hashlib.sha256(f"{tid}\n{grader}\n{version}".encode()).hexdigest()[:16]


def _export(store: ClickHouseStore, out: Path, **kw: Any) -> Any:
    opts = {"since": SINCE, "until": UNTIL, "rules": RULES, **kw}
    return export_cases(lambda q: ((r := store.read_only_query(q)).columns, r.rows), store.database, out,
                        ExportOptions(**opts))  # fmt: skip


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cases_carry_input_observed_output_grader_and_set(store: ClickHouseStore, tmp_path: Path) -> None:
    ids = seed(store)
    report = _export(store, tmp_path / "ds", owner="evals-team")
    a, b = _id(ids["a"], "task_completion", TC_HASH), _id(ids["b"], "tool_use_correctness", TU_HASH)
    c = _id(ids["c"], "gate", "loop")
    assert sorted(report.added) == sorted([a, b, c]) and report.skipped_no_trace == [ids["f"]]
    assert sorted(_files(tmp_path / "ds")) == sorted(
        ["CHANGELOG.md", "manifest.json", f"blocking/{a}.yaml", f"monitoring/{b}.yaml", f"backlog/{c}.yaml"]
    )
    case = yaml.safe_load((tmp_path / "ds" / "blocking" / f"{a}.yaml").read_text(encoding="utf-8"))
    assert case["id"] == a and case["version"] == f"{TC_HASH[:12]}.c1" and case["set"] == "blocking"
    assert case["category"] == "task_completion" and case["owner"] == "evals-team"
    assert case["created_at"] == "2025-10-09T08:53:25.000Z"  # judged_at, not the time of export
    assert case["source"] == {"trace_id": ids["a"], "service": "support-bot", "agent": "support", "completed_at": "2025-10-09T08:53:21.000Z"}
    assert case["grader"] == {"type": "rubric", "judge": "task_completion", "rubric_hash": TC_HASH, "judge_version": "1"}
    inp = case["input"]
    assert inp["system_instructions"] == "You are a support agent. Never promise dates."
    assert inp["messages"] == [  # history repeated by the second call kept once; no system message; no final answer
        {"role": "user", "content": HOSTILE_USER},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "name": "lookup_order", "arguments": '{"order": 42}'}]},
        {"role": "tool", "content": HOSTILE_RESULT, "tool_call_id": "call_1"},
    ]
    assert inp["tools"] == [{"name": "lookup_order", "call_id": "call_1", "arguments": '{"order": 42}', "result": HOSTILE_RESULT,
                             "status": "ok", "error": None}]  # fmt: skip
    assert case["expected_output"] is None and case["observed_output"] == FINAL
    assert case["verdict"]["label"] == "fail" and case["verdict"]["confidence"] == pytest.approx(0.9)
    assert case["verdict"]["evidence"] == ["the answer promises a date"] and case["verdict"]["model"] == "gpt-4o-2024-08-06"
    assert [g["gate"] for g in case["evidence"]["gates"]] == ["tool_errors"]
    assert case["evidence"]["gates"][0]["evidence"][0]["text"] == "ETA: tomorrow"
    assert [s["type"] for s in case["evidence"]["signals"]] == ["frustration"]

    gate_text = (tmp_path / "ds" / "backlog" / f"{c}.yaml").read_text(encoding="utf-8")
    assert "&id" not in gate_text and "*id" not in gate_text  # shared values written out, no YAML aliases
    gate_case = yaml.safe_load(gate_text)
    assert gate_case["grader"] == {"type": "gate", "rule": "loop", "policy_version": "policyv1abcdef99"}
    assert gate_case["category"] == "loop" and gate_case["verdict"]["confidence"] is None  # warning beats info
    assert gate_case["verdict"]["evidence"] == [{"span_id": "ab" * 8, "text": "ETA: tomorrow", "detail": "loop"}]
    assert gate_case["input"]["messages"][0] == {"role": "user", "content": "question 0"}
    assert gate_case["observed_output"] == "answer 2"
    assert [t["name"] for t in gate_case["input"]["tools"]] == ["lookup_order", "lookup_order"]

    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert [x["id"] for x in manifest["cases"]] == sorted([a, b, c]) and manifest["sets"] == {"blocking": 1, "monitoring": 1, "backlog": 1}
    for x in manifest["cases"]:
        assert x["sha256"] == hashlib.sha256((tmp_path / "ds" / x["file"]).read_bytes()).hexdigest()
    assert manifest["dataset_version"] == report.dataset_version


def test_reexport_is_byte_identical_and_a_new_failure_is_one_changelog_entry(store: ClickHouseStore, tmp_path: Path) -> None:
    ids = seed(store)
    out = tmp_path / "ds"
    first = _export(store, out)
    before = _files(out)
    again = _export(store, out)
    assert _files(out) == before and again.dataset_version == first.dataset_version
    assert not again.changed and again.unchanged == 3
    # one more failing verdict: a new case, one new changelog entry, the others untouched
    store.insert("verdicts", [verdict(ids["d"], "groundedness", "c" * 64, "fail", 0.3, MS0 + 8000)], VERDICT_COLS)
    third = _export(store, out)
    new_id = _id(ids["d"], "groundedness", "c" * 64)
    assert third.added == [new_id] and not third.updated and third.total == 4
    assert third.dataset_version != first.dataset_version
    after = _files(out)
    assert {k: v for k, v in after.items() if k in before and k not in ("CHANGELOG.md", "manifest.json")} == {
        k: v for k, v in before.items() if k not in ("CHANGELOG.md", "manifest.json")
    }
    changelog = after["CHANGELOG.md"].decode()
    assert changelog.startswith(before["CHANGELOG.md"].decode())
    entry = changelog[len(before["CHANGELOG.md"]) :]
    assert entry.count("## Dataset version") == 1 and f"added to backlog: `{new_id}` groundedness" in entry
    assert f"previous version: {first.dataset_version[:12]}" in entry and "1 added, 0 updated" in entry


def test_human_edits_are_kept_and_rules_move_cases(store: ClickHouseStore, tmp_path: Path) -> None:
    ids = seed(store)
    out = tmp_path / "ds"
    _export(store, out, owner="alice")
    c = _id(ids["c"], "gate", "loop")
    path = out / "backlog" / f"{c}.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["expected_output"] = "I'm sorry: I cannot find the order."
    doc["notes"] = "looped three times"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")  # a human's own formatting
    # new rules: warnings are blocking now; a new owner does not take over existing cases
    rules = parse_rules([{"set": "blocking", "when": {"gate_severity_at_least": "warning"}}])
    report = _export(store, out, owner="bob", rules=rules)
    assert c in report.moved and not (out / "backlog" / f"{c}.yaml").exists()
    moved = yaml.safe_load((out / "blocking" / f"{c}.yaml").read_text(encoding="utf-8"))
    assert moved["expected_output"] == "I'm sorry: I cannot find the order." and moved["notes"] == "looped three times"
    assert moved["owner"] == "alice" and moved["set"] == "blocking"
    assert f"moved backlog → blocking: `{c}`" in (out / "CHANGELOG.md").read_text(encoding="utf-8")
    assert not _export(store, out, owner="bob", rules=rules).changed


def test_jsonl_holds_the_same_cases(store: ClickHouseStore, tmp_path: Path) -> None:
    seed(store)
    _export(store, tmp_path / "y")
    report = _export(store, tmp_path / "j", fmt="jsonl")
    assert sorted(_files(tmp_path / "j")) == ["CHANGELOG.md", "backlog/cases.jsonl", "blocking/cases.jsonl", "manifest.json", "monitoring/cases.jsonl"]
    from_jsonl = {}
    for p in (tmp_path / "j").glob("*/cases.jsonl"):
        for line in p.read_text(encoding="utf-8").splitlines():
            case = json.loads(line)
            from_jsonl[case["id"]] = case
    from_yaml = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in (tmp_path / "y").glob("*/*.yaml")}
    assert from_jsonl == from_yaml and report.total == 3
    with pytest.raises(ExportError, match="--format jsonl"):
        _export(store, tmp_path / "j")  # a jsonl dataset is not mixed with yaml cases
    assert not _export(store, tmp_path / "j", fmt="jsonl").changed


def test_rows_through_the_worker_api_give_the_same_bytes(store: ClickHouseStore, tmp_path: Path) -> None:
    from stream.worker import _jsonable  # what POST /api/sql does to every value

    seed(store)

    def via_api(sql: str) -> tuple[list[str], list[Any]]:
        got = store.read_only_query(sql)
        columns, rows = got.columns, got.rows
        return columns, json.loads(json.dumps([[_jsonable(v) for v in r] for r in rows]))

    direct = _export(store, tmp_path / "direct")
    api = export_cases(via_api, store.database, tmp_path / "api", ExportOptions(since=SINCE, until=UNTIL, rules=RULES))
    assert api.dataset_version == direct.dataset_version
    assert _files(tmp_path / "api") == _files(tmp_path / "direct")


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_any_trace_text_survives_yaml(text: str) -> None:
    case = {"id": "case-0", "input": {"messages": [{"role": "user", "content": text}], "system_instructions": text},
            "observed_output": text, "evidence": {"gates": [{"reason": text, "evidence": [{"text": text}]}]}, text: [text]}  # fmt: skip
    assert yaml.safe_load(render(case, "yaml")) == case
    assert json.loads(render(case, "jsonl")) == case


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"judge": "x'; DROP TABLE verdicts --"}, "not a judge name"),
        ({"label": "fail' OR '1'='1"}, "not a label"),
        ({"since": "yesterday"}, "not an ISO"),
        ({"since": UNTIL, "until": SINCE}, "must be after"),
        ({"fmt": "csv"}, "unknown format"),
    ],
    ids=["judge", "label", "since", "window", "format"],
)
def test_bad_options_are_refused_before_any_write(store: ClickHouseStore, tmp_path: Path, kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ExportError, match=match):
        _export(store, tmp_path / "ds", **kw)
    assert not (tmp_path / "ds").exists()


def test_rules_file_errors_name_the_rule() -> None:
    with pytest.raises(ExportError, match=r"rules\.1\.when\.min_confidence"):
        parse_rules([{"set": "blocking"}, {"set": "monitoring", "when": {"min_confidence": 2}}])
    with pytest.raises(ExportError, match=r"rules\.0\.set"):
        parse_rules({"rules": [{"set": "urgent"}]})


SEED_SCRIPT = """
import sys
from stream.store import ClickHouseStore
from tests.stream.test_export_cases import seed
s = ClickHouseStore(sys.argv[1], "tracejudge")
s.migrate()
seed(s)
s.close()
"""


def test_cli_exports_from_the_embedded_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEJUDGE_")}
    env.update(TRACEJUDGE_DATA_DIR=str(data), PYTHONPATH=str(Path(__file__).parents[2]), COLUMNS="200")
    seeded = subprocess.run([sys.executable, "-c", SEED_SCRIPT, f"chdb://{data / 'clickhouse'}"], env=env,
                            capture_output=True, text=True, timeout=240)  # fmt: skip
    assert seeded.returncode == 0, seeded.stderr
    rules = tmp_path / "rules.yaml"
    rules.write_text("- set: blocking\n  when: {gate_severity_at_least: error}\n")
    args = [sys.executable, "-m", "stream", "export-cases", "--since", SINCE, "--until", UNTIL,
            "--out", str(tmp_path / "ds"), "--rules", str(rules), "--owner", "evals"]  # fmt: skip
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 added" in run.stdout and "skipped 1" in run.stdout
    assert len(list((tmp_path / "ds" / "blocking").glob("case-*.yaml"))) == 1
    assert len(list((tmp_path / "ds" / "backlog").glob("case-*.yaml"))) == 2
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert rerun.returncode == 0 and "nothing changed" in rerun.stdout
    bad = subprocess.run([*args[:-2], "--judge", "Bad-Name"], env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert bad.returncode == 2 and "not a judge name" in bad.stderr


def test_cli_exports_through_a_running_worker(deployment: Any, tmp_path: Path) -> None:
    """The worker holds the embedded store: the export reads through its read-only /api/sql."""
    from datetime import UTC, datetime, timedelta

    from tests.stream.conftest import wait_for

    d = deployment()
    worker = d.start_worker()
    failing = genai_trace(random.Random(5), 5)
    failing[2].error = True  # a tool span with error status: a gate-only failure (no judges configured)
    d.produce([(failing[0].trace_id.hex().encode(), proto(failing), None)])
    assert wait_for(lambda: worker.sql("SELECT count() FROM tracejudge.gate_results FINAL")[0][0] > 0, 60)
    now = datetime.now(UTC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEJUDGE_")}
    env.update(TRACEJUDGE_DATA_DIR=str(d.data_dir), COLUMNS="200")
    args = [sys.executable, "-m", "stream", "export-cases", "--since", (now - timedelta(hours=1)).isoformat(),
            "--until", (now + timedelta(hours=1)).isoformat(), "--out", str(tmp_path / "ds")]  # fmt: skip
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    (path,) = (tmp_path / "ds" / "backlog").glob("case-*.yaml")
    case = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert case["source"]["trace_id"] == failing[0].trace_id.hex()
    assert case["grader"]["type"] == "gate" and case["grader"]["rule"] in ("span_errors", "tool_errors")
    assert {g["gate"] for g in case["evidence"]["gates"]} >= {"tool_errors"}
    assert case["input"]["messages"][0] == {"role": "user", "content": "question 0"}
    assert [t["status"] for t in case["input"]["tools"]] == ["error", "ok"]
    # the API the export read through: one read-only statement, JSON only, within limits
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    api = f"{worker.url}/api/sql"
    plain = httpx.post(api, content=json.dumps({"query": "SELECT 1"}), headers={"Content-Type": "text/plain"})
    assert plain.status_code == 403 and "JSON" in plain.json()["error"]  # what a web page can send unasked
    for query in (f"SELECT file('{secret}')", f"SELECT 1 INTO OUTFILE '{tmp_path / 'out.txt'}'", "SELECT 1; SELECT 2"):
        refused = httpx.post(api, json={"query": query})
        assert refused.status_code == 403 and "s3cret" not in refused.text, query
    assert not (tmp_path / "out.txt").exists()
    big = httpx.post(api, json={"query": "SELECT number FROM numbers(200000)"}, timeout=60).json()
    assert len(big["rows"]) == 100_000 and "100,000 rows" in big["cut"]
    assert worker.sql("SELECT 'after', 1") == [["after", 1]]  # the worker's client is clean after it

