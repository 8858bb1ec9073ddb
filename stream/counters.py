"""What the worker counts: exposed on ``/api/status`` and printed by the demo."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stream.assembly import CompletedTrace
from stream.decide import TraceDecision


@dataclass
class Counters:
    messages_in: int = 0
    spans_in: int = 0
    spans_stored: int = 0
    refused_rows: dict[str, int] = field(default_factory=dict)  # by table: ClickHouse refused them (refused_rows.py)
    dead_lettered: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    repartitioned_messages: int = 0
    repartition_parts_cut: int = 0  # records beyond one per trace part: a large trace's part cut under the limit
    repartition_spans_fitted: int = 0  # spans larger alone than a repartition record, made to fit (schemas/shrink.py)
    repartition_oversize_records: int = 0  # records over max_repartition_message_bytes all the same
    otlp_json_slow_messages: int = 0  # OTLP/JSON not read straight into spans: protobuf's JSON parser
    late_spans: int = 0
    replayed_spans: int = 0
    spans_not_held: int = 0
    traces_completed: dict[str, int] = field(default_factory=dict)
    traces_recovered: int = 0
    write_retries: int = 0
    send_retries: int = 0
    send_refused: int = 0  # record deliveries Kafka refused for good (stream/delivery.py), retried
    dead_letter_values_omitted: int = 0  # dead letters too large, sent without the original message
    action_events: int = 0
    action_events_late: int = 0  # linked to a trace decided without them (EventJoiner.late_events)
    sample_classes: dict[str, int] = field(default_factory=dict)
    sampled: int = 0
    gate_failures: dict[str, int] = field(default_factory=dict)
    gate_errors: dict[str, int] = field(default_factory=dict)
    signals: dict[str, int] = field(default_factory=dict)
    skipped_offsets: dict[str, int] = field(default_factory=dict)  # by topic (stream/offset_gaps.py)
    reread_messages: int = 0  # skipped messages read again and ingested
    unrecovered_offsets: dict[str, int] = field(default_factory=dict)  # skipped, not read again, dead-lettered

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def count_refused(self, table: str, rows: int) -> None:
        self.refused_rows[table] = self.refused_rows.get(table, 0) + rows

    def count_skipped(self, topic: str, first: int, last: int) -> None:
        self.skipped_offsets[topic] = self.skipped_offsets.get(topic, 0) + last - first + 1

    def count_completed(self, c: CompletedTrace, d: TraceDecision | None) -> None:
        _inc(self.traces_completed, c.trace.completion_reason.value)
        if d is None:
            return
        _inc(self.sample_classes, d.decision.sample_class)
        self.sampled += d.decision.sampled
        for g in d.failed_gates:
            _inc(self.gate_failures, g)
        for g in d.gate_errors + d.miner_errors:
            _inc(self.gate_errors, g)
        for sig in d.signals:
            _inc(self.signals, sig.type)


def _inc(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1
