"""policy-diff against the real embedded ClickHouse: traces stored with the worker's row builders
and decided by the default policy are re-decided with it and with candidates; the command as a
user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from schemas.model import Trace
from stream.decide import TraceDecider
from stream.events import EventJoiner
from stream.policy import Policy, load_policy, parse_policy
from stream.policy_diff import NOT_JUDGED, policy_diff
from stream.store import ClickHouseStore
from tests.stream.gates.conftest import AgentTrace
from tests.stream.test_backfill import write

DEFAULT = Path(__file__).parents[2] / "stream" / "default_policy.yaml"
COMPLETED_NS = 1_800_000_000 * 10**9
HASH = "ab" * 32
T = datetime(2027, 1, 15, tzinfo=timezone.utc)


def retried_timeout(seed: int) -> Trace:
    """A tool call that times out and is made again with the same arguments: not suspected."""
    t = AgentTrace(seed=seed)
    t.llm(user="weather in Paris?", tool_calls=[("get_weather", {"city": "Paris"})], finish="tool_calls")
    t.tool("get_weather", {"city": "Paris"}, error=True, status_message="timeout", exception=("TimeoutError", "timeout"))
    t.tool("get_weather", {"city": "Paris"}, result='{"temperature_c": 18}')
    t.llm(answer="It is 18°C.")
    return t.build()


def looping(seed: int) -> Trace:
    t = AgentTrace(seed=seed)
    t.llm(user="find order 7", tool_calls=[("search", {"q": "order 7"})], finish="tool_calls")
    for _ in range(3):
        t.tool("search", {"q": "order 7"}, result='{"hits": 0}')
    t.llm(answer="I could not find it.")
    return t.build()


def clean(seed: int, conversation: str | None = None) -> Trace:
    t = AgentTrace(seed=seed)
    t.llm(user="hi", answer="hello")
    trace = t.build()
    if conversation is not None:  # as if the agent set gen_ai.conversation.id on its spans
        spans = [s.model_copy(update={"conversation_id": conversation,  # what the stored row is rebuilt from too
                                      "attributes": {**s.attributes, "gen_ai.conversation.id": conversation}})
                 for s in trace.spans]  # fmt: skip
        trace = Trace.fast(trace_id=trace.trace_id, spans=spans, completion_reason=trace.completion_reason)
    return trace


def store_decided(store: ClickHouseStore, traces: list[Trace], policy: Policy, completed_ns: int = COMPLETED_NS) -> None:
    """Decide with ``policy`` (and the stored product events) and write every row the worker writes."""
    decider = TraceDecider(policy)
    actions = EventJoiner(store, "", policy.action_signals, 600).signals_for(traces)
    done = [Trace.fast(trace_id=t.trace_id, spans=t.spans, completion_reason=t.completion_reason,
                       first_seen_ns=completed_ns - 10**9, last_seen_ns=completed_ns, completed_ns=completed_ns)
            for t in traces]  # fmt: skip
    write(store, [(t, decider.decide(t, actions.get(t.trace_id, ()))) for t in done])


def event(store: ClickHouseStore, event_id: str, trace_id: str, kind: str, late: bool) -> None:
    store.insert("action_events", [[event_id, trace_id, "", kind, T, "{}", trace_id, int(late), T]],
                 ["event_id", "trace_id", "conversation_id", "type", "ts", "attributes", "linked_trace_id", "is_late",
                  "ingested_at"])  # fmt: skip


def conversation_event(store: ClickHouseStore, event_id: str, conversation: str, kind: str, ts_ns: int,
                       linked: str, ingested_ns: int) -> None:  # fmt: skip
    """An event that names only its conversation, stored as late and linked to ``linked``."""
    at = lambda ns: datetime.fromtimestamp(ns / 10**9, tz=timezone.utc)  # noqa: E731
    store.insert("action_events", [[event_id, "", conversation, kind, at(ts_ns), "{}", linked, 1, at(ingested_ns)]],
                 ["event_id", "trace_id", "conversation_id", "type", "ts", "attributes", "linked_trace_id", "is_late",
                  "ingested_at"])  # fmt: skip


def verdict(store: ClickHouseStore, trace_id: str, label: str) -> None:
    store.insert("verdicts", [[trace_id, "task_completion", HASH, "ok", label, T]],
                 ["trace_id", "judge", "rubric_hash", "status", "label", "judged_at"])  # fmt: skip


def candidate(**changes: dict[str, object]) -> Policy:
    """The default policy with some gates' settings changed (None: the gate removed)."""
    doc = yaml.safe_load(DEFAULT.read_text())
    doc["gates"] = [g if g["name"] not in changes else {**g, **changes[g["name"]]} for g in doc["gates"]
                    if not (g["name"] in changes and changes[g["name"]] is None)]  # fmt: skip
    return parse_policy(yaml.safe_dump(doc), "candidate")


def seed(store: ClickHouseStore) -> dict[str, list[str]]:
    """Traces decided by the default policy: 3 retried timeouts, 2 loops (judged fail / pass),
    4 clean, one with a thumbs_down that joined before the decision, one with one stored late."""
    retried = [retried_timeout(100 + i) for i in range(3)]
    loops = [looping(200 + i) for i in range(2)]
    plain = [clean(300 + i) for i in range(4)]
    joined, late = clean(400), clean(401)
    event(store, "e1", joined.trace_id, "thumbs_down", late=False)
    store_decided(store, [*retried, *loops, *plain, joined, late], load_policy(None))
    event(store, "e2", late.trace_id, "thumbs_down", late=True)  # came after the decision
    verdict(store, loops[0].trace_id, "fail")
    verdict(store, loops[1].trace_id, "pass")
    ids = lambda ts: [t.trace_id for t in ts]  # noqa: E731
    return {"retried": ids(retried), "loops": ids(loops), "plain": ids(plain), "joined": [joined.trace_id],
            "late": [late.trace_id]}  # fmt: skip


@pytest.fixture
def stored(store: ClickHouseStore) -> dict[str, list[str]]:
    return seed(store)


def diff(store: ClickHouseStore, cand: Policy, judge: str | None = "task_completion"):  # type: ignore[no-untyped-def]
    return policy_diff(store, load_policy(None), cand, 0, 2**62, 1000, judge)


def test_same_policy_changes_nothing_and_matches_every_stored_decision(store: ClickHouseStore,
                                                                      stored: dict[str, list[str]]) -> None:  # fmt: skip
    d = diff(store, load_policy(None))
    assert d.traces == 11 and d.stored_differs == 0  # rebuilt traces and joined events decide as stored
    assert d.base.suspected == d.candidate.suspected == 3  # the 2 loops and the thumbs_down before the decision
    assert not d.dropped and not d.added and d.base.reasons == d.candidate.reasons
    assert d.base.reasons["gate:tool_loop"] == 2 and d.base.reasons["signal:thumbs_down"] == 1
    assert d.rubric_hash == HASH


def test_a_late_event_counts_for_the_traces_decided_after_it_came(store: ClickHouseStore) -> None:
    # three traces of one conversation: `before` and `linked` decided, then a thumbs_down naming only the
    # conversation comes (stored late, linked to `linked`, the latest started), then `after` is decided
    # and joins it: only `after` is a suspected failure, and re-deciding must say so for all three
    before, linked, after = (clean(500 + i, conversation="conv-x") for i in range(3))
    policy = load_policy(None)
    store_decided(store, [before], policy, COMPLETED_NS - 3 * 10**9)
    store_decided(store, [linked], policy, COMPLETED_NS - 2 * 10**9)
    conversation_event(store, "e3", "conv-x", "thumbs_down", after.start_ns, linked.trace_id, COMPLETED_NS - 10**9)
    store_decided(store, [after], policy, COMPLETED_NS)
    d = diff(store, policy, judge=None)
    assert d.traces == 3 and d.base.suspected == 1 and d.base.reasons["signal:thumbs_down"] == 1
    assert d.stored_differs == 0  # leaving out every late event would lose `after`'s; keeping it, add it to `before`


def test_dropping_a_gate_counts_the_judged_failures_given_up(store: ClickHouseStore,
                                                             stored: dict[str, list[str]]) -> None:  # fmt: skip
    d = diff(store, candidate(tool_loop=None))
    assert (d.base.suspected, d.candidate.suspected) == (3, 1)
    assert d.dropped == {"fail": 1, "pass": 1} and d.dropped_failing == stored["loops"][:1]
    assert d.candidate.reasons["gate:tool_loop"] == 0 and not d.added
    assert d.base.sampled - d.candidate.sampled == 2  # suspected failures are all sampled; these two no longer


def test_counting_recovered_errors_again_newly_suspects_the_retries(store: ClickHouseStore,
                                                                    stored: dict[str, list[str]]) -> None:  # fmt: skip
    off = {"ignore_recovered": False}
    d = diff(store, candidate(span_errors=off, exceptions=off, tool_errors=off), judge=None)
    assert d.added == {NOT_JUDGED: 3} and sorted(d.added_examples) == sorted(stored["retried"])
    assert (d.base.suspected, d.candidate.suspected) == (3, 6) and not d.dropped
    assert {r: d.candidate.reasons[r] for r in ("gate:span_errors", "gate:exceptions", "gate:tool_errors")} == {
        "gate:span_errors": 3, "gate:exceptions": 3, "gate:tool_errors": 3}
    assert d.judge is None and d.rubric_hash is None


SEED = """
import json, sys
from stream.store import ClickHouseStore
from tests.stream.test_policy_diff import seed
s = ClickHouseStore(sys.argv[1], "tracejudge"); s.migrate(); print(json.dumps(seed(s))); s.close()
"""


def test_the_command_prints_the_change(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRACEJUDGE_")},
           "TRACEJUDGE_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200", "PYTHONPATH": str(repo)}  # fmt: skip
    seeded = subprocess.run([sys.executable, "-c", SEED, f"chdb://{tmp_path / 'data' / 'clickhouse'}"], cwd=repo,
                            env=env, check=True, timeout=120, capture_output=True, text=True)  # fmt: skip
    loops = json.loads(seeded.stdout.strip().splitlines()[-1])["loops"]
    cand = tmp_path / "candidate.yaml"
    cand.write_text(DEFAULT.read_text().replace("  - {type: loop, name: tool_loop", "  # - {type: loop, name: tool_loop"))

    def tracejudge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "stream", "policy-diff", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    out = tracejudge(str(cand), "--since", "2020-01-01", "--until", "2100-01-01", "--judge", "task_completion")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "11 stored traces re-decided" in text
    assert "no longer suspected: 2 — by verdicts of task_completion abababababab: fail 1, pass 1" in text
    assert f"1 judged failing would no longer go to a judge at 1.0 (recall given up), e.g. {loops[0]}" in text
    assert "the current policy decides 0 of these traces differently" in text
    unnamed = tracejudge(str(cand), "--since", "2020-01-01", "--until", "2100-01-01")  # the only judge with verdicts
    assert unnamed.returncode == 0, unnamed.stderr
    assert "by verdicts of task_completion abababababab: fail 1, pass 1" in " ".join(unnamed.stdout.split())
    missing = tracejudge(str(tmp_path / "missing.yaml"))
    assert missing.returncode == 2 and "missing.yaml" in " ".join(missing.stderr.split())
    nothing = tracejudge(str(cand), "--since", "2000-01-01", "--until", "2000-01-02")
    assert nothing.returncode == 0 and "no stored traces in the window" in nothing.stdout
