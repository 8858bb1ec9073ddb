"""``gen_ai.evaluation.result`` events inside the judged trace: the listener on a real TracerProvider,
behind a real JudgeService on embedded ClickHouse, and from a real worker over OTLP/HTTP to a
local receiver."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import yaml
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from judges.verdict import Verdict
from stream.config import Settings
from stream.evaluation_events import EVENT_NAME, build_evaluation_emitter, evaluation_events_url
from stream.judge_rows import VerdictRecord
from stream.metrics import VerdictStats, chain_listeners
from tests.factories import genai_trace, proto
from tests.judges.fake_llm import build_trace
from tests.judges.fake_provider import FakeProviderServer
from tests.stream.conftest import Deployment, wait_for
from tests.stream.judging_support import OPEN, close_services, config, honest, message, service, verdicts
from tests.stream.otlp_receiver import OtlpReceiver

DB = "tracejudge"


def emitter_in_memory() -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    emitter = build_evaluation_emitter(Settings(emit_evaluation_events=True), exporter=exporter)
    assert emitter is not None
    return emitter, exporter


def finished(emitter: Any, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    assert emitter.force_flush(10_000)
    return list(exporter.get_finished_spans())


def record(trace_id: str, status: str, **kw: Any) -> VerdictRecord:
    base = dict(trace_id=trace_id, judge="task_completion", judge_version="1", rubric_hash="r" * 64,
                provider="fake", model="judge-cheap-1")  # fmt: skip
    if status == "ok":
        v = Verdict(**base, status="ok", **kw)
    else:
        v = getattr(Verdict, status)(reason="because", **base)
    return VerdictRecord(v, tier="cheap", tiers_called=["cheap"], cost_usd=0.002)


def test_only_ok_verdicts_become_events_under_the_root_span() -> None:
    emitter, exporter = emitter_in_memory()
    trace = build_trace("where is my order?", "It ships tomorrow.", '{"status": "shipped"}', seed=3)
    root = trace.root
    assert root is not None
    items = [
        (record(trace.trace_id, "ok", label="pass", score=0.9, explanation="answered", evidence=["span 1"]), trace),
        (record(trace.trace_id, "ok", label="fail"), trace),  # no score, no explanation
        (record(trace.trace_id, "budget_skipped"), trace),
        (record(trace.trace_id, "error"), trace),
        (record(trace.trace_id, "unscored"), trace),
    ]
    asyncio.run(emitter(items))
    spans = finished(emitter, exporter)
    assert len(spans) == 2 and emitter.emitted == 2
    assert emitter.not_emitted == {"budget_skipped": 1, "error": 1, "unscored": 1}
    for span in spans:
        assert span.context.trace_id == int(trace.trace_id, 16)
        assert span.parent is not None and span.parent.is_remote
        assert span.parent.span_id == int(root.span_id, 16)
        assert span.name == "tracejudge.evaluation task_completion"
        assert span.resource.attributes["service.name"] == "tracejudge"
        (event,) = span.events
        assert event.name == EVENT_NAME == "gen_ai.evaluation.result"
    first, second = (dict(s.events[0].attributes) for s in spans)
    assert first == {
        "gen_ai.evaluation.name": "task_completion",
        "gen_ai.evaluation.score.label": "pass",
        "gen_ai.evaluation.score.value": 0.9,
        "gen_ai.evaluation.explanation": "answered",
        "tracejudge.judge.version": "1",
        "tracejudge.rubric_hash": "r" * 64,
        "tracejudge.judge.provider": "fake",
        "tracejudge.judge.model": "judge-cheap-1",
        "tracejudge.judge.tier": "cheap",
        "tracejudge.verdict.status": "ok",
        "tracejudge.escalation": "",
        "tracejudge.cache_hit": False,
        "tracejudge.cost_usd": 0.002,
        "tracejudge.monitoring_only": False,
        "tracejudge.quarantined": False,
        "tracejudge.evidence": ("span 1",),
    }
    assert second["gen_ai.evaluation.score.label"] == "fail"
    assert "gen_ai.evaluation.score.value" not in second and "gen_ai.evaluation.explanation" not in second
    emitter.shutdown()


def test_long_explanations_are_truncated_and_off_means_no_emitter() -> None:
    assert build_evaluation_emitter(Settings()) is None
    emitter, exporter = emitter_in_memory()
    trace = build_trace("q", "a", seed=4)
    asyncio.run(emitter([(record(trace.trace_id, "ok", label="pass", explanation="x" * 10_000), trace)]))
    (span,) = finished(emitter, exporter)
    text = span.events[0].attributes["gen_ai.evaluation.explanation"]
    assert len(text) == 4096 and text.endswith("…")
    emitter.shutdown()


def test_endpoint_resolution() -> None:
    assert evaluation_events_url(Settings()) is None  # the exporter's OTEL_EXPORTER_OTLP_* resolution
    assert evaluation_events_url(Settings(otel_exporter_otlp_endpoint="http://a:4318")) == "http://a:4318/v1/traces"
    both = Settings(otel_exporter_otlp_endpoint="http://a:4318", evaluation_events_endpoint="http://b:4318/")
    assert evaluation_events_url(both) == "http://b:4318/v1/traces"


def test_judge_service_emits_one_event_per_ok_verdict_and_none_for_budget_skips(store: Any) -> None:
    since = len(OPEN)
    loop = asyncio.new_event_loop()
    try:
        with FakeProviderServer() as server:
            server.default = honest()
            emitter, exporter = emitter_in_memory()
            svc, _ = service(store, server)
            stats = VerdictStats()
            svc.on_verdicts = chain_listeners(stats, emitter)
            msgs = [message(i, failing=i % 2 == 0) for i in range(4)]
            loop.run_until_complete(svc.handle_batch(msgs))
            stored = verdicts(store)
            spans = finished(emitter, exporter)
            assert len(spans) == len(stored) == 4
            for span in spans:
                attrs = dict(span.events[0].attributes)
                row = stored[format(span.context.trace_id, "032x")]
                assert attrs["gen_ai.evaluation.score.label"] == row["label"]
                assert attrs["gen_ai.evaluation.score.value"] == row["score"]
                assert attrs["gen_ai.evaluation.explanation"] == row["explanation"]
                assert attrs["tracejudge.rubric_hash"] == row["rubric_hash"]
                assert attrs["tracejudge.judge.model"] == row["model"]
            # a budget far below one call: every verdict is a budget_skipped placeholder, none emitted
            exporter.clear()
            poor, _ = service(store, server, budget={"global_usd": 0.0001})
            poor.on_verdicts = chain_listeners(stats, emitter)
            loop.run_until_complete(poor.on_assigned([0]))
            loop.run_until_complete(poor.handle_batch([message(100 + i, failing=i == 0) for i in range(3)]))
            assert poor.counters["verdicts"] == 3
            assert finished(emitter, exporter) == []
            assert stats.by_status == {("task_completion", "ok"): 4, ("task_completion", "budget_skipped"): 3}
            emitter.shutdown()
    finally:
        loop.run_until_complete(close_services(since))
        loop.close()


def test_a_real_worker_sends_evaluation_events_into_the_judged_traces(
    deployment: Callable[..., Deployment], tmp_path: Any
) -> None:
    rng = random.Random(31)
    rng.randrange(10**9)  # (drawn as before: the data below stays that of this seed)
    with FakeProviderServer() as server, OtlpReceiver() as receiver:
        server.default = honest()
        judging = tmp_path / "judging.yaml"
        judging.write_text(yaml.safe_dump(config(server, budget={"global_usd": 10.0})))
        d = deployment(judging_file=judging,
                       emit_evaluation_events="true", evaluation_events_endpoint=receiver.url)  # fmt: skip
        d.settings.update(FAKE_OPENAI_KEY="sk-test", OTEL_BSP_SCHEDULE_DELAY="100")
        worker = d.start_worker()
        traces = [genai_trace(rng, 4) for _ in range(6)]
        for n, t in enumerate(traces):
            for span in t:
                if "gen_ai.output.messages" in span.attrs:
                    marker = "ERROR " if n < 3 else ""
                    span.attrs["gen_ai.output.messages"] = span.attrs["gen_ai.output.messages"].replace(
                        "answer", f"{marker}answer of trace {n}")  # fmt: skip
            t[-1].error = True  # all suspected failures: all sampled and judged
        d.produce([(t[0].trace_id.hex().encode(), proto(t), None) for t in traces])
        roots = {t[0].trace_id.hex(): t[0].span_id.hex() for t in traces}
        failing = {t[0].trace_id.hex() for t in traces[:3]}

        def ok_verdicts() -> dict[str, list[Any]]:
            rows = worker.sql(f"SELECT trace_id, judge, label, score, explanation, rubric_hash, model "
                              f"FROM {DB}.verdicts FINAL WHERE status = 'ok'")  # fmt: skip
            return {r[0]: r for r in rows}

        assert wait_for(lambda: len(ok_verdicts()) == 6, 90)
        rows = ok_verdicts()

        def events() -> list[Any]:
            return [s for s in receiver.spans() if s.events(EVENT_NAME)]

        assert wait_for(lambda: len(events()) == 6, 30)
        got = events()
        assert {s.trace_id for s in got} == set(roots) == set(rows)
        for s in got:
            assert s.parent_span_id == roots[s.trace_id]  # under the judged trace's root span
            assert s.scope == "tracejudge.evaluation" and s.resource["service.name"] == "tracejudge"
            (attrs,) = s.events(EVENT_NAME)
            _tid, judge, label, score, explanation, rubric_hash, model = rows[s.trace_id]
            assert attrs["gen_ai.evaluation.name"] == judge == "task_completion"
            assert attrs["gen_ai.evaluation.score.label"] == label
            assert label == ("fail" if s.trace_id in failing else "pass")
            assert attrs["gen_ai.evaluation.score.value"] == score
            assert attrs["gen_ai.evaluation.explanation"] == explanation == f"{label} by rule"
            assert attrs["tracejudge.rubric_hash"] == rubric_hash
            assert attrs["tracejudge.judge.model"] == model
            assert attrs["tracejudge.verdict.status"] == "ok"
        # the worker's own telemetry is off (no otel endpoint): only evaluation spans arrived
        assert all(s.scope == "tracejudge.evaluation" for s in receiver.spans())
        assert receiver.content_types == {"application/x-protobuf"}
