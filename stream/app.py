"""The Faust app: thin agents that wire Kafka topics to :class:`stream.pipeline.Pipeline`.

* ``ingest`` reads the input topic (Collector output) in batches (``take_events``) — a Faust event
  is an OTLP batch, never a single span;
* ``assemble`` reads the repartition topic (unkeyed input split per trace by ``ingest``);
* a timer completes due traces; rebalance signals restore / hand over open-trace state.

Acks: the ingest agents take batches with ``noack_take`` and ack them through a
:class:`stream.batch_chain.BatchChain` once everything is stored, repartitioned or dead-lettered:
the agent starts the next batch while the previous one's last inserts finish. Other agents use
``take_events``, which acks a batch only after the loop body returns; the pipeline never raises
(an agent exception would ack the batch). Concurrency is 1 per agent (faust#606).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP as FaustTP

from stream.batch_chain import BatchChain
from stream.config import Settings
from stream.kafka_auth import client_options, faust_credentials
from stream.delivery import ProduceFailed
from stream.dlq import InMessage, OutRecord
from stream.judging import JudgeService
from stream.offset_gaps import GapNotRecovered, Handler, SkippedOffsetReader, watch_offset_gaps
from stream.pipeline import Pipeline
from stream.telemetry import batch_span

log = logging.getLogger(__name__)

EXIT_UNFINISHED_BATCH = 75  # EX_TEMPFAIL: stopped without committing a batch that was not stored


class FaustProducer:
    """Delivers records through the app's producer and waits for every acknowledgement; raises
    :class:`ProduceFailed` naming the records that failed (in their order), the others delivered."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def send_all(self, records: Sequence[OutRecord]) -> None:
        sent: list[tuple[int, Awaitable[Any]]] = []
        failed: list[tuple[int, BaseException]] = []
        for i, r in enumerate(records):
            try:
                sent.append((i, await self.app.producer.send(r.topic, r.key, r.value, None, None, r.headers or None)))
            except Exception as exc:  # noqa: BLE001 - handed to the caller with its record
                failed.append((i, exc))
        for i, fut in sent:
            try:
                await fut
            except Exception as exc:  # noqa: BLE001
                failed.append((i, exc))
        if failed:
            raise ProduceFailed([(records[i], exc) for i, exc in sorted(failed, key=lambda f: f[0])], len(records))


def _in_message(event: Any) -> InMessage:
    m = event.message
    headers = tuple((k, v) for k, v in (m.headers or ()))
    return InMessage(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp and int(m.timestamp * 1000), headers)


def create_app(
    settings: Settings,
    make_pipeline: Callable[[faust.App], Pipeline],
    make_judging: Callable[[faust.App], JudgeService | None] | None = None,
) -> tuple[faust.App, Pipeline]:
    if not settings.kafka_bootstrap:
        raise ValueError("kafka_bootstrap is not set (TRACEJUDGE_KAFKA_BOOTSTRAP)")
    max_fetch = max(settings.max_message_bytes + 1024 * 1024, 4 * 1_048_576)  # the largest message, whole
    app = faust.App(
        settings.consumer_group,
        broker=[f"kafka://{h}" for h in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        producer_acks=-1,
        broker_credentials=faust_credentials(settings),
        # A dead letter over this (or the broker's limit) is sent without its value (stream/delivery.py)
        producer_max_request_size=settings.producer_max_request_bytes,
        producer_compression_type=None if settings.producer_compression == "none" else settings.producer_compression,
        consumer_max_fetch_size=max_fetch,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4 * settings.batch_max_messages, 1000),
        broker_session_timeout=settings.kafka_session_timeout,
        broker_heartbeat_interval=settings.kafka_session_timeout / 10,
        broker_rebalance_timeout=60.0,
        logging_config=None,
    )
    set_fetch_max_wait(app, settings.kafka_fetch_max_wait)
    pipeline = make_pipeline(app)
    judging = make_judging(app) if make_judging is not None else None
    reader = SkippedOffsetReader(
        settings.kafka_bootstrap, reread_handlers(settings, pipeline, judging), max_fetch_bytes=max_fetch,
        client=client_options(settings),
        deadline=settings.gap_reread_deadline,
    )  # fmt: skip

    async def on_gap(topic: str, partition: int, first: int, last: int) -> None:
        pipeline.counters.count_skipped(topic, first, last)
        try:
            pipeline.counters.reread_messages += await reader.recover(topic, partition, first, last)
            return
        except GapNotRecovered as exc:
            if settings.gap_unrecovered == "dead_letter":
                log.error("%s; dead-lettered as a range, going on past them", exc)
                await pipeline.dead_letter_offsets(topic, partition, first, last, str(exc))
                return
            reason = str(exc)
        except Exception as exc:  # a handler failed (its store retries are its own): never dead-lettered
            reason = f"handling offsets {first}-{last} of {topic}/{partition} again failed: {exc!r}"
        # nothing at or past the gap was acknowledged (the fetch loop waits here): a restart reads it
        log.critical("%s; exiting without committing past them", reason)
        os._exit(EXIT_UNFINISHED_BATCH)

    watch_offset_gaps(app, on_gap)
    if settings.faults_file is not None:  # fault tests only (stream/faults.py)
        from stream.faults import disturb_rereads, skip_fetched_records

        skip_fetched_records(app, settings.faults_file, set(reader.handlers))
        disturb_rereads(reader, settings.faults_file)
    input_topic = app.topic(settings.input_topic, key_type=bytes, value_type=bytes)
    repartition_topic = app.topic(settings.repartition_topic, key_type=bytes, value_type=bytes)

    async def shielded(work: Any) -> Any:
        # take_events acks a batch in a `finally`, even when the agent is cancelled mid-batch (at
        # shutdown). So a batch is never abandoned half-way: it runs shielded, and if it cannot
        # finish in time the process exits without committing (as after a crash: replayed later).
        task = asyncio.ensure_future(work)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            log.info("stopping: finishing the batch in progress before it is acknowledged")
            try:
                await asyncio.wait_for(asyncio.shield(task), settings.shutdown_batch_timeout)
            except BaseException:
                log.error("batch not stored within %.0fs of shutdown: exiting without commit", settings.shutdown_batch_timeout)
                os._exit(EXIT_UNFINISHED_BATCH)
            raise

    async def consume(stream: faust.StreamT, span_name: str, topic: str, start: Callable[[list[InMessage]], Any],
                      finish: Callable[[Any], Any], max_messages: int = settings.batch_max_messages) -> None:  # fmt: skip
        """Batches of ``stream``: ``start`` each (decode, assemble / launch the judge calls), then
        ``finish`` it in the background while the next one starts, acking in order (BatchChain)."""
        chain = BatchChain(stream.ack)
        try:
            async for events in stream.noack_take(max_messages, within=settings.batch_within):
                with batch_span(span_name, len(events), topic):  # the first half of the batch
                    started = await shielded(start([_in_message(e) for e in events]))
                await chain.add(shielded(finish(started)), events)
        finally:  # stopping: ack what finishes in time; the rest is not acked (replayed, idempotently)
            try:
                await asyncio.wait_for(chain.drain(), settings.shutdown_batch_timeout)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                log.error("stopping: a stored batch did not finish in %.0fs; it is not acked", settings.shutdown_batch_timeout)

    @app.agent(input_topic, name="ingest", concurrency=1)
    async def ingest(stream: faust.StreamT) -> None:
        await consume(stream, "tracejudge.ingest_batch", settings.input_topic,
                      lambda msgs: pipeline.start_batch(msgs, repartition=True), pipeline.finish_batch)

    @app.agent(repartition_topic, name="assemble", concurrency=1)
    async def assemble(stream: faust.StreamT) -> None:
        await consume(stream, "tracejudge.assemble_batch", settings.repartition_topic,
                      lambda msgs: pipeline.start_batch(msgs, repartition=False), pipeline.finish_batch)

    events_topic = app.topic(settings.events_topic, key_type=bytes, value_type=bytes)

    @app.agent(events_topic, name="events", concurrency=1)
    async def events(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(settings.batch_max_messages, within=settings.batch_within):
            with batch_span("tracejudge.events_batch", len(batch), settings.events_topic):
                await shielded(pipeline.handle_events([_in_message(e) for e in batch]))

    @app.timer(settings.tick_interval, name="complete_traces")
    async def complete_traces() -> None:
        try:
            await pipeline.tick()
        except Exception:  # pragma: no cover - tick retries internally; never kill the timer
            log.exception("completing traces failed")

    if judging is not None:
        add_judge_agent(app, settings, judging, consume)

    async def _assigned(sender: Any, assigned: set[FaustTP], **_: Any) -> None:
        await pipeline.on_partitions_assigned({(tp.topic, tp.partition) for tp in assigned})
        if judging is not None:
            await judging.on_assigned(tp.partition for tp in assigned if tp.topic == settings.judge_topic)

    async def _revoked(sender: Any, revoked: set[FaustTP], **_: Any) -> None:
        await pipeline.on_partitions_revoked({(tp.topic, tp.partition) for tp in revoked})
        if judging is not None:
            await judging.on_revoked(tp.partition for tp in revoked if tp.topic == settings.judge_topic)

    app.on_partitions_assigned.connect(_assigned)
    app.on_partitions_revoked.connect(_revoked)
    return app, pipeline


def reread_handlers(settings: Settings, pipeline: Pipeline, judging: JudgeService | None) -> dict[str, Handler]:
    """What handles skipped messages read again (stream/offset_gaps.py): each topic's batch code."""
    handlers: dict[str, Handler] = {
        settings.input_topic: lambda msgs: pipeline.handle_batch(msgs, repartition=True),
        settings.repartition_topic: lambda msgs: pipeline.handle_batch(msgs, repartition=False),
        settings.events_topic: pipeline.handle_events,
    }
    if judging is not None:
        async def judge(msgs: list[InMessage]) -> None:
            await judging.finish_batch(await judging.start_batch(msgs))

        handlers[settings.judge_topic] = judge
    return handlers


def set_fetch_max_wait(app: faust.App, seconds: float) -> None:
    """Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no setting for it.
    Apache Kafka answers a waiting fetch as soon as data arrives, but a broker that holds it for
    the full wait (tansu does) adds up to 1.5 s to every hop (input, to_judge): measured with a bare
    aiokafka consumer on tansu, produce → consume p50 0.72 s at 1500 ms, 0.016 s at 100 ms. The
    consumer is patched after construction (the value is read when it starts)."""
    app._tracejudge_fetch_max_wait_ms = int(seconds * 1000)  # type: ignore[attr-defined]
    cls = AIOKafkaConsumerThread
    if getattr(cls, "_tracejudge_patched", False):
        return
    original = cls._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        wait = getattr(self.app, "_tracejudge_fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = wait
        return consumer

    cls._create_worker_consumer = create  # type: ignore[method-assign]
    cls._tracejudge_patched = True  # type: ignore[attr-defined]


def add_judge_agent(app: faust.App, settings: Settings, judging: JudgeService, consume: Any) -> None:
    """The ``judge`` agent: batches of to_judge messages, verdicts stored before the batch is acked.
    Judge calls are awaited HTTP requests (bounded by ``max_in_flight``): the event loop, and with it
    the consumer's heartbeats, keeps running however slow a provider is. The next batch's calls go
    out while a batch's last calls are still running (``start_batch`` / ``finish_batch``)."""
    judge_topic = app.topic(settings.judge_topic, key_type=bytes, value_type=bytes)
    cfg = judging.cfg

    @app.agent(judge_topic, name="judge", concurrency=1)
    async def judge(stream: faust.StreamT) -> None:
        await consume(stream, "tracejudge.judge_batch", settings.judge_topic, judging.start_batch,
                      judging.finish_batch, cfg.batch_max_messages)

    # the providers' connection pools are closed once the agents have stopped (mode's ``stop``:
    # on_stop, children, futures, then on_shutdown): no call still in flight uses them
    shutdown = app.on_shutdown

    async def on_shutdown() -> None:
        try:
            await judging.aclose()
        finally:
            await shutdown()

    app.on_shutdown = on_shutdown  # type: ignore[method-assign]

    @app.timer(cfg.ledger_flush_s, name="judge_ledger")
    async def flush_ledger() -> None:
        try:
            await judging.flush_calls()
        except Exception:  # pragma: no cover - flush retries internally
            log.exception("writing the judge ledger failed")

    @app.timer(settings.tick_interval, name="judge_backlog")
    async def judge_tick() -> None:
        try:
            await judging.tick()
        except Exception:  # pragma: no cover - tick retries internally
            log.exception("judging tick failed")
