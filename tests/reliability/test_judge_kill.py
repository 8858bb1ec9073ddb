"""Fault scenario 7 (matrix rows 11 and 12): SIGKILL a judging worker between a judge's response and
the write of its verdict; restart. Real parts: tansu broker, `tracejudge worker` processes, embedded
ClickHouse, and a local provider server speaking the OpenAI wire protocol.

The kill lands in the window by construction. A ``Gate`` in front of the honest provider answers
exactly ``ANSWERS`` requests per worker run and holds every further request (those calls are in
flight at the kill, and they keep their batch, hence its verdict write, from completing):

* kind ``before_ledger``: the provider itself sends SIGKILL right after writing its last allowed
  response, before the worker can have put that call on its ledger (flushed every ``ledger_flush_s``
  and on every tick);
* kind ``after_ledger``: the test waits until the ledger shows the answered calls, checks that their
  verdicts are not written, then kills.

Accounting, from the provider's side (every request and every response it sent, on one clock with
the ledger): a call answered but not on the ledger at a kill is paid again after the restart; a call
on the ledger is reused from the verdict cache; a held request is sent again (never answered, so not
billed, but counted as a repeated request).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.factories import proto
from tests.judges.fake_provider import FakeProviderServer, Func, Hang, RecordedRequest, Reply, SentResponse
from tests.reliability.judge_support import honest, make_traces
from tests.reliability.support import SIZES, pick
from tests.stream.conftest import Deployment, wait_for
from tests.stream.judging_support import STRONG, config

DB = "tracejudge"
ANSWERS = 3  # responses sent per worker run before the kill
MAX_IN_FLIGHT = 4
PRICE_IN, PRICE_OUT = 1.0, 10.0  # USD per 1M tokens (judging_support.config): $0.002 per honest call
_CASE = re.compile(r"case-(\d+)-case")


def count(worker: Any, sql: str) -> int:
    return int(worker.sql(sql)[0][0])


def case_of(req: RecordedRequest) -> int:
    m = _CASE.search(json.dumps(req.body))
    assert m, "every judge request carries its trace's marker"
    return int(m.group(1))


def call_key(req: RecordedRequest) -> tuple[int, str]:
    return case_of(req), "strong" if req.body["model"] == STRONG else "cheap"


class Gate:
    """Answers honestly while it has answers left (``allow``; ``None`` = unlimited) and holds every
    other request; a held request whose round ended (its worker was killed) is dropped: connection
    closed, nothing billed."""

    def __init__(self, answer: Callable[[Any], Reply] = honest) -> None:
        self.answer = answer
        self.cond = threading.Condition()
        self.round = 0
        self.allow: int | None = 0
        self.dropped = 0
        # worker run of each request (by its body's identity; the server keeps every body alive): the
        # round only ends once the killed worker is reaped, so a request it sent just before the
        # SIGKILL, read by the server just after, still counts for the run that sent it
        self.round_of: dict[int, int] = {}

    def open(self, allow: int | None) -> None:
        with self.cond:
            self.allow = allow
            self.cond.notify_all()

    def end_round(self) -> None:
        with self.cond:
            self.round += 1
            self.cond.notify_all()

    def step(self) -> Func:
        def decide(body: Any) -> Reply | Hang:
            if not isinstance(body, dict):
                return Hang(0)  # cut short by the kill: nothing to answer
            with self.cond:
                mine = self.round
                self.round_of[id(body)] = mine
                while self.allow is not None and self.allow <= 0:
                    if self.round != mine:
                        self.dropped += 1
                        return Hang(0)  # its worker is gone
                    self.cond.wait(1.0)
                if self.allow is not None:
                    self.allow -= 1
            return self.answer(body)

        return Func(decide)


class Killer:
    """Counts 200 responses; after the ``after``-th of the current run, SIGKILLs ``pid`` from the
    provider's handler thread (kind ``before_ledger``) or just signals the test (``after_ledger``)."""

    def __init__(self, server: FakeProviderServer) -> None:
        self.server = server
        self.pid: int | None = None
        self.after = 0
        self.kill_now = False
        self.answered = threading.Event()
        self.killed_at: float | None = None
        server.on_response = self.on_response

    def arm(self, pid: int, after: int, kill_now: bool) -> None:
        self.pid, self.after, self.kill_now, self.killed_at = pid, after, kill_now, None
        self.answered.clear()

    def on_response(self, sent: SentResponse) -> None:
        if sent.status != 200 or self.pid is None:
            return
        self.after -= 1
        if self.after == 0:
            if self.kill_now:
                self.killed_at = self.server.clock()
                os.kill(self.pid, signal.SIGKILL)
            self.answered.set()

    def kill(self) -> None:
        assert self.pid is not None
        self.killed_at = self.server.clock()
        os.kill(self.pid, signal.SIGKILL)


def kill_rounds(d: Deployment, server: FakeProviderServer, gate: Gate, killer: Killer, kinds: list[str],
                trace_ids: list[str], answers: int = ANSWERS) -> tuple[Any, list[float]]:  # fmt: skip
    """Run one worker per kind, kill it in the judge-response → verdict window, restart; the last
    worker runs with the gate open. Returns (last worker, kill times on the server's clock)."""
    kills: list[float] = []
    worker = d.start_worker()
    for kind in kinds:
        first = len(server.responses)
        killer.arm(worker.proc.pid, answers, kill_now=kind == "before_ledger")
        gate.open(answers)
        assert killer.answered.wait(90), "the provider never sent this run's answers"
        if kind == "after_ledger":
            wait_until_ledgered_without_verdict(worker, server, gate, first, trace_ids)
            killer.kill()
        worker.proc.wait(10)
        assert worker.proc.returncode == -signal.SIGKILL
        assert killer.killed_at is not None
        kills.append(killer.killed_at)
        killer.pid = None
        gate.end_round()
        gate.open(0)
        worker = d.start_worker()
    gate.open(None)
    return worker, kills


def wait_until_ledgered_without_verdict(worker: Any, server: FakeProviderServer, gate: Gate, first: int,
                                        trace_ids: list[str]) -> None:  # fmt: skip
    """Wait until every answer of this run is on the ledger; if each one's verdict is already written
    too (its whole batch was answered), let one more answer through and look again."""
    for _ in range(30):
        answered = [s for s in server.responses[first:] if s.status == 200]
        ids = sorted({trace_ids[case_of(s.request)] for s in answered})
        id_list = ", ".join(f"'{i}'" for i in ids)
        on_ledger = wait_for(lambda: count(worker, f"SELECT count() FROM {DB}.judge_calls FINAL "  # noqa: B023
                                                   f"WHERE trace_id IN ({id_list})") >= len(answered), 15)  # fmt: skip
        assert on_ledger, "answered calls never reached the ledger while their batch was in flight"
        judged = count(worker, f"SELECT count() FROM {DB}.verdicts FINAL WHERE trace_id IN ({id_list})")
        if judged < len(ids):
            return
        gate.open(1)
        n = len(answered)
        assert wait_for(lambda: sum(1 for s in server.responses[first:] if s.status == 200) > n, 30)  # noqa: B023
    raise AssertionError("no answered call was ever left waiting for its verdict")


def run_of(t: float, kills: list[float]) -> int:
    """Which worker run (0-based) a time on the shared clock belongs to."""
    return sum(1 for k in kills if t >= k)


def at_kills(server: FakeProviderServer, gate: Gate, ledger_ts_ms: list[int],
             kills: list[float]) -> tuple[list[int], list[int]]:  # fmt: skip
    """Per killed run, from the provider's records and the ledger's call times (a worker writes its
    ledger before it dies): (calls answered but not on the ledger, requests never answered) at the kill."""
    answered = Counter(gate.round_of[id(s.request.body)] for s in server.responses if s.status == 200)
    ledgered = Counter(run_of(ms / 1000, kills) for ms in ledger_ts_ms)
    arrived = Counter(gate.round_of[id(r.body)] for r in server.requests if isinstance(r.body, dict))
    runs = range(len(kills))
    return [answered[r] - ledgered[r] for r in runs], [arrived[r] - answered[r] for r in runs]


@pytest.mark.parametrize("size", SIZES)
def test_sigkill_between_judge_response_and_verdict_write(
    size: str, deployment: Callable[..., Deployment], tmp_path: Any, figures: Callable[..., None]
) -> None:
    started = time.monotonic()
    n_kills = int(pick(size, 2, 10))
    n_traces = int(pick(size, 24, 60))
    kinds = ["before_ledger" if k % 2 == 0 else "after_ledger" for k in range(n_kills)]
    rng = random.Random(11)
    rng.randrange(10**9)  # (drawn as before: the data below stays that of this seed)
    with FakeProviderServer(clock=time.time) as server:
        gate, killer = Gate(), Killer(server)
        server.default = gate.step()
        judging = tmp_path / "judging.yaml"
        doc = config(server, max_in_flight=MAX_IN_FLIGHT, batch_max_messages=8, ledger_flush_s=1.0,
                     budget={"global_usd": 100.0})
        doc["providers"][0].update(timeout_s=60.0, deadline_s=120.0)  # held calls stay in flight
        judging.write_text(yaml.safe_dump(doc))
        d = deployment(judging_file=judging)
        d.settings["FAKE_OPENAI_KEY"] = "sk-test"
        traces, failing = make_traces(rng, n_traces)
        d.produce([(t[0].trace_id.hex().encode(), proto(t), None) for t in traces])
        worker, kills = kill_rounds(d, server, gate, killer, kinds, [t[0].trace_id.hex() for t in traces])

        assert wait_for(lambda: count(worker, f"SELECT count() FROM {DB}.traces FINAL") == n_traces, 90)
        sampled = {r[0] for r in worker.sql(f"SELECT trace_id FROM {DB}.traces FINAL WHERE sampled = 1")}
        assert len(sampled) == n_traces
        assert wait_for(lambda: count(worker, f"SELECT count() FROM {DB}.verdicts FINAL") == n_traces, 120)
        time.sleep(1.5)  # nothing more arrives, the last ledger flush is done

        rows = worker.sql(f"SELECT trace_id, status, label, toUnixTimestamp64Milli(judged_at) "
                          f"FROM {DB}.verdicts FINAL")  # fmt: skip
        case_by_trace = {t[0].trace_id.hex(): i for i, t in enumerate(traces)}
        assert {r[0] for r in rows} == sampled
        assert all(r[1] == "ok" for r in rows)
        assert all((r[2] == "fail") == (case_by_trace[r[0]] in failing) for r in rows)
        dup_final = count(worker, f"SELECT count() FROM (SELECT trace_id, judge, rubric_hash FROM {DB}.verdicts "
                                  "FINAL GROUP BY ALL HAVING count() > 1)")  # fmt: skip
        raw = count(worker, f"SELECT count() FROM {DB}.verdicts")
        dup_raw = raw - count(worker, f"SELECT count() FROM (SELECT DISTINCT trace_id, judge, rubric_hash "
                                      f"FROM {DB}.verdicts)")  # fmt: skip

        # the provider's side of every run
        answered = [s for s in server.responses if s.status == 200]
        ledger = worker.sql(f"SELECT toUnixTimestamp64Milli(ts), cost_usd FROM {DB}.judge_calls FINAL")
        unledgered, in_flight = at_kills(server, gate, [ms for ms, _ in ledger], kills)
        # calls answered before a kill whose verdict was written after it: the kill was in the window
        judged_at = {case_by_trace[r[0]]: r[3] / 1000 for r in rows}
        cases_of_run = [{case_of(s.request) for s in answered if gate.round_of[id(s.request.body)] == r}
                        for r in range(n_kills)]  # fmt: skip
        window = [sum(1 for c in cases_of_run[r] if judged_at[c] > kills[r]) for r in range(n_kills)]
        whole = [r for r in server.requests if isinstance(r.body, dict)]
        truncated = len(server.requests) - len(whole)  # requests cut short by a kill
        keys = [call_key(r) for r in whole]
        distinct = len(set(keys))
        repeated_requests = len(keys) - distinct
        paid_twice = len(answered) - len({call_key(s.request) for s in answered})

        figures(scenario="7 SIGKILL between judge response and verdict write",
                guarantee="one verdict per (trace, judge, rubric); paid twice <= answered-not-ledgered",
                kills=n_kills, kinds="/".join(sorted(set(kinds))), sampled=len(sampled), verdicts=len(rows),
                dup_verdicts_final=dup_final, dup_verdicts_raw=dup_raw, provider_requests=len(keys),
                distinct_calls=distinct, truncated_requests=truncated, repeated_paid_calls=repeated_requests,
                billed_twice=paid_twice,
                in_flight_at_kills=in_flight, answered_unledgered_at_kills=unledgered,
                verdicts_pending_at_kills=window, max_in_flight=MAX_IN_FLIGHT,
                seconds=round(time.monotonic() - started, 1))  # fmt: skip
        assert dup_final == 0 and dup_raw == 0
        assert all(w >= 1 for w in window), "every kill landed between a judge response and its verdict write"
        assert all(h <= MAX_IN_FLIGHT for h in in_flight)
        for r, kind in enumerate(kinds):
            if kind == "after_ledger":
                assert unledgered[r] == 0
        # exact accounting: only answers missing from the ledger are paid again, each once; held
        # requests are sent again (unbilled)
        assert paid_twice == sum(unledgered)
        assert repeated_requests == paid_twice + sum(in_flight)
        # the matrix bound: per kill, repeated paid calls <= calls in flight (incl. answers not yet on the ledger)
        assert all(u + h <= MAX_IN_FLIGHT + ANSWERS for u, h in zip(unledgered, in_flight, strict=True))
        assert gate.dropped == sum(in_flight)
        spent = float(worker.sql(f"SELECT sum(cost_usd) FROM {DB}.judge_calls FINAL")[0][0])
        assert abs(spent - 0.002 * len(ledger)) < 1e-9


# a costly answer: 800 in + 400 out = $0.0048, just under the upper estimate a call reserves
# (prompt chars / 3 + 600 tokens in, max_tokens = 512 out: about $0.006)
COSTLY = (800, 400)


def price(usage: tuple[int, int]) -> float:
    return (usage[0] * PRICE_IN + usage[1] * PRICE_OUT) / 1e6
BUDGET_USD = 0.06  # 4 partitions: $0.015 each, about three calls


@pytest.mark.parametrize("size", SIZES)
def test_budget_with_kills_mid_call_spend_within_budget_plus_in_flight(
    size: str, deployment: Callable[..., Deployment], tmp_path: Any, figures: Callable[..., None]
) -> None:
    started = time.monotonic()
    n_kills = int(pick(size, 1, 3))
    n_traces = 32
    rng = random.Random(12)
    rng.randrange(10**9)  # (drawn as before: the data below stays that of this seed)
    with FakeProviderServer(clock=time.time) as server:
        gate, killer = Gate(lambda body: honest(body, COSTLY)), Killer(server)
        server.default = gate.step()
        judging = tmp_path / "judging.yaml"
        # one budget period for the whole test (periods are floor(unix time / period_s))
        doc = config(server, max_in_flight=MAX_IN_FLIGHT, batch_max_messages=8, ledger_flush_s=1.0,
                     budget={"global_usd": BUDGET_USD, "period_s": 1e9})  # fmt: skip
        doc["providers"][0].update(timeout_s=60.0, deadline_s=120.0)
        judging.write_text(yaml.safe_dump(doc))
        d = deployment(judging_file=judging)
        d.settings["FAKE_OPENAI_KEY"] = "sk-test"
        traces, failing = make_traces(rng, n_traces)
        d.produce([(t[0].trace_id.hex().encode(), proto(t), None) for t in traces])
        worker, kills = kill_rounds(d, server, gate, killer, ["before_ledger"] * n_kills,
                                    [t[0].trace_id.hex() for t in traces], answers=2)  # fmt: skip

        assert wait_for(lambda: count(worker, f"SELECT count() FROM {DB}.traces FINAL") == n_traces, 90)
        assert count(worker, f"SELECT count() FROM {DB}.traces FINAL WHERE sampled = 1") == n_traces
        assert wait_for(lambda: count(worker, f"SELECT count() FROM {DB}.verdicts FINAL") == n_traces, 120)
        time.sleep(1.5)  # nothing more arrives (the ledger flushes every second)

        case_by_trace = {t[0].trace_id.hex(): i for i, t in enumerate(traces)}
        rows = worker.sql(f"SELECT trace_id, status, label FROM {DB}.verdicts FINAL")
        statuses = Counter(r[1] for r in rows)
        assert set(statuses) <= {"ok", "budget_skipped"}
        assert all((r[2] == "fail") == (case_by_trace[r[0]] in failing) for r in rows if r[1] == "ok")
        assert all(r[2] is None for r in rows if r[1] != "ok")
        skipped = {r[0] for r in rows if r[1] == "budget_skipped"}
        backlog = {r[0] for r in worker.sql(f"SELECT trace_id FROM {DB}.judge_backlog FINAL WHERE state = 'pending'")}
        assert skipped and skipped <= backlog  # the budget bound, and every deferred trace waits in the backlog

        ledger = worker.sql(f"SELECT toUnixTimestamp64Milli(ts), cost_usd FROM {DB}.judge_calls FINAL")
        ledger_usd = sum(c for _, c in ledger)
        answered = [s for s in server.responses if s.status == 200]
        provider_usd = sum(price(s.usage) for s in answered if s.usage)
        unledgered, in_flight = at_kills(server, gate, [ms for ms, _ in ledger], kills)
        figures(scenario="7b budget, SIGKILL mid-call",
                guarantee="spend <= budget + in-flight; ledger $ vs provider $",
                kills=n_kills, budget_usd=BUDGET_USD, ledger_usd=round(ledger_usd, 6),
                provider_usd=round(provider_usd, 6), over_budget_usd=round(max(0.0, provider_usd - BUDGET_USD), 6),
                answered_unledgered_at_kills=unledgered, in_flight_at_kills=in_flight,
                calls_paid=len(answered), verdicts=dict(statuses), backlog_pending=len(backlog),
                seconds=round(time.monotonic() - started, 1))  # fmt: skip
        # what the provider billed = the ledger + the answers the kills kept off it
        assert abs(provider_usd - ledger_usd - price(COSTLY) * sum(unledgered)) < 1e-9
        # estimates bound the actual cost, so the ledger never passes the budget...
        assert ledger_usd <= BUDGET_USD + 1e-9
        # ...and the provider's bill passes it by at most the calls in flight at the kills
        in_flight_usd = price(COSTLY) * sum(u + h for u, h in zip(unledgered, in_flight, strict=True))
        assert provider_usd <= BUDGET_USD + in_flight_usd + 1e-9
        assert all(h <= MAX_IN_FLIGHT for h in in_flight) and all(u <= 2 for u in unledgered)
