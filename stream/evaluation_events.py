"""Verdicts back in the team's tracing tool: ``gen_ai.evaluation.result`` events inside the judged trace.

Optional: ``emit_evaluation_events: true`` (``TRACEJUDGE_EMIT_EVALUATION_EVENTS``). The emitter is the
``JudgeService.on_verdicts`` listener, called after verdict rows are stored. For each stored verdict
with status ``ok`` it starts and ends a short span, ``tracejudge.evaluation <judge>``, whose parent is
the judged trace's root span (``SpanContext(trace_id, root span id, is_remote=True)``), and puts on it
an event ``gen_ai.evaluation.result`` (OpenTelemetry GenAI semantic conventions) with

* ``gen_ai.evaluation.name`` — the judge (rubric name);
* ``gen_ai.evaluation.score.label`` — the label (e.g. ``pass`` / ``fail``);
* ``gen_ai.evaluation.score.value`` — the score in [0, 1], when the judge gave one;
* ``gen_ai.evaluation.explanation`` — the judge's explanation (truncated to 4096 characters);
* tracejudge extras: ``tracejudge.judge.version``, ``tracejudge.rubric_hash``, ``tracejudge.judge.provider``,
  ``tracejudge.judge.model`` (pinned), ``tracejudge.judge.tier``, ``tracejudge.verdict.status``,
  ``tracejudge.escalation``, ``tracejudge.cache_hit``, ``tracejudge.cost_usd``,
  ``tracejudge.monitoring_only``, ``tracejudge.quarantined``, ``tracejudge.evidence``.

So the verdict shows up inside the original trace, under its root span. Spans are exported over
OTLP/HTTP (protobuf) to ``evaluation_events_endpoint`` (a base URL; ``/v1/traces`` is appended), else
``otel_exporter_otlp_endpoint``, else the standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_ENDPOINT`` (default ``http://localhost:4318``). They are always sampled.

Not emitted: ``budget_skipped``, ``error`` and ``unscored`` verdicts — they carry no label or score
(a judge that failed is not a judgement); their rows are in ``verdicts``. A placeholder that is later
replaced by a real verdict (backlog) is emitted when the real one is stored. Delivery is best
effort: events are buffered in memory (``BatchSpanProcessor``) and lost if the worker dies before
they are exported; a replayed batch whose verdicts already exist emits nothing again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from stream.telemetry import signal_url, tracejudge_resource, tracejudge_version

if TYPE_CHECKING:
    from schemas.model import Trace
    from stream.config import Settings
    from stream.judge_rows import VerdictRecord

log = logging.getLogger(__name__)

EVENT_NAME = "gen_ai.evaluation.result"
SPAN_NAME = "tracejudge.evaluation"
MAX_EXPLANATION_CHARS = 4096
MAX_EVIDENCE_ITEMS = 20
MAX_EVIDENCE_CHARS = 512


def parent_context(trace: Trace) -> Context | None:
    """A context whose current span is the judged trace's root span (remote, sampled)."""
    root = trace.root
    try:
        trace_id = int(trace.trace_id, 16)
        span_id = int(root.span_id, 16) if root is not None else 0
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace_api.set_span_in_context(NonRecordingSpan(parent))


def event_attributes(rec: VerdictRecord) -> dict[str, Any]:
    v = rec.verdict
    attrs: dict[str, Any] = {"gen_ai.evaluation.name": v.judge}
    if v.label is not None:
        attrs["gen_ai.evaluation.score.label"] = v.label
    if v.score is not None:
        attrs["gen_ai.evaluation.score.value"] = float(v.score)
    if v.explanation:
        attrs["gen_ai.evaluation.explanation"] = _truncate(v.explanation, MAX_EXPLANATION_CHARS)
    attrs.update({
        "tracejudge.judge.version": v.judge_version,
        "tracejudge.rubric_hash": v.rubric_hash,
        "tracejudge.judge.provider": v.provider,
        "tracejudge.judge.model": v.model,
        "tracejudge.judge.tier": rec.tier,
        "tracejudge.verdict.status": v.status,
        "tracejudge.escalation": rec.escalation,
        "tracejudge.cache_hit": bool(rec.cache_hit),
        "tracejudge.cost_usd": float(rec.cost_usd),
        "tracejudge.monitoring_only": bool(rec.monitoring_only),
        "tracejudge.quarantined": bool(rec.quarantined),
    })  # fmt: skip
    if v.evidence:
        attrs["tracejudge.evidence"] = [_truncate(str(e), MAX_EVIDENCE_CHARS) for e in v.evidence[:MAX_EVIDENCE_ITEMS]]
    return attrs


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EvaluationEmitter:
    """``JudgeService.on_verdicts`` listener: one evaluation span + event per ok verdict."""

    def __init__(self, tracer_provider: TracerProvider) -> None:
        self.provider = tracer_provider
        self.tracer = tracer_provider.get_tracer("tracejudge.evaluation", tracejudge_version())
        self.emitted = 0
        self.not_emitted: dict[str, int] = {}  # reason -> count

    async def __call__(self, items: Sequence[tuple[VerdictRecord, Trace]]) -> None:
        for rec, trace in items:
            self.emit(rec, trace)

    def emit(self, rec: VerdictRecord, trace: Trace) -> bool:
        v = rec.verdict
        if v.status != "ok":
            return self._skip(v.status)
        parent = parent_context(trace)
        if parent is None:
            return self._skip("no_root_span")
        span = self.tracer.start_span(
            f"{SPAN_NAME} {v.judge}", context=parent, kind=SpanKind.INTERNAL,
            attributes={"gen_ai.evaluation.name": v.judge, "tracejudge.verdict.status": v.status},
        )  # fmt: skip
        try:
            span.add_event(EVENT_NAME, attributes=event_attributes(rec))
        finally:
            span.end()
        self.emitted += 1
        return True

    def _skip(self, reason: str) -> bool:
        self.not_emitted[reason] = self.not_emitted.get(reason, 0) + 1
        return False

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        try:
            self.provider.shutdown()
        except Exception:  # noqa: BLE001 - shutting down; the exporter already logged
            log.warning("evaluation events: shutdown failed", exc_info=True)


def evaluation_events_url(settings: Settings) -> str | None:
    """The OTLP/HTTP traces URL for evaluation events, or ``None`` for the exporter's standard
    resolution (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` / localhost)."""
    base = settings.evaluation_events_endpoint or settings.otel_exporter_otlp_endpoint
    return signal_url(base, "traces")


def build_evaluation_emitter(settings: Settings, exporter: SpanExporter | None = None) -> EvaluationEmitter | None:
    """The emitter when ``emit_evaluation_events`` is on, else ``None``."""
    if not settings.emit_evaluation_events:
        return None
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = evaluation_events_url(settings)
        exporter = OTLPSpanExporter(endpoint=url)
        log.info("evaluation events: gen_ai.evaluation.result over OTLP/HTTP to %s", getattr(exporter, "_endpoint", url))
    provider = TracerProvider(resource=tracejudge_resource(), sampler=ALWAYS_ON)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return EvaluationEmitter(provider)
