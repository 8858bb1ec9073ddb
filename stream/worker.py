"""``tracejudge worker``: ClickHouse migrations, topics, the Faust app, and the local web API.

The embedded store (chDB) allows one engine per process per data directory, so while a worker runs
it is the only process that can read the store. It therefore serves a small JSON API on
``web_host:web_port`` (``/api/status``, ``/api/sql``) and records its address in
``<data_dir>/worker.json``; ``tracejudge sql`` and ``tracejudge demo`` use it when the store is held.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import faust
from faust.web import Request, Response, View

from stream.app import FaustProducer, create_app
from stream.config import Settings
from stream.dashboard import add_dashboard
from judges.config import load_judging_config
from stream.topics import ensure_topics, topic_message_limits, topic_partitions
from stream.decide import TraceDecider
from stream.event_loop import use_event_loop
from stream.evaluation_events import build_evaluation_emitter
from stream.gc_pauses import PAUSES
from stream.events import EventJoiner
from stream.judge_sink import JudgeSink
from stream.kafka_auth import client_options
from stream.alerts import AlertEngine
from stream.judging import JudgeService
from stream.metrics import MetricSources, VerdictStats, chain_listeners, consumer_offsets
from stream.pipeline import Pipeline
from stream.policy import load_policy
from stream.prometheus import add_metrics_page
from stream.sink import ClickHouseSink
from stream.store import ClickHouseStore, is_loopback
from stream.table_copy import drop_leftovers
from stream.telemetry import setup_telemetry

log = logging.getLogger(__name__)

WORKER_FILE = "worker.json"


def worker_file(settings: Settings) -> Path:
    return settings.data_dir / WORKER_FILE


def read_worker_file(settings: Settings) -> dict[str, Any] | None:
    """The running worker's address, if a live worker holds this data directory."""
    path = worker_file(settings)
    try:
        info = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


def topic_plan(settings: Settings) -> dict[str, int]:
    return {
        settings.input_topic: settings.topic_partitions,
        settings.repartition_topic: settings.topic_partitions,
        settings.dlq_topic: settings.topic_partitions,
        settings.judge_topic: settings.topic_partitions,
        settings.judge_dlq_topic: settings.topic_partitions,
        settings.events_topic: settings.topic_partitions,
        settings.events_dlq_topic: settings.topic_partitions,
    }


#: bytes a record batch of one record adds to its value (batch and record headers, key, headers)
RECORD_OVERHEAD = 1024


def message_size_warnings(settings: Settings, limits: dict[str, int]) -> list[str]:
    """What the topics' ``max.message.bytes`` (``limits``, where the broker states it) will refuse
    of what the worker sends: a record refused as too large holds its partition until the limit is
    raised (README, "Known limits"), so the mismatch is said at start-up, not when a large trace
    comes."""
    out = []
    for topic, setting, size in (
        (settings.repartition_topic, "max_repartition_message_bytes", settings.max_repartition_message_bytes),
        (settings.judge_topic, "max_judge_message_bytes", settings.max_judge_message_bytes),
    ):
        limit = limits.get(topic)
        if limit is not None and size + RECORD_OVERHEAD > limit:
            out.append(f"topic {topic} takes records up to {limit} bytes (max.message.bytes) but {setting} is "
                       f"{size}: a message near that size will be refused and hold its partition; set {setting} "
                       f"to {max(limit - RECORD_OVERHEAD, 0)} or less, or raise the topic's max.message.bytes")  # fmt: skip
    source, dlq = limits.get(settings.input_topic), limits.get(settings.dlq_topic)
    if source is not None and dlq is not None and dlq < source + RECORD_OVERHEAD:
        out.append(f"dead-letter topic {settings.dlq_topic} takes records up to {dlq} bytes, the input topic "
                   f"{settings.input_topic} {source}: a dead letter of a message near the input's limit is sent "
                   "without the original message (README, \"A dead letter at the broker's size limit\")")  # fmt: skip
    return out


async def warn_message_sizes(settings: Settings) -> list[str]:
    """Log :func:`message_size_warnings` for the worker's topics (a broker that does not say its
    limits is not checked); returns them."""
    assert settings.kafka_bootstrap
    topics = [settings.input_topic, settings.repartition_topic, settings.judge_topic, settings.dlq_topic]
    try:
        limits = await topic_message_limits(settings.kafka_bootstrap, topics, client=client_options(settings))
    except Exception as exc:  # e.g. not authorized to describe configs: the check is advice only
        log.info("topic size limits not checked: %r", exc)
        return []
    warnings = message_size_warnings(settings, limits)
    for w in warnings:
        log.warning("%s", w)
    return warnings


def sql_request_refused(headers: Any, loopback_only: bool) -> str | None:
    """Why a ``POST /api/sql`` is refused before its query is read, or None. The body must be
    declared JSON (a web page can only send one so after a CORS preflight, which this server does
    not answer); a browser's ``Origin`` must be this server's own; and, on a loopback address, the
    ``Host`` must be a loopback name (a page whose name an attacker made resolve to 127.0.0.1, DNS
    rebinding, names its own host)."""
    if headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
        return "send the query as JSON (Content-Type: application/json)"
    host = headers.get("Host", "")
    origin = headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != host:
        return f"cross-origin request from {origin!r} refused"
    name = urlsplit(f"//{host}").hostname or ""
    if loopback_only and not is_loopback(name):
        return f"Host {host!r} is not a loopback name: this API serves only this machine"
    return None


def add_web_api(app: faust.App, pipeline: Pipeline, store: ClickHouseStore, judging: JudgeService | None = None,
                loopback_only: bool = True) -> None:  # fmt: skip
    @app.page("/api/status")
    class Status(View):
        async def get(self, request: Request) -> Response:
            return self.json(
                {
                    "counters": pipeline.counters.as_dict(),
                    "open_traces": len(pipeline.assembler),
                    "policy_version": pipeline.decider.version if pipeline.decider else None,
                    "owned_partitions": sorted(f"{t}/{p}" for t, p in pipeline.owned),
                    "judging": judging.status() if judging is not None else None,
                    "faults": store.fault_counts(),
                    "store_inserts": store.insert_stats(),
                    "gc": PAUSES.as_dict(),
                }
            )

    @app.page("/api/sql")
    class Sql(View):
        async def post(self, request: Request) -> Response:
            if (refused := sql_request_refused(request.headers, loopback_only)) is not None:
                return self.json({"error": refused}, status=403)
            try:
                body = await request.json()
                got = await store.aread_only_query(str(body["query"]))
            except PermissionError as exc:
                return self.json({"error": str(exc)}, status=403)
            except Exception as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json({"columns": got.columns, "rows": [[_jsonable(v) for v in r] for r in got.rows],
                              "cut": got.cut})  # fmt: skip


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def add_alerts(app: faust.App, engine: AlertEngine, judging: JudgeService) -> None:
    """Alerts are evaluated by one worker: the owner of partition 0 of the to_judge topic (alert
    state is deduplicated in ClickHouse, so a handover posts nothing twice)."""

    @app.timer(10.0, name="alerts")
    async def alerts() -> None:
        if 0 in judging.owned:
            await engine.tick()  # never raises


#: GC thresholds of the worker: (young collection every 100k net allocations, middle generation
#: every 2nd young one, old generation as CPython decides). See :func:`tune_gc`.
GC_THRESHOLDS = (100_000, 2, 1000)


def tune_gc() -> None:
    """Open traces keep many long-lived objects; the default GC thresholds rescan them every few
    hundred allocations (measured: ~35 % of worker throughput). Freeze what start-up allocated and
    collect the young generation less often; reference counting still frees almost everything.

    The middle generation is collected every 2nd young collection, not every 50th: a collection
    walks every object of its generation while nothing else runs, and the middle generation holds
    what survived the young collections since its last one, i.e. the traces that arrived meanwhile
    (~3.5 tracked objects per span since the span's sequence fields are tuples, 7.5 before). At 50 it walked up to 50 x 100k objects: 9.5 s
    stalls with 50k traces open (``bench/memory.py``), past the Kafka session timeout. Each object
    is still walked about twice before it reaches the old generation, so the total is unchanged."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    PAUSES.install()


def run_worker(settings: Settings) -> None:
    """Run until SIGTERM / SIGINT (Faust handles both with a clean shutdown and final commit)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    use_event_loop(settings.event_loop)
    policy = load_policy(settings.policy_file)  # invalid policy: PolicyError before anything starts
    decider = TraceDecider(policy)
    if settings.stall_risk:
        log.warning("%s", settings.stall_risk)
    log.info("event loop: %s", settings.event_loop)
    log.info("policy version %s: %d gates, %d signal rules", policy.version, len(policy.gates), len(policy.signals))
    store = ClickHouseStore.from_settings(settings, settings.faults_file)
    applied = store.migrate()
    if applied:
        log.info("ClickHouse migrations applied: %s", ", ".join(applied))
    if leftovers := drop_leftovers(store):
        log.info("dropped %d table copies a previous worker left behind: %s", len(leftovers), ", ".join(leftovers))
    assert settings.kafka_bootstrap
    asyncio.run(ensure_topics(settings.kafka_bootstrap, topic_plan(settings), client=client_options(settings)))
    asyncio.run(warn_message_sizes(settings))

    def make_pipeline(app: faust.App) -> Pipeline:
        events = EventJoiner(store, settings.events_dlq_topic, policy.action_signals, settings.action_join_window)
        return Pipeline(settings, ClickHouseSink(store), FaustProducer(app), decider=decider, events=events)

    judging_cfg = None
    if settings.judging_file is not None:
        judging_cfg = load_judging_config(settings.judging_file)  # invalid: JudgingConfigError before start
        log.info("judging: %d judges (%s), tiers %s", len(judging_cfg.rubrics()),
                 ", ".join(judging_cfg.rubrics()), {t: s.model for t, s in judging_cfg.tiers.items()})  # fmt: skip
    else:
        log.warning("no judging_file configured: sampled traces wait in %s for a judging worker", settings.judge_topic)
    judge_partitions = asyncio.run(topic_partitions(settings.kafka_bootstrap, settings.judge_topic,
                                                    client=client_options(settings)))
    holder: dict[str, JudgeService] = {}
    verdict_stats, emitter = VerdictStats(), build_evaluation_emitter(settings) if judging_cfg else None

    def make_judging(app: faust.App) -> JudgeService | None:
        if judging_cfg is None:
            return None
        producer = FaustProducer(app)
        holder["judging"] = JudgeService(
            judging_cfg, JudgeSink(store), producer.send_all, topic=settings.judge_topic,
            dlq_topic=settings.judge_dlq_topic, partitions_total=judge_partitions,
            retry_initial=settings.insert_retry_initial, retry_max=settings.insert_retry_max,
            on_verdicts=chain_listeners(verdict_stats, emitter),
        )  # fmt: skip
        return holder["judging"]

    app, pipeline = create_app(settings, make_pipeline, make_judging)
    add_web_api(app, pipeline, store, holder.get("judging"), loopback_only=is_loopback(settings.web_host))
    add_dashboard(app, store, judging_cfg.budget if judging_cfg is not None else None)
    if judging_cfg is not None:
        add_alerts(app, AlertEngine(store, judging_cfg), holder["judging"])
    sources = MetricSources(pipeline, holder.get("judging"), verdict_stats, lambda: consumer_offsets(app), store)
    add_metrics_page(app, sources)
    telemetry = setup_telemetry(settings)
    telemetry.observe_sources(sources, app)
    path = worker_file(settings)
    path.write_text(
        json.dumps({"pid": os.getpid(), "url": f"http://{settings.web_host}:{settings.web_port}"})
    )
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False)
    tune_gc()
    try:
        worker.execute_from_commandline()
    finally:
        path.unlink(missing_ok=True)
        telemetry.shutdown()
        if emitter is not None:
            emitter.shutdown()
        store.close()
