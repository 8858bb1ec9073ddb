"""ClickHouse reads and writes of the judging runtime (tables in ``schemas/sql/0005_judging.sql``).

All queries are parameterized; every insert carries a dedup token and lands in a
ReplacingMergeTree keyed by its natural key, so a retried or replayed write cannot double a row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from stream.judge_rows import (
    ALERT_COLUMNS,
    BACKLOG_COLUMNS,
    CALL_COLUMNS,
    REJUDGE_COLUMNS,
    VERDICT_COLUMNS,
)
from schemas.model import Span
from stream.rows import RAW_SPAN_SELECT, span_from_row
from stream.store import ClickHouseStore

VerdictKey = tuple[str, str, str]  # trace_id, judge, rubric_hash
CacheKey = tuple[str, str, str]  # rubric_hash, model, input_hash


@dataclass(frozen=True, slots=True)
class BacklogItem:
    trace_id: str
    judge: str
    rubric_hash: str
    envelope: bytes
    partition: int
    reason: str


class JudgeSink:
    def __init__(self, store: ClickHouseStore) -> None:
        self.store = store
        self.db = store.database

    # ---- spans of traces sent by reference (stream.judge_envelope) ----------------------------
    async def load_spans(self, trace_ids: Sequence[str]) -> dict[str, list[tuple[Span, bool]]]:
        """Stored spans of these traces, with their ``is_late`` flag, per trace id."""
        sql = (f"SELECT {RAW_SPAN_SELECT}, is_late FROM {self.db}.spans FINAL "
               "WHERE trace_id IN {ids:Array(String)}")  # fmt: skip
        _, rows = await self.store.aquery(sql, {"ids": list(trace_ids)})
        stored: dict[str, list[tuple[Span, bool]]] = {}
        for row in rows:
            span, _offset = span_from_row(tuple(row[:-1]))
            stored.setdefault(span.trace_id, []).append((span, bool(row[-1])))
        return stored

    # ---- writes -----------------------------------------------------------------------------
    async def write_calls(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        await self.store.ainsert("judge_calls", rows, CALL_COLUMNS, dedup_token)

    async def write_verdicts(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        await self.store.ainsert("verdicts", rows, VERDICT_COLUMNS, dedup_token)

    async def write_backlog(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        await self.store.ainsert("judge_backlog", rows, BACKLOG_COLUMNS, dedup_token)

    async def write_rejudges(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        await self.store.ainsert("judge_rejudges", rows, REJUDGE_COLUMNS, dedup_token)

    async def write_alerts(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        await self.store.ainsert("judge_alerts", rows, ALERT_COLUMNS, dedup_token)

    # ---- reads ------------------------------------------------------------------------------
    async def existing_verdicts(self, keys: Iterable[VerdictKey]) -> dict[VerdictKey, str]:
        """Status of the stored verdict of each key that has one."""
        keys = set(keys)
        if not keys:
            return {}
        ids = sorted({k[0] for k in keys})
        _, rows = await self.store.aquery(
            f"SELECT trace_id, judge, rubric_hash, status FROM {self.db}.verdicts FINAL "
            "WHERE trace_id IN {ids:Array(String)}",
            {"ids": ids},
        )
        return {(r[0], r[1], r[2]): r[3] for r in rows if (r[0], r[1], r[2]) in keys}

    async def cached_results(self, input_hashes: Iterable[str]) -> dict[CacheKey, dict[str, Any]]:
        """Results of earlier ok calls with these inputs (the verdict cache)."""
        hashes = sorted(set(input_hashes))
        if not hashes:
            return {}
        _, rows = await self.store.aquery(
            f"SELECT rubric_hash, model, input_hash, any(result), any(model_reported) FROM {self.db}.judge_calls "
            "WHERE input_hash IN {h:Array(String)} AND status = 'ok' AND result != '' "
            "AND purpose IN ('live', 'backlog', 'backfill') GROUP BY rubric_hash, model, input_hash",
            {"h": hashes},
        )
        out = {}
        for rubric_hash, model, ih, result, reported in rows:
            doc = json.loads(result)
            doc["model_reported"] = reported
            out[(rubric_hash, model, ih)] = doc
        return out

    async def spend(self, partitions: Iterable[int], period: int) -> dict[int, dict[str, float]]:
        """USD spent per partition and judge in ``period`` (from the ledger)."""
        parts = sorted(set(partitions))
        if not parts:
            return {}
        _, rows = await self.store.aquery(
            f"SELECT kafka_partition, judge, sum(cost_usd) FROM {self.db}.judge_calls FINAL "
            "WHERE period = {period:Int64} AND kafka_partition IN {parts:Array(Int32)} "
            "GROUP BY kafka_partition, judge",
            {"period": period, "parts": parts},
        )
        out: dict[int, dict[str, float]] = {p: {} for p in parts}
        for p, judge, usd in rows:
            out[int(p)][str(judge)] = float(usd)
        return out

    async def pending_backlog(self, partitions: Iterable[int], limit: int) -> list[BacklogItem]:
        parts = sorted(set(partitions))
        if not parts:
            return []
        _, rows = await self.store.aquery(
            f"SELECT trace_id, judge, rubric_hash, envelope, kafka_partition, reason "
            f"FROM {self.db}.judge_backlog FINAL "
            "WHERE state = 'pending' AND kafka_partition IN {parts:Array(Int32)} "
            "ORDER BY deferred_at LIMIT {limit:UInt32}",
            {"parts": parts, "limit": limit},
        )
        return [BacklogItem(r[0], r[1], r[2], r[3].encode("utf-8") if isinstance(r[3], str) else r[3], int(r[4]), r[5]) for r in rows]

    async def backlog_size(self) -> int:
        _, rows = await self.store.aquery(
            f"SELECT count() FROM {self.db}.judge_backlog FINAL WHERE state = 'pending'"
        )
        return int(rows[0][0]) if rows else 0

    async def flake_stats(self) -> list[tuple[str, str, int, int]]:
        """(judge, rubric_hash, pairs, disagreements) of flake re-judges."""
        _, rows = await self.store.aquery(
            f"SELECT judge, rubric_hash, count(), countIf(agree = 0) FROM {self.db}.judge_rejudges FINAL "
            "GROUP BY judge, rubric_hash"
        )
        return [(str(j), str(h), int(n), int(d)) for j, h, n, d in rows]

    async def latest_baseline(self, judge: str, rubric_hash: str, tier: str, golden_hash: str) -> dict[str, Any] | None:
        """The agreement drift is measured against, for this judge version, tier and reference set:
        the newest calibration run on it, else the first drift run."""
        _, rows = await self.store.aquery(
            f"SELECT accuracy, kappa, n_scored, kind FROM {self.db}.judge_calibrations FINAL "
            "WHERE judge = {j:String} AND rubric_hash = {h:String} AND tier = {t:String} "
            "AND golden_hash = {g:String} ORDER BY kind = 'calibration' DESC, "
            "if(kind = 'calibration', -1, 1) * toUnixTimestamp64Milli(created_at) ASC LIMIT 1",
            {"j": judge, "h": rubric_hash, "t": tier, "g": golden_hash},
        )
        if not rows:
            return None
        acc, kappa, n, kind = rows[0]
        return {"accuracy": float(acc), "kappa": float(kappa), "n_scored": int(n), "kind": kind}
