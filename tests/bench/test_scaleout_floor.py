"""bench/scaleout_floor.py: the floor processes split the partitions, start together and store
every span once; the per-partition counts it waits for are where the producer put the messages."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.generate import generate
from bench.ingest import produce
from bench.scaleout_floor import _merged_steps, messages_per_partition, run_once
from stream.demo.broker import LocalBroker
from stream.demo.store_server_process import StoreServerProcess
from stream.store import ClickHouseStore


def _produced(broker: LocalBroker, topic: str, partitions: int, spans: int, seed: int) -> tuple[int, list[int], int]:
    """Generate and produce the benchmark's input: (spans, messages per partition, broker pid)."""
    corpus = generate(spans, seed=seed)
    asyncio.run(produce(broker.bootstrap, topic, corpus.messages))
    pid = broker._proc.pid if broker._proc else 0  # noqa: SLF001 - CPU accounting only
    return corpus.spans, messages_per_partition([k for k, _ in corpus.messages], partitions), pid


def test_the_processes_insert_times_merge_into_one_rising_count() -> None:
    a = {"insert_steps": [(10.0, 100), (12.0, 250)]}
    b = {"insert_steps": [(11.0, 40), (13.0, 90)]}
    assert _merged_steps([a, b], 9.0) == [(1.0, 100), (2.0, 140), (3.0, 290), (4.0, 340)]


def test_the_counts_per_partition_are_where_the_producer_put_the_messages(
    broker: LocalBroker, new_topic: Callable[..., str], consume: Callable[..., Any]
) -> None:
    topic = new_topic(4)
    corpus = generate(3_000, seed=2)
    asyncio.run(produce(broker.bootstrap, topic, corpus.messages))
    got = Counter(r.partition for r in consume(topic, expect=len(corpus.messages)))
    assert messages_per_partition([k for k, _ in corpus.messages], 4) == [got[p] for p in range(4)]


def test_two_floor_processes_store_every_span_once(
    broker: LocalBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(4)
    spans, counts, pid = _produced(broker, topic, 4, 4_000, seed=3)
    r = run_once(2, broker.bootstrap, topic, counts, tmp_path, pid, timeout=120)
    assert r["spans"] == r["rows_in_table"] == spans
    assert len(r["per_process"]) == 2 and all(p["spans"] > 0 for p in r["per_process"])
    assert set(r["cpu_cores"]) == {"floor-0", "floor-1", "store-server", "broker"}
    assert r["spans_per_s"] > 0


def test_against_a_server_dsn_each_run_gets_its_own_database_and_drops_it(
    broker: LocalBroker, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(2)
    spans, counts, pid = _produced(broker, topic, 2, 1_500, seed=4)
    server = StoreServerProcess(tmp_path / "server", log_level="WARNING")  # stands in for a ClickHouse server
    try:
        r = run_once(1, broker.bootstrap, topic, counts, tmp_path / "run", pid, timeout=120, dsn=server.dsn)
        assert r["spans"] == r["rows_in_table"] == spans
        assert set(r["cpu_cores"]) == {"floor-0", "broker"}  # the server is not this benchmark's process
        store = ClickHouseStore(server.dsn)
        _, rows = store.query("SELECT name FROM system.databases WHERE name LIKE 'bench_scaleout_floor_%'")
        store.close()
        assert rows == []
    finally:
        server.stop()
