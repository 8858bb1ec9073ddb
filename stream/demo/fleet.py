"""A simulated fleet of LLM agents, instrumented with the real OpenTelemetry SDK, exporting to Kafka.

Each app (:data:`stream.demo.scenarios.APPS`) has its own ``TracerProvider`` (resource
``service.name``) with a ``BatchSpanProcessor`` feeding a :class:`KafkaSpanExporter`, as a real
deployment would. One trace = one user turn: a root ``invoke_agent {agent}`` span with ``chat {model}``
and ``execute_tool {tool}`` children carrying GenAI semantic-convention attributes. Span times are
explicit (seconds-long traces ending "now") so no sleeping is needed; the root span ends last.

    fleet = Fleet(bootstrap, "otlp_spans", seed=7)
    stats = fleet.run(n_traces=200)
    fleet.close()
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator

from stream.demo.kafka_exporter import Encoding, KafkaSpanExporter
from stream.demo.scenarios import (
    APPS,
    FAILURE_SCENARIOS,
    AppSpec,
    Conversation,
    choose_scenario,
    plan_turn,
    text_message,
)
from stream.demo.spans import emit_turn

MAX_OPEN_CONVERSATIONS = 5  # per app
MAX_HISTORY_MESSAGES = 6
FLUSH_EVERY = 200  # traces; bounds the SDK queue (BatchSpanProcessor drops spans when it is full)


@dataclass(frozen=True)
class EmittedTrace:
    trace_id: str  # 32 lowercase hex
    service: str
    agent: str
    scenario: str
    conversation_id: str
    user_id: str
    spans: int


@dataclass
class FleetStats:
    traces: int = 0
    spans: int = 0
    messages: int = 0  # Kafka messages acknowledged by the broker
    export_failures: int = 0  # exporter calls that returned FAILURE (their spans are lost)
    traces_by_scenario: Counter[str] = field(default_factory=Counter)
    spans_by_scenario: Counter[str] = field(default_factory=Counter)
    traces_by_service: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, t: EmittedTrace) -> None:
        self.traces += 1
        self.spans += t.spans
        self.traces_by_scenario[t.scenario] += 1
        self.spans_by_scenario[t.scenario] += t.spans
        self.traces_by_service[t.service] += 1

    @property
    def failure_share(self) -> float:
        failed = sum(n for s, n in self.traces_by_scenario.items() if s in FAILURE_SCENARIOS)
        return failed / self.traces if self.traces else 0.0

    @property
    def traces_per_second(self) -> float:
        return self.traces / self.seconds if self.seconds else 0.0


class SeededIdGenerator(IdGenerator):
    """Trace and span ids from a seeded generator, so a seed reproduces the same ids."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._lock = threading.Lock()

    def _bits(self, n: int) -> int:
        with self._lock:
            while True:
                value = self._rng.getrandbits(n)
                if value:
                    return value

    def generate_span_id(self) -> int:
        return self._bits(64)

    def generate_trace_id(self) -> int:
        return self._bits(128)

    def is_trace_id_random(self) -> bool:
        return True


class Fleet:
    """Agents of every app in :data:`APPS`, each exporting through its own Kafka exporter."""

    def __init__(self, bootstrap: str, topic: str, *, encoding: Encoding = "otlp_proto",
                 partition_traces_by_id: bool = True, seed: int = 0, export_delay_ms: int = 200,
                 apps: tuple[AppSpec, ...] = APPS) -> None:
        self._rng = random.Random(seed)
        ids = SeededIdGenerator(random.Random(f"ids-{seed}"))
        self._apps = apps
        self._conversations: dict[str, list[Conversation]] = {a.service: [] for a in apps}
        self._exporters: list[KafkaSpanExporter] = []
        self._providers: dict[str, TracerProvider] = {}
        self._tracers: dict[str, trace.Tracer] = {}
        try:
            for app in apps:
                exporter = KafkaSpanExporter(bootstrap, topic, encoding=encoding,
                                             partition_traces_by_id=partition_traces_by_id)
                self._exporters.append(exporter)
                resource = Resource.create({"service.name": app.service, "service.version": app.version,
                                            "deployment.environment.name": "demo"})
                provider = TracerProvider(resource=resource, id_generator=ids, shutdown_on_exit=False)
                provider.add_span_processor(BatchSpanProcessor(
                    exporter, max_queue_size=1 << 16, schedule_delay_millis=export_delay_ms))
                self._providers[app.service] = provider
                self._tracers[app.service] = provider.get_tracer(f"{app.service}.agent", app.version)
        except BaseException:
            self.close()
            raise
        self._closed = False

    def emit_one(self) -> EmittedTrace:
        """Plan and emit one trace (one user turn) now."""
        rng = self._rng
        app = rng.choice(self._apps)
        scenario = choose_scenario(rng)
        conv = self._conversation(app, follow_up=scenario == "frustrated_user")
        plan = plan_turn(rng, app, scenario, conv)
        trace_id, spans = emit_turn(self._tracers[app.service], plan, rng, time.time_ns())
        if plan.final_text:
            conv.history = (plan.history + [text_message("user", plan.user_text),
                                            text_message("assistant", plan.final_text)])[-MAX_HISTORY_MESSAGES:]
        return EmittedTrace(trace_id, app.service, app.agent, scenario, conv.id, conv.user_id, spans)

    def _conversation(self, app: AppSpec, *, follow_up: bool) -> Conversation:
        """Continue an open conversation of ``app`` (always tried for follow-ups) or start one."""
        rng = self._rng
        open_convs = self._conversations[app.service]
        if open_convs and rng.random() < (0.9 if follow_up else 0.35):
            return rng.choice(open_convs)
        conv = Conversation(id=f"conv_{rng.getrandbits(64):016x}", user_id=f"user-{rng.randint(1, 500):04d}")
        open_convs.append(conv)
        del open_convs[:-MAX_OPEN_CONVERSATIONS]
        return conv

    def run(self, n_traces: int | None = None, rate: float | None = None,
            stop_event: threading.Event | None = None,
            on_trace: Callable[[EmittedTrace], None] | None = None) -> FleetStats:
        """Emit ``n_traces`` (or until ``stop_event`` is set) at most ``rate`` traces/s, then flush.

        With neither ``n_traces`` nor ``stop_event`` it runs until interrupted.
        """
        if self._closed:
            raise RuntimeError("fleet is closed")
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        stats = FleetStats()
        before = self._export_counts()
        start = time.monotonic()
        emitted = 0
        while n_traces is None or emitted < n_traces:
            if stop_event is not None and stop_event.is_set():
                break
            if rate is not None and not self._wait_until(start + emitted / rate, stop_event):
                break
            t = self.emit_one()
            stats.add(t)
            emitted += 1
            if on_trace is not None:
                on_trace(t)
            if emitted % FLUSH_EVERY == 0:
                self.flush()
        self.flush()
        stats.seconds = time.monotonic() - start
        after = self._export_counts()
        stats.messages, stats.export_failures = after[0] - before[0], after[1] - before[1]
        return stats

    @staticmethod
    def _wait_until(due: float, stop_event: threading.Event | None) -> bool:
        """Sleep until ``due`` (monotonic); False if ``stop_event`` was set meanwhile."""
        delay = due - time.monotonic()
        if delay <= 0:
            return True
        if stop_event is None:
            time.sleep(delay)
            return True
        return not stop_event.wait(delay)

    def _export_counts(self) -> tuple[int, int]:
        return (sum(e.stats.messages for e in self._exporters),
                sum(e.stats.failed_exports for e in self._exporters))

    def flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every finished span now; True if all providers flushed in time."""
        return all([p.force_flush(timeout_millis) for p in self._providers.values()])

    def close(self) -> None:
        """Flush and shut down every provider and exporter. Idempotent."""
        self._closed = True
        for provider in self._providers.values():
            provider.shutdown()
        self._providers.clear()
        for exporter in self._exporters:  # also those never attached to a provider
            exporter.shutdown()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
