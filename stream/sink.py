"""The Sink interface the pipeline writes to, and its ClickHouse implementation.

Writes are idempotent: span rows are keyed by (trace_id, span_id) and trace rows by trace_id in
ReplacingMergeTree tables (read with FINAL), and each insert carries a deduplication token derived
from its content's source (topic/partition/offset range), so retrying an insert whose outcome was
unknown cannot create a second part.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.model import Span
from stream.assembly import TP, Decided
from stream.constraint_check import stored_rows_violate
from stream.rows import RAW_SPAN_SELECT, SPAN_COLUMNS, TRACE_COLUMNS, span_from_row
from stream.store import ClickHouseStore
from stream.table_copy import Copy, NullCopy

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DecidedTrace:
    """A stored trace row, as recovery reads it: what the assembler remembers (``decided``), and
    what the product-event joins ask of a trace (``stream.events.AboutTrace``)."""

    trace_id: str
    decided: Decided
    conversation_id: str
    start_ns: int
    end_ns: int


class Sink(Protocol):
    async def write_spans(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None: ...

    async def write_traces(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None: ...

    def spans_copy(self) -> AbstractAsyncContextManager[Copy]:
        """A copy of ``spans`` that keeps nothing, to find refused rows in (stream/refused_rows.py)."""
        ...

    async def stored_spans_refused(self, names: Sequence[str]) -> bool | None:
        """Whether every recent stored span breaks one of the CHECK constraints ``names`` (None: cannot tell)."""
        ...

    async def write_gate_results(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None: ...

    async def write_signals(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None: ...

    async def load_open_spans(self, tp: TP, window_s: float) -> list[tuple[Span, int, int]]:
        """Spans of traces not yet completed, for ``tp``: (span, source offset, ingested ns)."""
        ...

    async def load_decided(self, tp: TP, window_s: float) -> list[DecidedTrace]:
        """Traces of ``tp`` decided within ``window_s`` before its newest span, oldest first."""
        ...

    async def lookup_decided(self, trace_ids: Sequence[str]) -> list[tuple[str, Decided]]: ...

    async def stored_on_time(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (trace id, span id) of ``keys`` are stored as on-time spans."""
        ...


class ClickHouseSink:
    def __init__(self, store: ClickHouseStore) -> None:
        self.store = store
        self.db = store.database

    async def write_spans(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        await self.store.ainsert("spans", rows, SPAN_COLUMNS, dedup_token)

    async def write_traces(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        await self.store.ainsert("traces", rows, TRACE_COLUMNS, dedup_token)

    def spans_copy(self) -> NullCopy:
        return NullCopy(self.store, "spans", SPAN_COLUMNS)

    async def stored_spans_refused(self, names: Sequence[str]) -> bool | None:
        """Whether every recent span stored breaks one of the CHECK constraints ``names`` (``KnownGood``):
        spans that started in the last day, which the table's partitions by start day find."""
        return await stored_rows_violate(self.store, "spans", names, "start_time >= now() - INTERVAL 1 DAY")

    async def write_gate_results(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        from stream.decision_rows import GATE_COLUMNS

        await self.store.ainsert("gate_results", rows, GATE_COLUMNS, dedup_token)

    async def write_signals(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        from stream.decision_rows import SIGNAL_COLUMNS

        await self.store.ainsert("signals", rows, SIGNAL_COLUMNS, dedup_token)

    async def _window_start_ms(self, tp: TP, window_s: float) -> int | None:
        """Start of the recovery window, anchored at the partition's newest span (not at "now":
        after a long outage the traces that were open are still found, then expire by age)."""
        _, rows = await self.store.aquery(
            f"SELECT toUnixTimestamp64Milli(max(ingested_at)), count() FROM {self.db}.spans "
            "WHERE kafka_topic = {topic:String} AND kafka_partition = {partition:Int32}",
            {"topic": tp[0], "partition": tp[1]},
        )
        if not rows or not rows[0][1]:
            return None
        return int(rows[0][0]) - int(window_s * 1000)

    async def load_open_spans(self, tp: TP, window_s: float) -> list[tuple[Span, int, int]]:
        since = await self._window_start_ms(tp, window_s)
        if since is None:
            return []
        sql = (
            f"SELECT {RAW_SPAN_SELECT}, toUnixTimestamp64Nano(ingested_at) FROM {self.db}.spans FINAL "
            "WHERE kafka_topic = {topic:String} AND kafka_partition = {partition:Int32} "
            "AND ingested_at >= fromUnixTimestamp64Milli({since:Int64}) AND is_late = 0 "
            f"AND trace_id NOT IN (SELECT trace_id FROM {self.db}.traces "
            "WHERE completed_at >= fromUnixTimestamp64Milli({since:Int64}))"
        )
        _, rows = await self.store.aquery(sql, {"topic": tp[0], "partition": tp[1], "since": since})
        out = []
        for row in rows:
            try:
                span, offset = span_from_row(row[:-1])
            except Exception:  # noqa: BLE001 - retrying cannot fix a row: it would hold the partition for good
                log.exception("trace %s span %s of %s/%d: stored row cannot be read back; left out of the recovered "
                              "trace", row[0], row[1], tp[0], tp[1])  # fmt: skip
                continue
            out.append((span, offset, int(row[-1])))
        return out

    async def load_decided(self, tp: TP, window_s: float) -> list[DecidedTrace]:
        since = await self._window_start_ms(tp, window_s)
        if since is None:
            return []
        sql = (
            "SELECT trace_id, kafka_topic, kafka_partition, max_offset, toUnixTimestamp64Nano(completed_at), "
            f"conversation_id, toUnixTimestamp64Nano(start_time), toUnixTimestamp64Nano(end_time) FROM {self.db}.traces "
            "FINAL WHERE kafka_topic = {topic:String} AND kafka_partition = {partition:Int32} "
            "AND completed_at >= fromUnixTimestamp64Milli({since:Int64}) ORDER BY completed_at"
        )
        _, rows = await self.store.aquery(sql, {"topic": tp[0], "partition": tp[1], "since": since})
        return [DecidedTrace(r[0], Decided((r[1], int(r[2])), int(r[3]), int(r[4])), r[5], int(r[6]), int(r[7]))
                for r in rows]  # fmt: skip

    async def lookup_decided(self, trace_ids: Sequence[str]) -> list[tuple[str, Decided]]:
        if not trace_ids:
            return []
        sql = (
            f"SELECT trace_id, kafka_topic, kafka_partition, max_offset, "
            f"toUnixTimestamp64Nano(completed_at) FROM {self.db}.traces FINAL "
            f"WHERE trace_id IN {{ids:Array(String)}}"
        )
        _, rows = await self.store.aquery(sql, {"ids": list(trace_ids)})
        return [(r[0], Decided((r[1], int(r[2])), int(r[3]), int(r[4]))) for r in rows]

    async def stored_on_time(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        # no FINAL: an on-time row not yet merged away counts (a late copy stored before may hold the key)
        if not keys:
            return set()
        sql = (
            f"SELECT DISTINCT trace_id, span_id FROM {self.db}.spans "
            "WHERE trace_id IN {tids:Array(String)} AND span_id IN {sids:Array(String)} AND is_late = 0"
        )
        _, rows = await self.store.aquery(sql, {"tids": sorted({t for t, _ in keys}), "sids": sorted({s for _, s in keys})})
        wanted = set(keys)
        return {(str(t), str(sp)) for t, sp in rows} & wanted
