"""End to end: gates, semantic and action signals, and sampling decisions from a real worker."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from stream.dlq import REASON
from stream.judge_envelope import decode
from stream.policy import load_policy
from stream.sampling.hashing import keep
from tests.factories import genai_trace, proto
from tests.stream.conftest import Deployment, wait_for

DB = "tracejudge"


def count(worker: Any, sql: str) -> int:
    return int(worker.sql(sql)[0][0])


def send_events(d: Deployment, topic: str, events: list[bytes]) -> None:
    async def run() -> None:
        p = AIOKafkaProducer(bootstrap_servers=d.broker.bootstrap)
        await p.start()
        try:
            for e in events:
                await p.send_and_wait(topic, e)
        finally:
            await p.stop()

    asyncio.run(run())


def test_gates_signals_and_sampling_end_to_end(deployment: Callable[..., Deployment], consume: Any) -> None:
    rng = random.Random(21)
    rng.randrange(10**9)  # (drawn as before: the traces below stay those of this seed)
    d = deployment()
    events_topic, judge_topic = d.settings["TRACEJUDGE_EVENTS_TOPIC"], d.settings["TRACEJUDGE_JUDGE_TOPIC"]
    events_dlq = d.settings["TRACEJUDGE_EVENTS_DLQ_TOPIC"]
    worker = d.start_worker()

    healthy = [genai_trace(rng, 5) for _ in range(60)]
    failing = genai_trace(rng, 5)
    failing[2].error = True  # a tool span with error status
    frustrated = genai_trace(rng, 3)
    frustrated[1].attrs["gen_ai.input.messages"] = json.dumps(
        [{"role": "user", "parts": [{"type": "text", "content": "This is useless. Let me talk to a human!"}]}]
    )
    thumbs_down, late = healthy[0], healthy[1]
    tid = lambda t: t[0].trace_id.hex()  # noqa: E731
    # an event that arrives before its trace completes joins the decision
    send_events(d, events_topic, [
        json.dumps({"trace_id": tid(thumbs_down), "type": "thumbs_down", "ts": "2026-11-22T10:00:00Z"}).encode(),
        b'{"trace_id": "nothex", "type": "thumbs_down", "ts": 1}',
        b'{"trace_id": "' + tid(late).encode() + b'", "type": "teleport", "ts": 1}',
    ])  # fmt: skip
    all_traces = [*healthy, failing, frustrated]
    d.produce([(tid(t).encode(), proto(t), None) for t in all_traces])
    assert wait_for(lambda: count(worker, f"SELECT count() FROM {DB}.traces FINAL") >= len(all_traces), 90)
    # an event about an already decided trace is stored, linked and counted as late
    send_events(d, events_topic, [json.dumps({"trace_id": tid(late), "type": "regenerate", "ts": 1795341600}).encode()])
    assert wait_for(lambda: count(worker, f"SELECT count() FROM {DB}.action_events FINAL WHERE is_late = 1") == 1, 30)

    rows = {r[0]: tuple(r[1:]) for r in worker.sql(
        f"SELECT trace_id, sample_class, sample_rule, inclusion_p, sampled, policy_version, failed_gates, signals "
        f"FROM {DB}.traces FINAL"
    )}  # fmt: skip
    version = load_policy(None).version
    assert {r[4] for r in rows.values()} == {version}
    assert rows[tid(failing)][:4] == ("suspected_failure", "gate:span_errors", 1.0, 1), rows[tid(failing)]
    assert "span_errors" in rows[tid(failing)][5]
    assert rows[tid(frustrated)][0] == "suspected_failure" and rows[tid(frustrated)][1].startswith("signal:")
    assert {"frustration", "escalation"} <= set(rows[tid(frustrated)][6])
    assert rows[tid(thumbs_down)][:3] == ("suspected_failure", "signal:thumbs_down", 1.0)
    for t in healthy[1:]:
        cls, rule, p, sampled, *_ = rows[tid(t)]
        assert (cls, rule, p) == ("success", "success:base", 0.02)
        assert sampled == int(keep("tracejudge", tid(t), 0.02))  # deterministic: same hash as anywhere

    (gate,) = worker.sql(f"SELECT reason, evidence FROM {DB}.gate_results FINAL WHERE trace_id = '{tid(failing)}' AND gate = 'span_errors'")
    assert failing[2].span_id.hex() in gate[1]
    semantic = worker.sql(f"SELECT type, message_index, evidence FROM {DB}.signals FINAL WHERE trace_id = '{tid(frustrated)}' AND source = 'semantic'")
    assert {r[0] for r in semantic} >= {"frustration", "escalation"} and all(r[1] == 0 for r in semantic)
    (late_sig,) = worker.sql(f"SELECT type, is_late FROM {DB}.signals FINAL WHERE trace_id = '{tid(late)}' AND source = 'action'")
    assert late_sig == ["regenerate", 1]

    sampled = {k for k, r in rows.items() if r[3]}
    judged = consume(judge_topic, expect=len(sampled), timeout=30)
    assert {r.key.decode() for r in judged} == sampled
    for r in judged:
        trace, meta = decode(r.value)
        assert trace.trace_id == r.key.decode() and meta["decision"]["policy_version"] == version
        assert len(trace.spans) == len(next(t for t in all_traces if tid(t) == trace.trace_id))

    dead = consume(events_dlq, expect=2, timeout=30)
    assert sorted(dict(r.headers)[REASON].decode() for r in dead) == ["invalid_trace_id", "unknown_type"]
