"""Compressed record batches, end to end on the real tansu broker with a real ``tracejudge worker``:
input in every codec the Collector's kafka exporter can write (``producer.compression``: gzip,
snappy, lz4, zstd) is read, and the worker's own records are compressed as
``producer_compression`` says. Without the codecs' library (cramjam, aiokafka's extras) the first
snappy, lz4 or zstd batch crashed the worker's consumer with ``UnsupportedCodecError``, on every
restart."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from tests.factories import genai_trace, proto
from tests.stream.conftest import Deployment, produce_records, wait_for

CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}  # the record batch's attribute bits


async def batch_codecs(bootstrap: str, topic: str) -> list[int]:
    """The compression codec of every record batch on partition 0 of ``topic``, read raw."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        await client.force_metadata_update()
        node = client.cluster.leader_for_partition(TopicPartition(topic, 0))
        response = await client.send(node, FetchRequest(100, 1, 64 << 20, 0, [(topic, [(0, 0, 64 << 20)])]))
        codecs = []
        for _topic, partitions in response.topics:
            for partition in partitions:
                records = MemoryRecords(partition[-1])  # the records are the last field in every version
                while (batch := records.next_batch()) is not None:
                    codecs.append(batch.compression_type)
        return codecs
    finally:
        await client.close()


def test_input_in_every_codec_is_read_and_the_worker_compresses_what_it_sends(
    deployment: Callable[..., Deployment],
) -> None:  # fmt: skip
    rng = random.Random(8)
    d = deployment(partitions=1, producer_compression="zstd")
    worker = d.start_worker()
    for codec in CODECS:  # per codec: a keyed message, and an unkeyed one with two traces
        t, u, v = (genai_trace(rng, 3) for _ in range(3))
        messages = [(t[0].trace_id.hex().encode(), proto(t)), (None, proto(u + v))]  # the pair goes via repartition
        asyncio.run(produce_records(d.broker.bootstrap, d.input_topic, messages, compression_type=codec))
    stored = lambda sql: int(worker.sql(sql)[0][0])  # noqa: E731
    assert wait_for(lambda: stored("SELECT count() FROM tracejudge.traces FINAL") >= 12, 90), "not all stored"
    assert stored("SELECT count() FROM tracejudge.spans FINAL") == 36
    assert asyncio.run(batch_codecs(d.broker.bootstrap, d.input_topic)) == [c for c in CODECS.values() for _ in (0, 1)]
    repartitioned = asyncio.run(batch_codecs(d.broker.bootstrap, d.settings["TRACEJUDGE_REPARTITION_TOPIC"]))
    assert len(repartitioned) >= 1 and set(repartitioned) == {CODECS["zstd"]}
    counters = worker.status()["counters"]
    assert counters["dead_lettered"] == 0 and counters["repartitioned_messages"] == 4
    assert worker.proc.poll() is None
