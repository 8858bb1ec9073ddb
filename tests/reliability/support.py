"""Helpers shared by the fault scenarios: sizes, Kafka offsets, process memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

# Every scenario runs twice over: a short version in the default test run (so CI keeps guarding
# it) and a long one behind the `reliability` marker (`pytest -m reliability`, or the report:
# `python -m tests.reliability.report --long`).
SIZES = [pytest.param("short", id="short"), pytest.param("long", id="long", marks=pytest.mark.reliability)]


def pick(size: str, short: int | float, long: int | float) -> int | float:
    return short if size == "short" else long


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    # OffsetFetch through a consumer that never joins the group (tansu rejects the admin call)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - fresh topic
            parts = consumer.partitions_for_topic(topic) or set()
        out = {}
        for p in sorted(parts):
            off = await consumer.committed(TopicPartition(topic, p))
            if off is not None and off >= 0:
                out[p] = off
    finally:
        await consumer.stop()
    return out


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offset per partition of ``topic`` (absent = none committed)."""
    return asyncio.run(_committed(bootstrap, group, topic))


async def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - fresh topic
            parts = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in sorted(parts)])
    finally:
        await consumer.stop()
    return {tp.partition: off for tp, off in ends.items()}


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The log-end offset per partition of ``topic``, as the broker reports it. tansu 0.6 reports the
    start of a partition's last record batch + 1, so after multi-record batches this reads low:
    count acknowledged sends when exact numbers matter."""
    return asyncio.run(_end_offsets(bootstrap, topic))


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_mb(pid: int) -> float:
    """Current resident set size of a live process, MiB."""
    return _status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process so far, MiB."""
    return _status_kb(pid, "VmHWM") / 1024


def reset_peak_rss(pid: int) -> float:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux ``clear_refs`` 5) and return
    the peak it had. Without this, a peak from start-up (the embedded engine's first queries) would
    count as growth caused by whatever input a test sends next."""
    before = peak_rss_mb(pid)
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return before


async def _produce_all(bootstrap: str, topic: str, msgs: list[tuple[bytes | None, bytes | None]]) -> list[tuple[int, int]]:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=64 * 1024 * 1024, linger_ms=5)
    await p.start()
    try:
        futures = [await p.send(topic, value, key=key) for key, value in msgs]
        return [((md := await f).partition, md.offset) for f in futures]
    finally:
        await p.stop()


def produce_all(bootstrap: str, topic: str, msgs: list[tuple[bytes | None, bytes | None]]) -> list[tuple[int, int]]:
    """Produce (key, value) messages in order; returns where each landed: (partition, offset)."""
    return asyncio.run(_produce_all(bootstrap, topic, msgs))


def ends_of(where: list[tuple[int, int]]) -> dict[int, int]:
    """Each partition's end offset after the produce that returned ``where`` (from the produce
    acknowledgements: tansu's ListOffsets(latest) lags behind batched produces)."""
    ends: dict[int, int] = {}
    for p, o in where:
        ends[p] = max(ends.get(p, 0), o + 1)
    return ends
