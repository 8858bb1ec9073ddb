"""Skipped offsets end to end: ``tracejudge worker`` processes on the real broker whose fetches lose
records (the ``skip_fetched`` fault of stream/faults.py, which removes fetched records as a broker
leaving them out would), whose re-reads pause or fail, which are killed or restarted meanwhile.
The parts of stream/offset_gaps.py one at a time: test_offset_gaps.py."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.structs import OffsetAndMetadata

from stream.faults import write_faults
from tests.factories import genai_trace, proto
from tests.stream.conftest import Deployment, wait_for


class _AsFaust(RoundRobinPartitionAssignor):
    name = "faust"  # the group's protocol: tansu keeps it after the workers leave


async def _commit(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> None:
    """What an operator's ``kafka-consumer-groups --reset-offsets --to-offset`` does once the workers
    are stopped. tansu takes commits only from a member of the group, so this joins it."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         partition_assignment_strategy=(_AsFaust,))  # fmt: skip
    await c.start()
    try:
        c.subscribe([tp.topic])
        deadline = time.monotonic() + 60
        while tp not in c.assignment() and time.monotonic() < deadline:
            await c.getmany(timeout_ms=200, max_records=1)
        await c.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await c.stop()


def test_a_worker_that_dead_letters_unreadable_offsets_stores_the_rest_and_an_offset_reset_recovers_them(
    deployment: Callable[..., Deployment], tmp_path: Path, consume: Callable[..., list[Any]],
) -> None:  # fmt: skip
    faults = tmp_path / "faults.json"
    write_faults(faults, skip_fetched=2, reread_fail=True)  # 2 records lost in fetches, never served again
    d = deployment(partitions=1, faults_file=str(faults), gap_reread_deadline=1, gap_unrecovered="dead_letter")
    worker = d.start_worker()
    traces = [genai_trace(random.Random(80 + i), 3) for i in range(10)]
    d.produce([(t[0].trace_id.hex().encode(), proto(t), 0) for t in traces])

    def stored(w: Any) -> int:
        return int(w.sql("SELECT count() FROM tracejudge.traces FINAL")[0][0])

    assert wait_for(lambda: stored(worker) == 8, 90), f"{stored(worker)} of 8 traces stored"
    counters = worker.status()["counters"]
    assert counters["unrecovered_offsets"] == {d.input_topic: 2} == counters["skipped_offsets"]
    assert counters["reread_messages"] == 0 and worker.proc.poll() is None  # went on, did not exit
    named: set[int] = set()
    for r in consume(d.dlq_topic, idle=2.0, timeout=30):
        h = {k: v.decode() for k, v in r.headers}
        assert (h["tracejudge.dlq.reason"], h["tracejudge.dlq.source.topic"]) == ("unrecovered_offsets", d.input_topic)
        named |= set(range(int(h["tracejudge.dlq.source.offset"]), int(h["tracejudge.dlq.source.last_offset"]) + 1))
    assert len(named) == 2 and named <= set(range(len(traces)))
    assert "fault injected: re-read of offsets" in d.workers[0].log_path.read_text()

    # the runbook (README "Delivery guarantees"): once the broker serves them, stop the group, move its
    # committed offset back to the first offset named, start again; what follows is replayed idempotently
    worker.stop(timeout=30)
    write_faults(faults)
    asyncio.run(_commit(d.broker.bootstrap, "tj-" + d.input_topic, TopicPartition(d.input_topic, 0), min(named)))
    worker = d.start_worker()
    assert wait_for(lambda: stored(worker) == len(traces), 90), f"{stored(worker)} of {len(traces)} traces stored"
    assert int(worker.sql("SELECT count() FROM tracejudge.spans FINAL")[0][0]) == 3 * len(traces)
    assert int(worker.sql("SELECT count() FROM tracejudge.traces")[0][0]) >= len(traces)


def test_a_worker_whose_fetches_skip_records_still_stores_every_trace(
    deployment: Callable[..., Deployment], tmp_path: Path,
) -> None:  # fmt: skip
    faults = tmp_path / "faults.json"
    write_faults(faults, skip_fetched=3)  # the next 3 fetched span records never reach the streams
    d = deployment(partitions=1, faults_file=str(faults))
    worker = d.start_worker()
    traces = [genai_trace(random.Random(60 + i), 3) for i in range(12)]
    d.produce([(t[0].trace_id.hex().encode(), proto(t), 0) for t in traces])

    def stored() -> int:
        return int(worker.sql("SELECT count() FROM tracejudge.traces FINAL")[0][0])

    assert wait_for(lambda: stored() == len(traces), 90), f"{stored()} of {len(traces)} traces stored"
    assert int(worker.sql("SELECT count() FROM tracejudge.spans FINAL")[0][0]) == 3 * len(traces)
    counters = worker.status()["counters"]
    assert counters["skipped_offsets"] == {d.input_topic: 3} and counters["reread_messages"] == 3
    log = d.workers[0].log_path.read_text()
    assert log.count("fault injected: fetched record") == 3 and "3 messages handled" in log


def test_a_worker_killed_while_it_reads_skipped_offsets_again_loses_nothing(
    deployment: Callable[..., Deployment], tmp_path: Path,
) -> None:  # fmt: skip
    faults = tmp_path / "faults.json"
    write_faults(faults, skip_fetched=2, reread_pause=30)  # the re-read waits: the worker is killed meanwhile
    d = deployment(partitions=1, faults_file=str(faults))
    worker = d.start_worker()
    traces = [genai_trace(random.Random(70 + i), 3) for i in range(8)]
    d.produce([(t[0].trace_id.hex().encode(), proto(t), 0) for t in traces])
    assert wait_for(lambda: worker.status()["counters"]["skipped_offsets"] == {d.input_topic: 2}, 60)
    time.sleep(3)  # Faust commits every second: had it recorded the gap, the commit would now be past it
    worker.proc.kill()
    worker.proc.wait(30)
    write_faults(faults)  # no faults for the next worker
    worker = d.start_worker()

    def stored() -> int:
        return int(worker.sql("SELECT count() FROM tracejudge.traces FINAL")[0][0])

    assert wait_for(lambda: stored() == len(traces), 90), f"{stored()} of {len(traces)} traces stored"
    assert int(worker.sql("SELECT count() FROM tracejudge.spans FINAL")[0][0]) == 3 * len(traces)
    assert worker.status()["counters"]["skipped_offsets"] == {}  # read the normal way from the committed offset


def test_a_worker_whose_fetches_skip_product_events_still_stores_every_event(
    deployment: Callable[..., Deployment], tmp_path: Path,
) -> None:  # fmt: skip
    faults = tmp_path / "faults.json"
    write_faults(faults, skip_fetched=2)
    d = deployment(partitions=1, faults_file=str(faults))
    worker = d.start_worker()
    topic = d.settings["TRACEJUDGE_EVENTS_TOPIC"]
    events = [json.dumps({"trace_id": f"{i:032x}", "type": "regenerate", "ts": 1795341600 + i}).encode() for i in range(6)]

    async def send() -> None:
        p = AIOKafkaProducer(bootstrap_servers=d.broker.bootstrap)
        await p.start()
        try:
            for e in events:
                await p.send_and_wait(topic, e, partition=0)
        finally:
            await p.stop()

    asyncio.run(send())

    def stored() -> int:
        return int(worker.sql("SELECT count() FROM tracejudge.action_events FINAL")[0][0])

    assert wait_for(lambda: stored() == len(events), 60), f"{stored()} of {len(events)} events stored"
    counters = worker.status()["counters"]
    assert counters["skipped_offsets"] == {topic: 2} and counters["reread_messages"] == 2


@pytest.mark.parametrize("before", [4, 1], ids=["committed-4", "committed-1"])
def test_a_restarted_worker_whose_first_fetch_skips_the_committed_offset_stores_every_trace(
    deployment: Callable[..., Deployment], tmp_path: Path, before: int,
) -> None:  # fmt: skip
    # committed 4: Faust's own seek would take offset 4 as read (7 of 8 traces stored with it);
    # committed 1: the read offset is 0, after which Faust's check sees no gap without ReadOffsets
    faults = tmp_path / "faults.json"
    write_faults(faults)  # none for the first worker
    d = deployment(partitions=1, faults_file=str(faults))
    worker = d.start_worker()
    traces = [genai_trace(random.Random(80 + i), 3) for i in range(8)]
    d.produce([(t[0].trace_id.hex().encode(), proto(t), 0) for t in traces[:before]])

    def stored() -> int:
        return int(worker.sql("SELECT count() FROM tracejudge.traces FINAL")[0][0])

    assert wait_for(lambda: stored() == before, 60), f"{stored()} of {before} traces stored"
    assert worker.stop() == 0  # a clean stop commits offset `before`: what it stored
    write_faults(faults, skip_fetched=1)  # the restarted worker's first fetched record: offset `before`
    d.produce([(t[0].trace_id.hex().encode(), proto(t), 0) for t in traces[before:]])
    worker = d.start_worker()
    assert wait_for(lambda: stored() == len(traces), 90), f"{stored()} of {len(traces)} traces stored"
    counters = worker.status()["counters"]
    assert counters["skipped_offsets"] == {d.input_topic: 1} and counters["reread_messages"] == 1
    assert f"fetched record {d.input_topic}/0@{before} skipped" in worker.log_path.read_text()


def test_a_new_group_whose_first_fetch_skips_the_head_of_the_partition_stores_every_trace(
    deployment: Callable[..., Deployment], tmp_path: Path,
) -> None:  # fmt: skip
    faults = tmp_path / "faults.json"
    write_faults(faults, skip_fetched=2)  # nothing committed yet: the first two records, offsets 0 and 1
    d = deployment(partitions=1, faults_file=str(faults))
    traces = [genai_trace(random.Random(90 + i), 3) for i in range(6)]
    d.produce([(t[0].trace_id.hex().encode(), proto(t), 0) for t in traces])
    worker = d.start_worker()

    def stored() -> int:
        return int(worker.sql("SELECT count() FROM tracejudge.traces FINAL")[0][0])

    assert wait_for(lambda: stored() == len(traces), 90), f"{stored()} of {len(traces)} traces stored"
    counters = worker.status()["counters"]
    assert counters["skipped_offsets"] == {d.input_topic: 2} and counters["reread_messages"] == 2
    log = worker.log_path.read_text()
    assert f"fetched record {d.input_topic}/0@0 skipped" in log and f"offsets 0-1 of {d.input_topic}/0" in log
