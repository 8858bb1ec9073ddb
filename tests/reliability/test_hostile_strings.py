"""Fault scenario 10 (matrix row 16): hostile strings — stored byte for byte, rendered safely.

Real parts end to end: the session's tansu broker, a real ``tracejudge worker`` (embedded
ClickHouse) with a judging config against a local provider speaking the OpenAI wire protocol, the
worker's own dashboard over HTTP, and Debian chromium when installed.

* **Valid UTF-8** (NUL, C0/C1 controls, U+2028/2029, bidi overrides, U+FFFD, non-characters,
  astral and combining characters, SQL-, template- and HTML-looking text): each string is put in
  19 places of one trace — resource attribute key/value and ``service.name``, scope name, span
  name, attribute key/value, agent name, conversation id, input/output message content, status
  message, tool arguments/result, an exception event and a custom event (name, key, value) — and
  sent as protobuf and as OTLP/JSON (raw, or with every non-ASCII character \\u-escaped: a superset
  of what Go's encoder escapes). ClickHouse must hold every one byte for byte: compared in SQL as
  ``hex(...)`` (events through ClickHouse's own JSON functions), so client-side decoding cannot hide
  a difference. The long run adds hypothesis ``text()`` strings and random invalid bytes.
* **Invalid UTF-8** in the same 19 places of a protobuf message (which upb refuses to parse):
  repaired, not dead-lettered (``schemas/utf8_repair.py``): each field holds its text with U+FFFD
  for invalid sequences, and ``attributes['tracejudge.invalid_utf8']`` holds, per documented path,
  the original bytes (checked in SQL via ``base64Decode``). Half of these messages are unkeyed and
  carry a second, valid trace, so they also go through the repartition topic. OTLP/JSON that is not
  UTF-8 (or has lone-surrogate escapes) is dead-lettered as ``undecodable``. (That the original
  message can be rebuilt exactly from the repair is property-tested in ``tests/schemas/test_utf8_repair.py``.)
* Every trace is sampled (an error span) and judged: every verdict must be ``ok`` (the
  traces.to_judge JSON and the judge prompt cope), every string must reach the judge's prompt
  unchanged (except spotlight-tag look-alikes, defanged by design); no gate may error.
* The dashboard served by the worker (overview with the failing list — its newest 25 — and every
  trace's drill-down): no hostile markup becomes a tag, attribute, comment or declaration; no
  ``on*`` attribute or ``javascript:`` URL from data; no markup character of a string unescaped; the
  CSP header on every page; each string (root span name, the verdict's markup-laden explanation) is
  shown as text. In chromium, no script runs, no dialog opens, no console error (CSP report) appears.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from judges.prompt import neutralise
from tests.judges.fake_provider import FakeProviderServer, Func, Reply
from tests.reliability.hostile_inputs import VERDICT_TEXT, Case, messages
from tests.reliability.html_audit import CHROMIUM, audit_page, browse, clip
from tests.reliability.support import SIZES, pick
from tests.stream.conftest import Deployment, wait_for
from tests.stream.judging_support import config

DB = "tracejudge"
# ---- reading back ---------------------------------------------------------------------------------
SPAN_SQL = (
    "SELECT trace_id, span_id, hex(name), hex(scope_name), hex(status_message), hex(service_name), hex(agent_name), "
    "hex(conversation_id), hex(tool_arguments), hex(tool_result), "
    "arrayMap((k, v) -> (hex(k), hex(v)), mapKeys(attributes), mapValues(attributes)), "
    "arrayMap((k, v) -> (hex(k), hex(v)), mapKeys(resource_attributes), mapValues(resource_attributes)), "
    "arrayMap(e -> (hex(JSONExtractString(e, 'name')), arrayMap(t -> (hex(t.1), hex(t.2)), "
    "JSONExtractKeysAndValues(e, 'attributes', 'String'))), JSONExtractArrayRaw(events)), "
    "arrayStringConcat(arrayMap(x -> hex(x), exception_types), ','), "
    "arrayStringConcat(arrayMap(x -> hex(x), exception_messages), ','), "
    "arrayMap(t -> (hex(t.1), hex(base64Decode(JSONExtractString(t.2, '$bytes')))), "
    f"JSONExtractKeysAndValuesRaw(attributes['tracejudge.invalid_utf8'])) FROM {DB}.spans FINAL"
)
SPAN_COLS = ("name", "scope_name", "status_message", "service_name", "agent_name", "conversation_id",
             "tool_arguments", "tool_result")  # fmt: skip


def stored_spans(worker: Any) -> dict[tuple[str, str], dict[str, str]]:
    out = {}
    for row in worker.sql(SPAN_SQL):
        tid, sid, *cols = row
        got = dict(zip(SPAN_COLS, cols[:8], strict=True))
        attrs, res, events, etypes, emsgs, marks = cols[8:]
        got.update({"attr:" + k: v for k, v in attrs} | {"res:" + k: v for k, v in res})
        for i, (name, kv) in enumerate(events):
            got[f"ev{i}.name"] = name
            got.update({f"ev{i}:" + k: v for k, v in kv})
        got.update({"exception_types": etypes, "exception_messages": emsgs} if etypes else {})
        got.update({"m:" + p: o for p, o in marks})
        out[(tid, sid)] = got
    return out


def compare(cases: list[Case], spans: dict[tuple[str, str], dict[str, str]], rows: dict[str, list[str]]) -> tuple[int, list[str]]:
    """(comparisons, mismatches): every expected column/path against what ClickHouse holds."""
    n, bad = 0, []
    for c in cases:
        for sid, want in c.spans.items():
            got = spans.get((c.trace_id, sid), {})
            for key, value in want.items():
                n += 1
                if got.get(key) != value:
                    bad.append(f"{c.trace_id}/{sid} {key}: stored {got.get(key)!r}, expected {value!r}")
            n += 1
            if not any(k.startswith("m:") for k in want) and any(k.startswith("m:") for k in got):
                bad.append(f"{c.trace_id}/{sid}: a repair marker on a valid span")
        row = dict(zip(("root_name", "service_name", "agent_name", "conversation_id"), rows.get(c.trace_id, [])))
        for key, value in c.row.items():
            n += 1
            if row.get(key) != value:
                bad.append(f"trace {c.trace_id} {key}: stored {row.get(key)!r}, expected {value!r}")
    return n, bad


# ---- the scenario ---------------------------------------------------------------------------------
@pytest.fixture
def judge_server() -> Iterator[tuple[FakeProviderServer, list[str]]]:
    """Judges every trace ``fail``, with markup in the explanation and evidence; keeps the prompts."""
    prompts: list[str] = []

    def answer(body: Any) -> Reply:
        prompts.append("\n".join(str(m.get("content", "")) for m in body["messages"]))
        text = json.dumps({"label": "fail", "score": 0.05, "explanation": VERDICT_TEXT, "evidence": [VERDICT_TEXT]})
        return Reply(text=text, input_tokens=1000, output_tokens=100)

    with FakeProviderServer() as server:
        server.default = Func(answer)
        yield server, prompts


@pytest.mark.parametrize("size", SIZES)
def test_hostile_strings_stored_byte_for_byte_and_rendered_safely(
    size: str, deployment: Callable[..., Deployment], judge_server: tuple[FakeProviderServer, list[str]],
    consume: Callable[..., Any], figures: Callable[..., None], tmp_path: Any,
) -> None:  # fmt: skip
    server, prompts = judge_server
    msgs, cases, n_repair, n_json_bad, texts = messages(size)
    judging = tmp_path / "judging.yaml"
    judging.write_text(yaml.safe_dump(config(server, max_in_flight=8, budget={"global_usd": 1000.0})))
    d = deployment(judging_file=judging)
    d.settings["FAKE_OPENAI_KEY"] = "sk-test"
    worker = d.start_worker()
    d.produce(msgs)
    timeout = pick(size, 120, 900)
    count = lambda sql: int(worker.sql(sql)[0][0])  # noqa: E731
    assert wait_for(lambda: count(f"SELECT count() FROM {DB}.traces FINAL") >= len(cases), timeout), "traces stored"
    sampled = count(f"SELECT countIf(sampled = 1) FROM {DB}.traces FINAL")
    assert wait_for(lambda: count(f"SELECT count() FROM {DB}.verdicts FINAL") >= sampled, timeout), "verdicts"

    # byte for byte, compared as hex in SQL
    spans = stored_spans(worker)
    rows = {r[0]: r[1:5] for r in worker.sql(f"SELECT trace_id, hex(root_name), hex(service_name), hex(agent_name), "
                                             f"hex(conversation_id) FROM {DB}.traces FINAL")}  # fmt: skip
    comparisons, mismatches = compare(cases, spans, rows)
    n_traces = count(f"SELECT count() FROM {DB}.traces FINAL")
    n_spans = count(f"SELECT count() FROM {DB}.spans FINAL")
    repaired_spans = count(f"SELECT count() FROM {DB}.spans FINAL WHERE mapContains(attributes, 'tracejudge.invalid_utf8')")
    gate_errors = count(f"SELECT sum(length(gate_errors)) FROM {DB}.traces FINAL")
    verdicts = dict(map(tuple, worker.sql(f"SELECT status, count() FROM {DB}.verdicts FINAL GROUP BY status")))
    dlq = consume(d.dlq_topic, idle=2.0)
    reasons = [dict(r.headers).get("tracejudge.dlq.reason", b"").decode() for r in dlq]
    details = [dict(r.headers).get("tracejudge.dlq.detail", b"").decode() for r in dlq]
    # the judge sees each string as sent, except spotlight-tag look-alikes, defanged by design
    unchanged = [h for h in texts if neutralise(h) == h]
    in_prompts = sum(1 for h in unchanged if any(h in p for p in prompts))

    # the dashboard the worker serves: overview (failing list) and every trace's drill-down
    by_id = {c.trace_id: c for c in cases}
    failing: set[str] = set()

    def overview(page: str) -> list[str]:  # the verdict text, and the root name of each listed trace
        failing.update(re.findall(r'href="/dashboard/trace/([0-9a-f]{32})"', page))
        return [clip(VERDICT_TEXT, 240)] + [clip(by_id[t].shown, 80) for t in sorted(failing)]

    unsafe, missing = audit_page(f"{worker.url}/dashboard", texts, overview)
    for c in cases:
        u, m = audit_page(f"{worker.url}/dashboard/trace/{c.trace_id}", texts,
                          lambda _page, c=c: [clip(c.shown, 200), VERDICT_TEXT])  # fmt: skip
        unsafe += u
        missing += m
    browser: dict[str, Any] = {"browser": "chromium not installed"}
    if os.access(CHROMIUM, os.X_OK):
        markup = [c.trace_id for c in cases if "<" in c.shown][: int(pick(size, 12, 40))]
        pages, ran, errors = browse(worker.url, ["/dashboard"] + [f"/dashboard/trace/{t}" for t in markup])
        browser = {"browser pages": pages, "scripts run or dialogs": ran, "console errors": len(errors)}
        assert ran == 0 and errors == [], errors[:5]

    figures(
        scenario="10 hostile strings", guarantee="stored byte for byte (or documented lossless repair); rendered safely",
        **{"strings tested": len(texts) + n_repair, "traces": n_traces, "spans": n_spans, "comparisons": comparisons,
           "mismatches": len(mismatches), "invalid-UTF-8 messages repaired": n_repair, "repaired spans": repaired_spans,
           "OTLP/JSON dead-lettered (not UTF-8, lone surrogate)": reasons.count("undecodable"), "gate errors": gate_errors,
           "verdicts": sum(verdicts.values()), "verdicts not ok": sum(v for k, v in verdicts.items() if k != "ok"),
           "strings intact in judge prompts": f"{in_prompts}/{len(unchanged)} (+{len(texts) - len(unchanged)} defanged)", "pages audited": len(cases) + 1,
           "failing traces listed": len(failing), "dashboard unsafe renders": len(unsafe),
           "strings not shown as text": len(missing), **browser},
    )  # fmt: skip
    assert mismatches == [], mismatches[:10]
    assert n_traces == len(cases) and sampled == n_traces
    assert len(msgs) - n_json_bad == count(f"SELECT uniqExact(kafka_topic, kafka_partition, kafka_offset) FROM {DB}.spans FINAL "
                                            f"WHERE kafka_topic = '{d.input_topic}'") + n_repair // 2  # fmt: skip
    assert reasons == ["undecodable"] * n_json_bad, list(zip(reasons, details, strict=True))
    assert all("must be UTF-8" in x or "surrogate" in x.lower() for x in details), details
    assert repaired_spans == 3 * n_repair
    assert gate_errors == 0
    assert verdicts.get("ok") == sum(verdicts.values()) == sampled
    assert in_prompts == len(unchanged)
    assert unsafe == [], unsafe[:10]
    assert missing == [], missing[:10]
    assert len(failing) > 0
