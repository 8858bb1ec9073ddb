"""Reading a dead-letter topic back: what is in it (``tracejudge dlq show``), and sending its
messages to be processed again (``tracejudge dlq replay``) once what dead-lettered them is fixed.

A dead letter (:mod:`stream.dlq`) is the original message plus ``tracejudge.dlq.*`` headers. Replay
sends the original key, value and headers (without tracejudge's) to the source topic named in the
headers, or to ``--to``. Two kinds of dead letter carry no message and name source offsets instead:
``unrecovered_offsets`` (offsets the consumer skipped and could not read again) and one sent
without its value because it was too large (``tracejudge.dlq.value_omitted``, see
:mod:`stream.delivery`). Their messages are read from the source topic at those offsets, as long
as its retention still keeps them; offsets no longer there are reported as missing.

Each dead letter replayed is recorded, after its messages were acknowledged, in the topic
``<dead-letter topic>.replayed`` (created on the first replay; one record per dead letter, keyed
``<partition>@<offset>``, the value says when and where to). A later replay skips what is recorded
there unless asked ``again``; ``show`` says which were replayed. A replay stopped between the send
and the record sends that dead letter again next time, which is harmless: the worker stores a span
once however often it arrives (``ReplacingMergeTree``, read with ``FINAL``; a copy after its trace
completed counts as late), and the judge skips a (trace, judge, rubric) that has a verdict. Choose
reasons whose cause is fixed (replaying ``undecodable`` only dead-letters the messages again).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream import dlq
from stream.topics import ensure_topics

FETCH_BYTES = 64 * 1024 * 1024  # dead letters carry whole input messages (up to the broker's limit)
IDLE_POLL_MS = 200
IDLE_POLLS = 50  # polls without progress before a read gives up (10 s)
FETCH_WAIT_MS = 100  # how long the broker holds a fetch of an empty partition (its end is then known)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int  # of the dead-letter topic
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        return next((v.decode("utf-8", "replace") for k, v in self.headers if k == name), None)

    @property
    def reason(self) -> str:
        return self.header(dlq.REASON) or "(none)"

    @property
    def detail(self) -> str:
        return self.header(dlq.DETAIL) or ""

    @property
    def source(self) -> tuple[str, int, int, int] | None:
        """(topic, partition, first offset, last offset) of the message(s), if the headers say."""
        topic, part, first = (self.header(h) for h in (dlq.SOURCE_TOPIC, dlq.SOURCE_PARTITION, dlq.SOURCE_OFFSET))
        if topic is None or part is None or first is None:
            return None
        try:
            return topic, int(part), int(first), int(self.header(dlq.SOURCE_LAST_OFFSET) or first)
        except ValueError:
            return None

    @property
    def omitted_bytes(self) -> int | None:
        v = self.header(dlq.VALUE_OMITTED)
        return int(v) if v is not None and v.isdigit() else None

    @property
    def names_offsets(self) -> bool:
        """Carries no message: it must be read from the source topic."""
        return self.reason == dlq.UNRECOVERED_OFFSETS or self.omitted_bytes is not None

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if not k.startswith(dlq.DLQ_HEADER_PREFIX)]


@dataclass(frozen=True, slots=True)
class Replayed:
    """A record of the replay log: when a dead letter was replayed, where to, how many messages."""

    at_ms: int
    to: str
    messages: int


@dataclass
class ReplayResult:
    dead_letters: int = 0  # matched
    sent: int = 0  # messages produced
    missing: list[tuple[str, int, int]] = field(default_factory=list)  # (topic, partition, offset) not found
    unreplayable: list[DeadLetter] = field(default_factory=list)  # names no source to read from
    already: list[tuple[DeadLetter, Replayed]] = field(default_factory=list)  # replayed before: skipped


def replay_log(topic: str) -> str:
    """Where replays of ``topic``'s dead letters are recorded."""
    return topic + ".replayed"


async def replayed(bootstrap: str, topic: str, client: Mapping[str, Any] | None = None) -> dict[tuple[int, int], Replayed]:
    """(partition, offset) of ``topic``'s dead letters -> their latest replay; empty if none was."""
    out: dict[tuple[int, int], Replayed] = {}
    try:
        async for r in scan(bootstrap, replay_log(topic), client):
            try:
                partition, offset = (int(x) for x in (r.key or b"").decode().split("@"))
                v = json.loads(r.value or b"")
                out[partition, offset] = Replayed(int(v["at_ms"]), str(v["to"]), int(v["messages"]))
            except (ValueError, KeyError, TypeError):
                continue  # not a record of ours
    except LookupError:  # no replay yet
        pass
    return out


def _consumer(bootstrap: str, client: Mapping[str, Any] | None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                            auto_offset_reset="earliest", max_partition_fetch_bytes=FETCH_BYTES,
                            fetch_max_bytes=FETCH_BYTES, fetch_max_wait_ms=FETCH_WAIT_MS, **(client or {}))  # fmt: skip


async def scan(bootstrap: str, topic: str, client: Mapping[str, Any] | None = None) -> AsyncIterator[DeadLetter]:
    """Every record of ``topic``, partition by partition, each up to its end at its first fetch.
    ``client``: authentication and TLS (:func:`stream.kafka_auth.client_options`)."""
    consumer = _consumer(bootstrap, client)
    try:
        await consumer.start()
        if topic not in await consumer.topics():
            raise LookupError(f"topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        for tp in tps:
            consumer.assign([tp])  # one at a time: no prefetch of the others
            async for r in _read(consumer, tp, None, None):
                yield DeadLetter(r.partition, r.offset, r.timestamp, r.key, r.value, tuple(r.headers or ()))
    finally:
        await consumer.stop()


async def _read(consumer: AIOKafkaConsumer, tp: TopicPartition, first: int | None, last: int | None) -> AsyncIterator[Any]:
    """Records of ``tp`` from ``first`` (None: the earliest) to ``last`` inclusive (None: to the end
    the first fetch reports). The end is the fetch response's high watermark, not ListOffsets:
    tansu answers ListOffsets with the last batch's base offset + 1, short of a batch of several
    records (measured: 3 records acknowledged at offsets 0-2, ListOffsets said 1)."""
    if first is None:
        first = (await consumer.beginning_offsets([tp]))[tp]
    consumer.seek(tp, first)
    idle = 0
    while idle < IDLE_POLLS:  # a broker that stops serving the range ends the read (offsets then missing)
        position = await consumer.position(tp)
        batch = await consumer.getmany(tp, timeout_ms=IDLE_POLL_MS)
        end = consumer.highwater(tp)  # after a fetch of this partition: its true end
        if last is None and end is not None:
            last = end - 1  # the end when the read started: later records are not read
        for r in batch.get(tp, ()):
            if last is not None and r.offset > last:
                return
            if r.offset >= first:  # a seek past the end resets to the earliest offset
                yield r
        now = await consumer.position(tp)
        if last is not None and (now > last or (end is not None and now >= end and not batch)):
            return
        idle = 0 if now > position else idle + 1


async def replay(bootstrap: str, topic: str, reasons: Iterable[str], to: str | None = None,
                 dry_run: bool = False, on_send: Callable[[DeadLetter, str, int], None] | None = None,
                 since_ms: int | None = None, again: bool = False,
                 client: Mapping[str, Any] | None = None) -> ReplayResult:  # fmt: skip
    """Send the messages of ``topic``'s dead letters with one of ``reasons`` (and a record time at
    or after ``since_ms``) to their source topic (or ``to``), skipping those replayed before unless
    ``again``; record each one sent in :func:`replay_log`. ``on_send(dead_letter, destination,
    messages)`` is called per dead letter."""
    wanted = set(reasons)
    result = ReplayResult()
    done = {} if again else await replayed(bootstrap, topic, client)
    producer = None if dry_run else AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=1 << 30,
                                                     **(client or {}))  # fmt: skip
    reader = _consumer(bootstrap, client)
    try:
        await reader.start()
        if producer is not None:
            await ensure_topics(bootstrap, {replay_log(topic): 1}, client=client)
            await producer.start()
        async for d in scan(bootstrap, topic, client):  # to the end the topic had when the scan started
            if d.reason not in wanted or (since_ms is not None and (d.timestamp_ms or 0) < since_ms):
                continue
            result.dead_letters += 1
            if (before := done.get((d.partition, d.offset))) is not None:
                result.already.append((d, before))
                continue
            src = d.source
            dest = to or (src[0] if src else None)
            if dest is None or (d.names_offsets and src is None):
                result.unreplayable.append(d)
                continue
            messages = [(d.key, d.value, d.original_headers)]
            missing_before = len(result.missing)
            if d.names_offsets and src is not None:
                messages = await _from_source(reader, src, result)
            if producer is not None:
                for key, value, headers in messages:
                    await producer.send_and_wait(dest, value, key=key, headers=headers or None)
                if len(result.missing) == missing_before:  # some offsets not found: not done, try again later
                    record = {"at_ms": int(time.time() * 1000), "to": dest, "messages": len(messages)}
                    await producer.send_and_wait(replay_log(topic), json.dumps(record).encode(),
                                                 key=f"{d.partition}@{d.offset}".encode())  # fmt: skip
            result.sent += len(messages)
            if on_send is not None:
                on_send(d, dest, len(messages))
    finally:
        await reader.stop()
        if producer is not None:
            await producer.stop()
    return result


async def _from_source(reader: AIOKafkaConsumer, src: tuple[str, int, int, int],
                       result: ReplayResult) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:  # fmt: skip
    topic, partition, first, last = src
    tp = TopicPartition(topic, partition)
    reader.assign([tp])
    found = [r async for r in _read(reader, tp, first, last)]
    have = {r.offset for r in found}
    result.missing.extend((topic, partition, o) for o in range(first, last + 1) if o not in have)
    return [(r.key, r.value, list(r.headers or ())) for r in found]
