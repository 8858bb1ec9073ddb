"""Scenario 13: product events while the worker is SIGKILLed again and again.

Traces stream in (as in scenario 1, without judging) and, for about half of them, a product event
follows at a random delay: before the trace completes (it should join the decision), around its
completion (the race between the decision and the event's own check), or after (linked late).
Half name the trace, half only its conversation. The worker is SIGKILLed at random moments and
restarted. At the end, against what the broker acknowledged:

* every event is stored in ``action_events`` once (lost 0, duplicated 0);
* every event reached every stored trace it is about (its trace, or each trace of its
  conversation in the window): a ``signals`` row of that trace for the event, from the decision
  or linked late — also one stored while a chunk was being decided when the kill fell between the
  chunk's trace rows and its re-check of the events (the worker that recovers the partition
  sweeps for those);
* no event is both in a decision and linked late to the same trace;
* a trace whose decision saw a ``thumbs_down`` is a suspected failure.

Random kills seldom fall in that window (milliseconds wide), so a second test stages it: the
worker exits right after its trace-row insert while an event about the trace was stored during
the decision, and the next worker links it late.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from stream.stored_events import EVENT_COLUMNS, StoredEvent
from stream.faults import write_faults
from stream.signals.actions import ActionEvent
from stream.store import ClickHouseStore
from tests.factories import genai_trace, proto
from tests.reliability.load import DB, BackgroundProducer, TraceLoad, stored
from tests.reliability.support import SIZES, pick
from tests.stream.conftest import Deployment, wait_for

WINDOW_S = 600  # action_join_window, the default


class EventLoad(BackgroundProducer):
    """Sends one product event for about half of the traces ``load`` has sent, each at a random
    delay after its trace; remembers what the broker acknowledged: event id -> (trace id or "",
    conversation or "", type, ts in ms)."""

    def __init__(self, bootstrap: str, topic: str, load: TraceLoad, seed: int) -> None:
        super().__init__("event-load")
        self.bootstrap, self.topic, self.load = bootstrap, topic, load
        self.rng = random.Random(seed)
        self.sent: dict[str, tuple[str, str, str, int]] = {}

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            seen: set[str] = set()
            due: list[tuple[float, str]] = []  # (when, trace id)
            while not self._stop.is_set():
                now = time.monotonic()
                for tid in list(self.load.sent):  # the load thread adds to it
                    if tid not in seen:
                        seen.add(tid)
                        if self.rng.random() < 0.5:  # before, around or after decision_wait (2 s)
                            due.append((now + self.rng.uniform(0.0, 5.0), tid))
                ready = [d for d in due if d[0] <= now]
                due = [d for d in due if d[0] > now]
                for _, tid in ready:
                    n = len(self.sent)
                    by_trace = self.rng.random() < 0.5
                    conv = self.load.conversations.get(tid, "")
                    kind = self.rng.choice(("thumbs_down", "regenerate", "thumbs_up"))
                    ts = time.time_ns() // 1_000_000
                    body = {"event_id": f"ev-{n}", "type": kind, "ts": ts / 1000,
                            **({"trace_id": tid} if by_trace or not conv else {"conversation_id": conv})}  # fmt: skip
                    await producer.send_and_wait(self.topic, json.dumps(body).encode())
                    self.sent[f"ev-{n}"] = (body.get("trace_id", ""), body.get("conversation_id", ""), kind, ts)
                await asyncio.sleep(0.05)
        finally:
            await producer.stop()


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("size", SIZES)
def test_product_events_reach_their_traces_across_kills(
    deployment: Callable[..., Deployment], figures: Callable[..., None], size: str
) -> None:
    rng = random.Random(pick(size, 303, 404))
    kills = int(pick(size, 4, 20))
    d = deployment(kafka_session_timeout=3, decision_wait=2.0)
    worker = d.start_worker()
    bootstrap = d.settings["TRACEJUDGE_KAFKA_BOOTSTRAP"]
    load = TraceLoad(bootstrap, d.input_topic, rate=20, seed=rng.randrange(10**6), keyed_share=0.7).start()
    events = EventLoad(bootstrap, d.settings["TRACEJUDGE_EVENTS_TOPIC"], load, rng.randrange(10**6)).start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 4.5))
            assert worker.proc.poll() is None, f"worker died on its own; see {worker.log_path}"
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait()
            worker.stop()
            worker = d.start_worker()
        time.sleep(6.0)  # the last events (up to 5 s after their trace) go out
    finally:
        load.stop()
        events.stop()
    sent = events.sent
    stored_events = lambda: int(worker.sql(f"SELECT uniqExact(event_id) FROM {DB}.action_events")[0][0])  # noqa: E731
    all_traces = lambda: (s := stored(worker.sql, load))["traces_final"] >= s["traces_sent"]  # noqa: E731
    assert wait_for(lambda: all_traces() and stored_events() >= len(sent), 120, 1.0), (
        stored(worker.sql, load), stored_events(), len(sent))
    time.sleep(1.0)

    rows = worker.sql(f"SELECT event_id, count() FROM {DB}.action_events FINAL GROUP BY event_id")
    in_table = {r[0]: int(r[1]) for r in rows}
    traces = {r[0]: (r[1], int(r[2]), int(r[3]), r[4]) for r in worker.sql(
        f"SELECT trace_id, conversation_id, toUnixTimestamp64Milli(start_time), toUnixTimestamp64Milli(end_time), "
        f"sample_class FROM {DB}.traces FINAL")}  # fmt: skip
    signal_rows = worker.sql(f"SELECT trace_id, signal_key, is_late FROM {DB}.signals WHERE source = 'action'")
    reached = {(r[0], r[1]) for r in signal_rows}
    in_decision = {(r[0], r[1]) for r in signal_rows if int(r[2]) == 0}
    both = in_decision & {(r[0], r[1]) for r in signal_rows if int(r[2]) == 1}

    def about(e: tuple[str, str, str, int]) -> list[str]:
        """The stored traces the event is about (its trace, or its conversation's traces in the window)."""
        tid, conv, _, ts = e
        if tid:
            return [tid] if tid in traces else []
        return [t for t, (c, start, end, _) in traces.items() if c == conv and start <= ts <= end + WINDOW_S * 1000]

    orphans = [eid for eid, e in sent.items() if (ts := about(e)) and not any((t, eid) in reached for t in ts)]
    unreached = [(t, eid) for eid, e in sent.items() for t in about(e) if (t, eid) not in reached]
    by_conversation = sum(len(about(e)) for e in sent.values() if not e[0])
    missed_failure = [t for t, eid in in_decision if sent.get(eid, ("", "", "", 0))[2] == "thumbs_down"
                      and traces.get(t, ("", 0, 0, "suspected_failure"))[3] != "suspected_failure"]  # fmt: skip
    late = sum(1 for r in signal_rows if int(r[2]) == 1)
    figures(scenario="13 product events under SIGKILL", guarantee="every event stored once and reaching every trace it is about",
            kills=kills, traces=len(load.sent), events=len(sent), lost=len(set(sent) - set(in_table)),
            dup_final=sum(n - 1 for n in in_table.values()), in_decision=len(in_decision), linked_late=late,
            orphans=len(orphans), conversation_pairs=by_conversation, pairs_unreached=len(unreached),
            both_ways=len(both), thumbs_down_not_suspected=len(missed_failure))  # fmt: skip
    assert set(sent) <= set(in_table) and all(n == 1 for n in in_table.values())
    assert len(in_decision) > 0 and late > 0  # both paths were taken
    assert not orphans, orphans[:10]
    assert not unreached, unreached[:10]
    assert not both and not missed_failure


def test_an_event_stored_while_a_killed_worker_decided_its_trace_is_linked_by_the_next_worker(
    store_dsn: str, deployment: Callable[..., Deployment], tmp_path: Path
) -> None:
    """The crash window, staged end to end: worker processes on a store server; the worker's trace-row
    insert waits (``stream/faults.py``: ``kill_after_insert``) while the test stores a product event
    about that trace, as another worker's events side would after the decision read the events;
    then the worker exits right after the insert, before its re-check. The event is stored,
    unlinked and not in ``signals``; the next worker, taking the partition over, links it late."""
    faults = tmp_path / "faults.json"
    write_faults(faults, kill_after_insert="traces", kill_pause=3.0)
    d = deployment(partitions=1, clickhouse_dsn=store_dsn, faults_file=faults, decision_wait=1.0)
    worker = d.start_worker()
    trace = genai_trace(random.Random(7), 4)
    tid = trace[0].trace_id.hex()
    d.produce([(trace[0].trace_id.hex().encode(), proto(trace), None)])
    assert wait_for(lambda: b"waits 3.0s, then the process exits" in worker.log_path.read_bytes(), 60), worker.log_path
    other = ClickHouseStore(store_dsn, database=DB)  # the events side of another worker
    try:
        event = ActionEvent("ev-crash", "thumbs_down", time.time_ns() // 1_000_000, tid, "", "{}")
        other.insert("action_events", [StoredEvent(event, "events", 0, 0, time.time_ns() // 1_000_000).row()],
                     EVENT_COLUMNS)  # fmt: skip
        assert worker.proc.wait(timeout=60) == 137
        worker.stop()
        q = lambda sql: other.query(sql)[1]  # noqa: E731
        assert q(f"SELECT count() FROM {DB}.traces FINAL WHERE trace_id = '{tid}'") == [(1,)]  # decided,
        assert q(f"SELECT linked_trace_id, is_late FROM {DB}.action_events FINAL") == [("", 0)]  # not linked
        assert q(f"SELECT count() FROM {DB}.signals WHERE source = 'action'") == [(0,)]
        faults.unlink()
        d.start_worker()  # takes the partition over
        linked = lambda: q(f"SELECT linked_trace_id, is_late FROM {DB}.action_events FINAL")  # noqa: E731
        assert wait_for(lambda: linked() == [(tid, 1)], 60), linked()
        assert q(f"SELECT trace_id, signal_key, is_late FROM {DB}.signals WHERE source = 'action'") == [
            (tid, "ev-crash", 1)]  # fmt: skip
    finally:
        other.close()
