"""The worker's metrics: every family declared once (:data:`SPECS`) and read from the live counters.

Nothing here counts on its own except :class:`VerdictStats` (verdicts by judge and status, which
no other counter keeps): a scrape (or an OpenTelemetry collection, :mod:`stream.telemetry`) calls
:func:`snapshot`, which reads ``Pipeline.counters``, the open traces, ``JudgeService.counters``,
the runner's stats, the budget book and the Kafka consumer's offsets, so ``/metrics`` always
equals ``/api/status``. Every family is declared once in :data:`SPECS` (name, type, help, labels,
unit); both exporters use that table: Prometheus ``/metrics`` (:mod:`stream.prometheus`) and
OpenTelemetry (:mod:`stream.telemetry`).

Names carry the ``tracejudge_`` prefix and their unit; counters end in ``_total`` in the
exposition (the family names in :data:`SPECS` are without the suffix, as prometheus-client wants).
Counters restart from zero with the worker process, as Prometheus expects.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from stream.gc_pauses import PAUSES

if TYPE_CHECKING:
    import faust

    from schemas.model import Trace
    from stream.judge_rows import VerdictRecord
    from stream.judging import JudgeService
    from stream.pipeline import Pipeline
    from stream.store import ClickHouseStore

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge"]
Labels = tuple[tuple[str, str], ...]
#: family name -> [(labels, value)]
Snapshot = dict[str, list[tuple[Labels, float]]]


@dataclass(frozen=True, slots=True)
class Spec:
    name: str  # counters without the _total suffix
    kind: Kind
    doc: str
    labels: tuple[str, ...] = ()
    unit: str = "1"  # UCUM-ish unit for OpenTelemetry instruments


def _c(name: str, doc: str, labels: tuple[str, ...] = (), unit: str = "1") -> Spec:
    return Spec("tracejudge_" + name, "counter", doc, labels, unit)


def _g(name: str, doc: str, labels: tuple[str, ...] = (), unit: str = "1") -> Spec:
    return Spec("tracejudge_" + name, "gauge", doc, labels, unit)


SPECS: tuple[Spec, ...] = (
    # ---- ingest: Pipeline.counters ----------------------------------------------------------
    _c("messages_in", "Kafka messages taken from the input and repartition topics", unit="{message}"),
    _c("spans_in", "spans decoded from accepted messages", unit="{span}"),
    _c("spans_stored", "spans acknowledged by ClickHouse", unit="{span}"),
    _c("store_refused_rows", "rows ClickHouse refused, by table (their messages are dead-lettered as "
       "insert_rejected)", ("table",), "{row}"),  # fmt: skip
    _c("repartitioned_messages", "unkeyed input messages split per trace onto the repartition topic", unit="{message}"),
    _c("repartition_parts_cut", "repartition records beyond one per trace: a trace's part of an unkeyed message "
       "cut under max_repartition_message_bytes", unit="{message}"),  # fmt: skip
    _c("repartition_spans_fitted", "spans larger alone than max_repartition_message_bytes with every value within "
       "max_attribute_bytes: made to fit, their largest values cut (named in truncated_attributes), then if need be "
       "their name and status message cut and events and attributes dropped (counted in their attributes "
       "tracejudge.dropped_*)", unit="{span}"),  # fmt: skip
    _c("repartition_oversize_records", "repartition records over max_repartition_message_bytes all the same: a "
       "resource or scope alone that large (the broker may refuse it)", unit="{message}"),  # fmt: skip
    _c("otlp_json_slow_messages", "OTLP/JSON messages not in the shape read straight into spans (snake_case keys, "
       "enums by name, ...): decoded through protobuf's JSON parser, ~10x the CPU per span", unit="{message}"),  # fmt: skip
    _c("late_spans", "spans of traces that had already completed", unit="{span}"),
    _c("replayed_spans", "redelivered spans of open traces (deduplicated)", unit="{span}"),
    _c("spans_not_held", "spans stored but not held in memory (max_spans_per_trace)", unit="{span}"),
    _c("traces_assembled", "traces completed and stored, by completion reason", ("completion_reason",), "{trace}"),
    _c("traces_recovered", "open traces rebuilt from ClickHouse on partition assignment", unit="{trace}"),
    _c("action_events", "valid product events stored", unit="{event}"),
    _c("action_events_late", "product events linked late to a trace decided without them (a retried link "
       "counts again)", unit="{event}"),  # fmt: skip
    _c("sampling_decisions", "completed traces by sampling class", ("sample_class",), "{trace}"),
    _c("traces_sampled", "completed traces sent to the judges topic", unit="{trace}"),
    _c("gate_failures", "gate results fail, by gate", ("gate",), "{trace}"),
    _c("gate_errors", "gates (and signal miners) that raised, by name", ("gate",), "{trace}"),
    _c("signals", "semantic and action signals found, by type", ("type",), "{signal}"),
    _c("consumer_skipped_offsets", "offsets a consumed partition skipped: Faust counts them as processed "
       "(stream/offset_gaps.py)", ("topic",), "{message}"),
    _c("consumer_reread_messages", "skipped messages read again outside the group and handled",
       unit="{message}"),
    _c("consumer_unrecovered_offsets", "skipped offsets that could not be read again, dead-lettered as a range "
       "(gap_unrecovered: dead_letter)", ("topic",), "{message}"),
    _c("dead_letters", "messages sent to a dead-letter topic", ("topic",), "{message}"),
    _c("dead_letter_reasons", "span messages dead-lettered, by reason", ("topic", "reason"), "{message}"),
    _c("store_write_retries", "ClickHouse operations retried", ("component",), "{retry}"),
    _c("store_inserts", "ClickHouse inserts that succeeded, by table", ("table",), "{insert}"),
    _c("store_insert_rows", "rows of the ClickHouse inserts that succeeded, by table", ("table",), "{row}"),
    _c("store_insert_seconds", "wall time of the ClickHouse inserts that succeeded (serialization, transfer and "
       "the server's insert), by table", ("table",), "s"),  # fmt: skip
    _c("store_insert_failures", "ClickHouse insert attempts that failed (and were retried), by table", ("table",),
       "{insert}"),  # fmt: skip
    _c("kafka_send_retries", "Kafka deliveries retried", unit="{retry}"),
    _c("kafka_send_refused", "record deliveries Kafka refused for good (authorization, topic, size), retried until "
       "the configuration changes", ("component",), "{record}"),
    _c("dead_letter_values_omitted", "dead letters refused as too large and sent without the original message "
       "(it stays at its source offset)", ("component",), "{message}"),
    _g("open_traces", "traces held in memory, waiting to complete", unit="{trace}"),
    _c("gc_collections", "garbage collections of this process, by generation", ("generation",), "{collection}"),
    _c("gc_pause_seconds", "time garbage collections stopped this process, by generation", ("generation",), "s"),
    _g("gc_longest_pause_seconds", "longest garbage-collection pause of this process, by generation",
       ("generation",), "s"),  # fmt: skip
    _g("owned_partitions", "input and repartition partitions assigned to this worker", unit="{partition}"),
    _g("policy_info", "the policy version in force (value 1)", ("policy_version",)),
    # ---- Kafka consumer ---------------------------------------------------------------------
    _g("consumer_committed_offset", "committed offset (next to read) per assigned partition", ("topic", "partition")),
    _g("consumer_highwater_offset", "log end offset per assigned partition (as last fetched)", ("topic", "partition")),
    _g("consumer_lag_messages", "highwater minus committed offset per assigned partition",
       ("topic", "partition"), "{message}"),  # fmt: skip
    # ---- judging: JudgeService.counters, runner.stats, budget -------------------------------
    _c("judge_messages", "to_judge messages taken", unit="{message}"),
    _c("judge_verdicts", "verdict rows stored, by judge and status", ("judge", "status"), "{verdict}"),
    _c("judge_verdict_cost_usd", "cost of the stored verdicts (all tiers; cache hits cost 0)", ("judge",), "USD"),
    _c("judge_calls", "paid judge calls (live and backlog)", unit="{call}"),
    _c("judge_cache_hits", "verdicts served from the verdict cache", unit="{verdict}"),
    _c("judge_escalations", "cascades that ran a stronger tier", unit="{verdict}"),
    _c("judge_budget_skipped", "judgements skipped by the budget ladder", unit="{verdict}"),
    _c("judge_deferred", "judgements deferred to the backlog", unit="{verdict}"),
    _c("judge_paused_skips", "judgements skipped because their provider is paused", unit="{verdict}"),
    _c("judge_flake_pairs", "flake-detection re-judgements", unit="{call}"),
    _c("judge_replay_skipped", "judgements skipped because a verdict row already existed", unit="{verdict}"),
    _c("judge_backlog_added", "backlog entries written", unit="{entry}"),
    _c("judge_backlog_judged", "backlog entries judged", unit="{entry}"),
    _c("judge_alerts", "judge alerts raised (paused, drift, quarantine)", unit="{alert}"),
    _c("judge_partition_assignments", "to_judge partition assignments seen", unit="{rebalance}"),
    _c("judge_spans_by_reference", "to_judge messages whose spans were loaded from ClickHouse", unit="{message}"),
    _c("judge_spans_ref_not_found", "by-reference to_judge messages dead-lettered: spans not stored", unit="{message}"),
    _g("judge_spend_usd", "spend in the current budget period of this worker's to_judge partitions",
       ("judge",), "USD"),  # fmt: skip
    _g("judge_in_flight_usd", "budget reserved by judge calls in flight", unit="USD"),
    _g("judge_budget_usd", "budget of this worker's partitions in the period (scope: global or a judge)",
       ("scope",), "USD"),  # fmt: skip
    _g("judge_budget_period_start_seconds", "start of the current budget period (unix time)", unit="s"),
    _g("judge_budget_partitions", "owned to_judge partitions by budget level", ("level",), "{partition}"),
    _g("judge_provider_paused", "1 while a judge provider is paused", ("provider",)),
)
SPEC_BY_NAME = {s.name: s for s in SPECS}

#: Pipeline.counters field -> (family, label name or None); a test checks every field is mapped
PIPELINE_FIELDS: dict[str, tuple[str, str | None]] = {
    "messages_in": ("messages_in", None),
    "spans_in": ("spans_in", None),
    "spans_stored": ("spans_stored", None),
    "refused_rows": ("store_refused_rows", "table"),
    "repartitioned_messages": ("repartitioned_messages", None),
    "repartition_parts_cut": ("repartition_parts_cut", None),
    "repartition_spans_fitted": ("repartition_spans_fitted", None),
    "repartition_oversize_records": ("repartition_oversize_records", None),
    "otlp_json_slow_messages": ("otlp_json_slow_messages", None),
    "late_spans": ("late_spans", None),
    "replayed_spans": ("replayed_spans", None),
    "spans_not_held": ("spans_not_held", None),
    "traces_completed": ("traces_assembled", "completion_reason"),
    "traces_recovered": ("traces_recovered", None),
    "action_events": ("action_events", None),
    "action_events_late": ("action_events_late", None),
    "sample_classes": ("sampling_decisions", "sample_class"),
    "sampled": ("traces_sampled", None),
    "gate_failures": ("gate_failures", "gate"),
    "gate_errors": ("gate_errors", "gate"),
    "signals": ("signals", "type"),
    "send_retries": ("kafka_send_retries", None),
    "send_refused": ("kafka_send_refused", "component"),
    "dead_letter_values_omitted": ("dead_letter_values_omitted", "component"),
    "skipped_offsets": ("consumer_skipped_offsets", "topic"),
    "reread_messages": ("consumer_reread_messages", None),
    "unrecovered_offsets": ("consumer_unrecovered_offsets", "topic"),
    # below: combined with other sources in _pipeline()
    "dead_lettered": ("dead_letters", "topic"),
    "dead_letter_reasons": ("dead_letter_reasons", "reason"),
    "write_retries": ("store_write_retries", "component"),
}
JUDGE_COUNTER_FIELDS = {
    "messages": "judge_messages", "replay_skipped": "judge_replay_skipped", "backlog_added": "judge_backlog_added",
    "backlog_judged": "judge_backlog_judged", "alerts": "judge_alerts",
    "assignments": "judge_partition_assignments", "spans_by_reference": "judge_spans_by_reference",
    "spans_ref_not_found": "judge_spans_ref_not_found",
    "dead_lettered": None, "verdicts": None, "write_retries": None,  # dead_letters / judge_verdicts / store_write_retries
    "send_refused": None, "dead_letter_values_omitted": None,  # PER_COMPONENT
}  # fmt: skip
#: counters both the pipeline and the judge service keep -> family (labelled component=ingest / judging)
PER_COMPONENT = {"send_refused": "kafka_send_refused", "dead_letter_values_omitted": "dead_letter_values_omitted"}
RUNNER_STAT_FIELDS = {
    "calls": "judge_calls", "cache_hits": "judge_cache_hits", "escalations": "judge_escalations",
    "budget_skipped": "judge_budget_skipped", "deferred": "judge_deferred", "paused_skips": "judge_paused_skips",
    "flake_pairs": "judge_flake_pairs",
}  # fmt: skip

Listener = Callable[[Sequence[tuple["VerdictRecord", "Trace"]]], Awaitable[None]]


class VerdictStats:
    """A ``JudgeService.on_verdicts`` listener counting stored verdicts by (judge, status) and their
    cost by judge — numbers no other counter keeps. Its total equals the service's ``verdicts``."""

    def __init__(self) -> None:
        self.by_status: dict[tuple[str, str], int] = {}
        self.cost_usd: dict[str, float] = {}

    async def __call__(self, items: Sequence[tuple[VerdictRecord, Trace]]) -> None:
        for rec, _trace in items:
            v = rec.verdict
            key = (v.judge, v.status)
            self.by_status[key] = self.by_status.get(key, 0) + 1
            self.cost_usd[v.judge] = self.cost_usd.get(v.judge, 0.0) + float(rec.cost_usd)


def chain_listeners(*listeners: Listener | None) -> Listener | None:
    """One ``on_verdicts`` listener calling each given one in order; a failing listener is logged
    and does not keep the others from running."""
    active = [x for x in listeners if x is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]

    async def call_all(items: Sequence[tuple[VerdictRecord, Trace]]) -> None:
        for listener in active:
            try:
                await listener(items)
            except Exception:  # noqa: BLE001 - best effort, like JudgeService's own guard
                log.exception("verdict listener %r failed", listener)

    return call_all


@dataclass(frozen=True)
class PartitionOffsets:
    topic: str
    partition: int
    committed: int | None
    highwater: int | None


def consumer_offsets(app: faust.App) -> list[PartitionOffsets]:
    """Committed and highwater offsets of the partitions assigned to the app's consumer.

    faust-streaming 0.15: ``consumer.assignment()``, ``consumer.highwater(tp)`` (the log end offset
    from the last fetch response, ``None`` before the first fetch) and ``consumer._committed_offset``
    (what Faust last committed, or read from Kafka on assignment: the next offset to consume). Empty
    before the consumer started."""
    consumer = getattr(app, "_consumer", None)
    if consumer is None:
        return []
    try:
        assigned = consumer.assignment()
    except Exception:  # noqa: BLE001 - not started / stopping
        return []
    committed_map = getattr(consumer, "_committed_offset", {})
    out = []
    for tp in sorted(assigned):
        try:
            hw = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - assignment changed meanwhile
            hw = None
        committed = committed_map.get(tp)  # .get: it is a defaultdict; never insert
        out.append(PartitionOffsets(tp.topic, tp.partition, committed, hw))
    return out


@dataclass
class MetricSources:
    """What a snapshot reads. ``offsets`` returns the consumer's partition offsets (see
    :func:`consumer_offsets`); every source but the pipeline is optional."""

    pipeline: Pipeline
    judging: JudgeService | None = None
    verdicts: VerdictStats | None = None
    offsets: Callable[[], list[PartitionOffsets]] | None = None
    store: ClickHouseStore | None = None


def snapshot(src: MetricSources) -> Snapshot:
    """Every family of :data:`SPECS` with its current points (possibly none)."""
    out: Snapshot = {s.name: [] for s in SPECS}
    _pipeline(src.pipeline, out)
    if src.offsets is not None:
        _offsets(src.offsets(), out)
    if src.judging is not None:
        _judging(src.judging, src.verdicts, out)
    if src.store is not None:
        _store(src.store, out)
    return out


def _put(out: Snapshot, family: str, value: float, **labels: str) -> None:
    out["tracejudge_" + family].append((tuple(labels.items()), float(value)))


def _pipeline(pipeline: Pipeline, out: Snapshot) -> None:
    c = pipeline.counters.as_dict()
    settings = pipeline.settings
    for key, (family, label) in PIPELINE_FIELDS.items():
        if key in ("dead_lettered", "dead_letter_reasons", "write_retries", *PER_COMPONENT):
            continue
        value = c.get(key, 0)
        if label is None:
            _put(out, family, value)
        else:
            for k, n in sorted(dict(value).items()):
                _put(out, family, n, **{label: str(k)})
    reasons = dict(c.get("dead_letter_reasons") or {})
    for reason, n in sorted(reasons.items()):
        _put(out, "dead_letter_reasons", n, topic=settings.dlq_topic, reason=reason)
    # every span dead letter is counted with its reason; the rest of `dead_lettered` are events
    spans_dlq = sum(reasons.values())
    _put(out, "dead_letters", spans_dlq, topic=settings.dlq_topic)
    _put(out, "dead_letters", max(0, c.get("dead_lettered", 0) - spans_dlq), topic=settings.events_dlq_topic)
    _put(out, "store_write_retries", c.get("write_retries", 0), component="ingest")
    for key, family in PER_COMPONENT.items():
        _put(out, family, c.get(key, 0), component="ingest")
    _put(out, "open_traces", len(pipeline.assembler))
    for g in range(3):
        _put(out, "gc_collections", PAUSES.collections[g], generation=str(g))
        _put(out, "gc_pause_seconds", PAUSES.seconds[g], generation=str(g))
        _put(out, "gc_longest_pause_seconds", PAUSES.longest[g], generation=str(g))
    _put(out, "owned_partitions", len(pipeline.owned))
    if pipeline.decider is not None:
        _put(out, "policy_info", 1, policy_version=str(pipeline.decider.version))


#: InsertStats field -> family
STORE_INSERT_FIELDS = {"inserts": "store_inserts", "rows": "store_insert_rows", "seconds": "store_insert_seconds",
                       "failures": "store_insert_failures"}  # fmt: skip


def _store(store: ClickHouseStore, out: Snapshot) -> None:
    for table, stats in store.insert_stats().items():
        for key, family in STORE_INSERT_FIELDS.items():
            _put(out, family, stats[key], table=table)


def _offsets(parts: Iterable[PartitionOffsets], out: Snapshot) -> None:
    for p in parts:
        labels = {"topic": p.topic, "partition": str(p.partition)}
        if p.committed is not None:
            _put(out, "consumer_committed_offset", p.committed, **labels)
        if p.highwater is not None:
            _put(out, "consumer_highwater_offset", p.highwater, **labels)
            # before the first commit on a partition, lag counts from offset 0
            _put(out, "consumer_lag_messages", max(0, p.highwater - (p.committed or 0)), **labels)


def _judging(judging: JudgeService, verdicts: VerdictStats | None, out: Snapshot) -> None:
    status = judging.status()
    counters, stats, budget = status["counters"], status["runner"], status["budget"]
    for key, family in JUDGE_COUNTER_FIELDS.items():
        if family is not None:
            _put(out, family, counters.get(key, 0))
    _put(out, "dead_letters", counters.get("dead_lettered", 0), topic=judging.dlq_topic)
    _put(out, "store_write_retries", counters.get("write_retries", 0), component="judging")
    for key, family in PER_COMPONENT.items():
        _put(out, family, counters.get(key, 0), component="judging")
    for key, family in RUNNER_STAT_FIELDS.items():
        _put(out, family, stats.get(key, 0))
    if verdicts is not None:
        for (judge, st), n in sorted(verdicts.by_status.items()):
            _put(out, "judge_verdicts", n, judge=judge, status=st)
        for judge, usd in sorted(verdicts.cost_usd.items()):
            _put(out, "judge_verdict_cost_usd", usd, judge=judge)
    by_judge: dict[str, list[float]] = {j: [] for j in judging.runner.judges}
    levels: dict[str, int] = {}
    for part in budget["partitions"].values():
        for judge, usd in part["spent_by_judge"].items():
            by_judge.setdefault(judge, []).append(usd)
        levels[part["global_level"]] = levels.get(part["global_level"], 0) + 1
    for judge, amounts in sorted(by_judge.items()):
        _put(out, "judge_spend_usd", math.fsum(amounts), judge=judge)
    for level in ("NORMAL", "NO_SUCCESS", "CHEAP_ONLY", "DEFER"):
        _put(out, "judge_budget_partitions", levels.pop(level, 0), level=level)
    for level, n in sorted(levels.items()):  # a level added later still shows
        _put(out, "judge_budget_partitions", n, level=level)
    _put(out, "judge_in_flight_usd", budget["in_flight"])
    owned = len(budget["partitions"])
    shares = {"global": judging.budget.share(), **{j: judging.budget.share(j) for j in judging.budget.spec.per_judge_usd}}
    for scope, share in sorted(shares.items()):
        if share is not None:
            _put(out, "judge_budget_usd", share * owned, scope=scope)
    _put(out, "judge_budget_period_start_seconds", budget["period_start"])
    paused = status["paused"]
    for provider in sorted(judging.providers):
        _put(out, "judge_provider_paused", 1 if provider in paused else 0, provider=provider)
