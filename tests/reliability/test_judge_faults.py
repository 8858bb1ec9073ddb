"""Fault scenario 6 (matrix rows 8, 9, 10): a real worker judges a stream of sampled traces while
its provider misbehaves — a 429 storm with ``Retry-After`` at the start, then per trace 429 bursts,
5xx bursts, hangs longer than the provider timeout, and garbage answers (HTTP bodies that are not
JSON, completions that are not JSON, violate the output schema, or carry a label outside the
rubric). Every garbage answer claims the *wrong* label, so accepting one would show up as a verdict
that disagrees with the honest judgment. The budget is small enough to bind.

Real parts: tansu broker, a `tracejudge worker` process, embedded ClickHouse, and a local provider
server speaking the OpenAI wire protocol (tests/judges/fake_provider.py).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.factories import proto
from tests.judges.fake_provider import Fail, FakeProviderServer, Func, Hang, RawBody, Reply, Step
from tests.reliability.judge_support import honest, make_traces
from tests.reliability.support import SIZES, pick
from tests.stream.conftest import Deployment, wait_for
from tests.stream.judging_support import STRONG, config

DB = "tracejudge"
LABELS = {"pass", "fail"}  # task_completion's labels
TIMEOUT_S = 1.0  # provider read timeout; hangs last longer
HANG_S = 2.5
STORM_S = 1.5  # every request in the first STORM_S seconds gets 429 with Retry-After
RETRY_AFTER = "1"
_CASE = re.compile(r"case-(\d+)-case")
TRANSIENT = ("provider_rate_limited", "provider_server", "provider_timeout", "provider_network",
             "provider_circuit_open", "provider_deadline")  # fmt: skip


def honest_label(body: Any) -> str:
    return "fail" if "BROKEN" in json.dumps(body) else "pass"


def completion(text: str) -> Reply:
    return Reply(text=text, input_tokens=1000, output_tokens=100)  # billed like an honest answer


def garbage(kind: str, body: Any) -> Step:
    """A wrong answer of ``kind``: it always claims the label the honest judge would not give."""
    wrong = "pass" if honest_label(body) == "fail" else "fail"
    return {
        "http_not_json": RawBody(b'{"id": "chatcmpl-x", "choices": [{"message": {"content": "{\\"lab'),
        "http_html": RawBody(b"<html><body>upstream error</body></html>", content_type="text/html"),
        "not_json": completion(f"Sure! After careful review my verdict is: {wrong}."),
        "truncated": completion(f'{{"label": "{wrong}", "score": 0.9, "explan'),
        "score_out_of_range": completion(json.dumps({"label": wrong, "score": 1.7, "explanation": "x"})),
        "score_wrong_type": completion(json.dumps({"label": wrong, "score": "high", "explanation": "x"})),
        "missing_fields": completion(json.dumps({"label": wrong})),
        "label_outside_rubric": completion(json.dumps({"label": wrong.upper(), "score": 0.9, "explanation": "x"})),
        "not_an_object": completion(json.dumps([wrong, 0.9])),
    }[kind]


# per trace (index mod len): what the provider does to the first attempts of that trace's calls,
# (attempt number of this trace and tier, tier, body) -> a fault step, or None for the honest answer
FAULTS: list[tuple[str, Callable[[int, str, Any], Step | None]]] = [
    ("clean", lambda n, tier, body: None),
    ("429 x2", lambda n, tier, body: Fail(429, RETRY_AFTER) if tier == "cheap" and n < 2 else None),
    ("5xx x2", lambda n, tier, body: Fail(500 if n == 0 else 503) if tier == "cheap" and n < 2 else None),
    ("hang x1", lambda n, tier, body: Hang(HANG_S) if tier == "cheap" and n < 1 else None),
    ("http garbage (cheap)", lambda n, tier, body: garbage("http_not_json" if n % 2 else "http_html", body)
     if tier == "cheap" else None),  # fmt: skip
    ("not JSON (both tiers)", lambda n, tier, body: garbage("not_json" if tier == "cheap" else "truncated", body)),
    ("schema violation (both)", lambda n, tier, body: garbage("score_out_of_range" if tier == "cheap"
                                                              else "missing_fields", body)),  # fmt: skip
    ("label outside rubric (cheap)", lambda n, tier, body: garbage("label_outside_rubric", body)
     if tier == "cheap" else None),  # fmt: skip
    ("5xx exhausted", lambda n, tier, body: Fail(502) if n < 3 else None),
    ("hang exhausted", lambda n, tier, body: Hang(HANG_S) if n < 3 else None),
    ("429 exhausted", lambda n, tier, body: Fail(429, RETRY_AFTER) if n < 3 else None),
    ("wrong types (cheap)", lambda n, tier, body: garbage("score_wrong_type" if n % 2 == 0 else "not_an_object", body)
     if tier == "cheap" else None),  # fmt: skip
]


class FaultyProvider:
    """Decides each request's fate (storm, the trace's fault, or the honest answer) and counts it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.storm_until: float | None = None
        self.attempts: Counter[tuple[int, str]] = Counter()  # non-storm requests per (trace, tier)
        self.did: Counter[str] = Counter()

    def step(self, body: Any) -> Step:
        if not isinstance(body, dict):
            return Fail(400)
        case, tier = case_of_body(body), tier_of(body)
        now = time.time()
        with self.lock:
            if self.storm_until is None:
                self.storm_until = now + STORM_S
            if now < self.storm_until:
                self.did["429 (storm)"] += 1
                return Fail(429, RETRY_AFTER, message="rate limit storm")
            n = self.attempts[(case, tier)]
            self.attempts[(case, tier)] += 1
        name, fault = FAULTS[case % len(FAULTS)]
        step = fault(n, tier, body)
        with self.lock:
            if step is None:
                self.did["honest"] += 1
            elif isinstance(step, Fail):
                self.did["429" if step.status == 429 else "5xx"] += 1
            elif isinstance(step, Hang):
                self.did["hang"] += 1
            else:
                self.did["garbage"] += 1
        return honest(body) if step is None else step


def case_of_body(body: Any) -> int:
    m = _CASE.search(json.dumps(body))
    assert m, "every judge request carries its trace's marker"
    return int(m.group(1))


def tier_of(body: Any) -> str:
    return "strong" if body["model"] == STRONG else "cheap"


def early_retries(server: FakeProviderServer) -> tuple[int, int, float | None]:
    """(requests that arrived before a Retry-After of the same call had expired, 429s with
    Retry-After, shortest wait from a 429 to the next request of the same call)."""
    by_key: dict[tuple[int, str], list[float]] = defaultdict(list)
    for r in server.requests:
        if isinstance(r.body, dict):
            by_key[(case_of_body(r.body), tier_of(r.body))].append(r.arrived_at)
    early = told = 0
    gaps = []
    for s in server.responses:
        if s.status != 429:
            continue
        told += 1
        wait = float(RETRY_AFTER)
        key = (case_of_body(s.request.body), tier_of(s.request.body))
        # early: before Retry-After had passed since the 429 started to go out (the client cannot
        # have had it earlier; ``sent_at``, after the last byte, can be later than the client's read)
        early += sum(1 for t in by_key[key] if s.sent_at < t < s.started_at + wait)
        later = [t - s.sent_at for t in by_key[key] if t > s.sent_at]
        if later:
            gaps.append(min(later))
    return early, told, (round(min(gaps), 3) if gaps else None)


@pytest.mark.parametrize("size", SIZES)
def test_provider_faults_end_to_end(
    size: str, deployment: Callable[..., Deployment], tmp_path: Any, figures: Callable[..., None]
) -> None:
    started = time.monotonic()
    n_traces = int(pick(size, 48, 192))
    budget = float(pick(size, 0.10, 0.40))  # about 2/3 of what judging everything would cost: binds
    rng = random.Random(6)
    rng.randrange(10**9)  # (drawn as before: the data below stays that of this seed)
    with FakeProviderServer(clock=time.time) as server:
        provider = FaultyProvider()
        server.default = Func(provider.step)
        judging = tmp_path / "judging.yaml"
        doc = config(server, max_in_flight=4, batch_max_messages=8, ledger_flush_s=0.2,
                     budget={"global_usd": budget, "period_s": 1e9})  # one budget period for the whole test
        doc["providers"][0].update(timeout_s=TIMEOUT_S, deadline_s=10.0)
        judging.write_text(yaml.safe_dump(doc))
        d = deployment(judging_file=judging)
        d.settings["FAKE_OPENAI_KEY"] = "sk-test"
        worker = d.start_worker()
        assert wait_for(lambda: worker.status()["judging"]["counters"]["assignments"] >= 1, 30)
        time.sleep(2)
        assignments_before = worker.status()["judging"]["counters"]["assignments"]
        traces, failing = make_traces(rng, n_traces)
        d.produce([(t[0].trace_id.hex().encode(), proto(t), None) for t in traces])

        def count(sql: str) -> int:
            return int(worker.sql(sql)[0][0])

        assert wait_for(lambda: count(f"SELECT count() FROM {DB}.traces FINAL") == n_traces, 90)
        sampled = {r[0] for r in worker.sql(f"SELECT trace_id FROM {DB}.traces FINAL WHERE sampled = 1")}
        assert len(sampled) == n_traces
        assert wait_for(lambda: count(f"SELECT count() FROM {DB}.verdicts FINAL") == n_traces, 180)
        quiet = wait_for(lambda: time.time() - max(r.arrived_at for r in server.requests) > 2.0, 30, 0.5)
        assert quiet, "the provider should go quiet once every trace has its verdict"
        time.sleep(0.5)  # the last ledger flush
        status = worker.status()["judging"]

        case_by_trace = {t[0].trace_id.hex(): i for i, t in enumerate(traces)}
        truth = {tid: ("fail" if i in failing else "pass") for tid, i in case_by_trace.items()}
        rows = worker.sql(f"SELECT trace_id, status, status_reason, label FROM {DB}.verdicts FINAL")
        keys = Counter(r[0] for r in rows)
        backlog = {r[0] for r in worker.sql(f"SELECT trace_id FROM {DB}.judge_backlog FINAL WHERE state = 'pending'")}
        by_status = Counter(r[1] for r in rows)
        invalid_verdicts = [r for r in rows if (r[1] == "ok") != (r[3] is not None)
                            or (r[1] == "ok" and (r[3] not in LABELS or r[3] != truth[r[0]]))]  # fmt: skip
        # deferred (budget) and transient failures must wait in the backlog: nothing silently dropped
        unresolved = [r for r in rows if r[1] == "budget_skipped" or (r[1] == "error" and r[2].startswith(TRANSIENT))]
        dropped = [r for r in unresolved if r[0] not in backlog]
        ledger = worker.sql(f"SELECT trace_id, status, result, kafka_partition, cost_usd, input_tokens "
                            f"FROM {DB}.judge_calls FINAL")  # fmt: skip
        invalid_calls = [c for c in ledger if (c[1] == "ok") != bool(c[2])
                         or (c[1] == "ok" and json.loads(c[2])["label"] != truth[c[0]])]  # fmt: skip
        spend = sum(c[4] for c in ledger)
        share_spend = Counter()
        for c in ledger:
            share_spend[c[3]] += c[4]
        billed = [s for s in server.responses if s.status == 200 and s.usage]
        early, told, min_wait = early_retries(server)
        rebalances = status["counters"]["assignments"] - assignments_before

        figures(scenario="6 judge provider faults end to end",
                guarantee="Retry-After honoured, no rebalance, no invalid verdict, budget held, nothing dropped",
                traces=n_traces, requests=len(server.requests), faults=dict(provider.did), responses_429=told,
                early_retries=early, min_wait_after_429_s=min_wait,
                invalid_accepted=len(invalid_verdicts) + len(invalid_calls),
                rebalances_caused=rebalances, spend_usd=round(spend, 4), budget_usd=budget,
                max_partition_share_used=round(max(share_spend.values()) / (budget / 4), 3),
                verdicts=dict(by_status), backlog_pending=len(backlog), paid_calls=len(billed),
                ledger_rows=len(ledger), dead_lettered=status["counters"]["dead_lettered"],
                seconds=round(time.monotonic() - started, 1))  # fmt: skip
        assert early == 0, "a retry came before the Retry-After the provider asked for"
        assert told >= 1 and provider.did["5xx"] >= 1 and provider.did["hang"] >= 1 and provider.did["garbage"] >= 1
        assert rebalances == 0
        assert invalid_verdicts == [] and invalid_calls == []
        assert set(keys) == sampled and set(keys.values()) == {1}  # one verdict row per sampled trace
        assert dropped == []
        assert by_status["ok"] >= 1 and by_status["unscored"] >= 1 and by_status["budget_skipped"] >= 1
        # budget: nothing is in flight now, so spend <= budget, per partition share too
        assert spend <= budget + 1e-9
        assert all(usd <= budget / 4 + 1e-9 for usd in share_spend.values())
        # every response the provider billed is a ledger row (no crash here)
        assert len(billed) == sum(1 for c in ledger if c[5] > 0)
        assert status["counters"]["dead_lettered"] == 0
