"""``tracejudge backfill``: re-judge stored traces with one judge's current rubric version (for
example after a rubric change: a new rubric hash is a new judge version, judged next to the old one,
whose verdicts stay).

Which traces: the ``traces`` rows (FINAL) that were sampled (``sampled = 1``, ``inclusion_p > 0``,
so estimates over the verdicts stay unbiased) and completed in ``[since, until)``, that the rubric
applies to, oldest first. Each is rebuilt from ClickHouse exactly as the worker would have sent it
on ``traces.to_judge`` (:mod:`stream.stored_traces`): spans from ``spans`` FINAL (``span_from_row``,
re-normalized; late spans excluded, as from the assembled trace), the decision from the trace row
(``sample_class``, ``sample_rule``, ``sample_stratum``, ``inclusion_p``, ``policy_version``), the
failed gates with evidence from ``gate_results`` (in ``failed_gates`` order) and the signals from
``signals``. The judging itself is :meth:`stream.judging.JudgeService.judge_stored`: the same
existing-verdict check, verdict cache, budget ladder and cascade as live judging, with purpose
``backfill`` on the ledger and on the verdict rows.

Resumable, never paying twice: progress is what is stored. A trace whose (trace, judge, rubric
hash) already has an ``ok`` or ``unscored`` verdict is not selected, so a re-run after Ctrl-C, a
crash or ``--limit`` continues where the last one stopped (``error`` and ``budget_skipped``
placeholders are judged again). A call paid just before a crash, whose verdict row was never
written, is on the ledger and reused from the verdict cache (this module's sink also reads
``backfill`` calls as cache entries). As live, at most the calls in flight at a crash can be lost.

Budget (documented choice): the backfill has no Kafka partition, so it has no share of its own.
Before every chunk it loads this period's spend from the ledger over ALL partitions and purposes
(live, backlog, flake, drift, calibration, other backfills) and may only spend up to
``(1 - reserve)`` of the global and of the judge's budget, minus that spend; ``reserve`` (default
0.5) is kept for live traffic. Its calls are reserved and settled like live ones (an estimate must
fit before a call is made) and carry ``kafka_partition = -1`` on the ledger, so no live partition's
share is charged. Live partitions do not see backfill spend, so if live traffic later spends its
full shares in the same period, the period's total can exceed the global budget by at most what
the backfill spent: pick ``reserve`` at least the share live traffic is expected to use, or run
backfills right after a period starts. A chunk holds only the traces whose first-tier upper cost
estimates fit what is left, so calls are not refused mid-chunk; when not even one more fits, the run
stops (re-run later, e.g. next period). Should a call still be refused (an escalation used the
room), that trace gets a ``budget_skipped`` placeholder, judged again on the re-run; deferrals are
never written to ``judge_backlog`` (no live partition would drain them).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from judges.budget import BudgetBook, Level, Reservation
from judges.config import BudgetSpec, JudgingConfig
from judges.prompt import extract_values
from judges.providers.base import Provider
from schemas.model import Trace
from stream.dlq import OutRecord
from stream.judge_rows import VERDICT_COLUMNS
from stream.judge_sink import JudgeSink
from stream.judging import JudgeService
from stream.store import ClickHouseStore
from stream.stored_traces import TRACE_ROW_SELECT, load_traces

log = logging.getLogger(__name__)

PURPOSE = "backfill"
DEFAULT_RESERVE = 0.5
_PURPOSE_COL = VERDICT_COLUMNS.index("purpose")
_DONE = "('ok', 'unscored')"


class BackfillError(ValueError):
    """The backfill cannot run as asked (unknown judge, paused provider, bad window)."""


@dataclass
class BackfillResult:
    judge: str
    rubric_hash: str
    total: int  # sampled traces completed in the window
    already: int  # of those, with an ok / unscored verdict of this version before the run
    judged: int = 0  # ok / unscored verdicts written by this run (cache hits included)
    cache_hits: int = 0
    errors: int = 0  # error verdicts: judged again by the next run
    budget_skipped: int = 0
    not_applicable: int = 0  # the rubric's applies_to does not match
    missing_spans: int = 0  # trace row without stored spans
    cost_usd: float = 0.0
    stopped: str | None = None  # None (all done) | limit | budget | paused

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.already - self.judged - self.not_applicable - self.missing_spans)


class BackfillSink(JudgeSink):
    """The judging sink of a backfill: verdict rows say ``purpose = backfill``; deferrals are not written to ``judge_backlog`` (a re-run picks
    them up instead)."""

    async def write_verdicts(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        rows = [(*r[:_PURPOSE_COL], PURPOSE, *r[_PURPOSE_COL + 1 :]) for r in rows]
        await super().write_verdicts(rows, dedup_token)

    async def write_backlog(self, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
        if rows:
            log.info("backfill: %d trace(s) deferred (budget / paused / transient); a re-run judges them", len(rows))


class BackfillBudget(BudgetBook):
    """One share (``partitions_total = 1``) for the whole run; the run's calls carry partition -1."""

    def level(self, partition: int, judge: str) -> Level:
        return super().level(0, judge)

    def try_reserve(self, partition: int, judge: str, estimate_usd: float) -> Reservation | None:
        return super().try_reserve(0, judge, estimate_usd)


def backfill_budget(spec: BudgetSpec, reserve: float) -> BudgetSpec:
    """The limits a backfill may fill (with everything else spent this period): ``1 - reserve`` of each."""
    if not 0.0 <= reserve <= 1.0:
        raise BackfillError(f"reserve must be in [0, 1], got {reserve}")
    keep = 1.0 - reserve
    return spec.model_copy(update={
        "global_usd": None if spec.global_usd is None else spec.global_usd * keep,
        "per_judge_usd": {j: v * keep for j, v in spec.per_judge_usd.items()},
    })  # fmt: skip


async def _no_dead_letters(records: Sequence[OutRecord]) -> None:
    raise RuntimeError("a backfill has no to_judge messages to dead-letter")


class Backfill:
    def __init__(self, store: ClickHouseStore, cfg: JudgingConfig, judge: str, *, reserve: float = DEFAULT_RESERVE,
                 providers: Mapping[str, Provider] | None = None, clock: Callable[[], float] = time.time,
                 topic: str = "traces.to_judge", page_size: int = 200, chunk_size: int | None = None) -> None:  # fmt: skip
        rubrics = cfg.rubrics()
        if judge not in rubrics:
            raise BackfillError(f"judge {judge!r} is not configured; configured: {sorted(rubrics)}")
        self.store = store
        self.db = store.database
        self.cfg = cfg.model_copy(update={"budget": backfill_budget(cfg.budget, reserve)})
        self.judge = judge
        self.clock = clock
        self.page_size = page_size
        self.chunk_size = chunk_size or max(8, 2 * cfg.max_in_flight)
        self.service = JudgeService(self.cfg, BackfillSink(store), _no_dead_letters, topic=topic, dlq_topic="",
                                    partitions_total=1, providers=providers, clock=clock)  # fmt: skip
        self.book = BackfillBudget(self.cfg.budget, 1, clock)
        self.service.budget = self.service.runner.budget = self.book
        tiers = self.service.runner.judges[judge]
        self.first = next(iter(tiers.values()))
        self.rubric = self.first.rubric

    async def aclose(self) -> None:
        await self.service.aclose()

    # ---- what is left ---------------------------------------------------------------------------
    def _window(self) -> str:
        return (f"FROM {self.db}.traces FINAL WHERE completed_at >= fromUnixTimestamp64Milli({{since:Int64}}) "
                "AND completed_at < fromUnixTimestamp64Milli({until:Int64}) AND sampled = 1 AND inclusion_p > 0")  # fmt: skip

    def _done(self, negate: bool = False) -> str:
        return (f"trace_id {'NOT IN' if negate else 'IN'} (SELECT trace_id FROM {self.db}.verdicts FINAL WHERE judge = {{judge:String}} "
                f"AND rubric_hash = {{h:String}} AND status IN {_DONE})")  # fmt: skip

    def _params(self, since_ms: int, until_ms: int) -> dict[str, Any]:
        return {"since": since_ms, "until": until_ms, "judge": self.judge, "h": self.rubric.rubric_hash}

    async def count(self, since_ms: int, until_ms: int) -> tuple[int, int]:
        """(sampled traces in the window, of which already judged by this rubric version)."""
        _, rows = await self.store.aquery(f"SELECT count(), countIf({self._done()}) {self._window()}",
                                          self._params(since_ms, until_ms))  # fmt: skip
        return int(rows[0][0]), int(rows[0][1])

    async def _page(self, since_ms: int, until_ms: int, after: tuple[int, str]) -> list[tuple[Any, ...]]:
        _, rows = await self.store.aquery(
            f"SELECT {TRACE_ROW_SELECT} {self._window()} AND {self._done(negate=True)} "
            "AND (c, trace_id) > ({ac:Int64}, {at:String}) ORDER BY c, trace_id LIMIT {n:UInt32}",
            {**self._params(since_ms, until_ms), "ac": after[0], "at": after[1], "n": self.page_size})  # fmt: skip
        return rows

    # ---- rebuilding what the worker sent ----------------------------------------------------------
    async def load(self, trace_rows: Sequence[tuple[Any, ...]]) -> list[tuple[Trace, dict[str, Any]]]:
        """Traces and to_judge meta rebuilt from ClickHouse (traces without stored spans are left out)."""
        return await self.store.run(load_traces, self.store, trace_rows)

    # ---- the run ------------------------------------------------------------------------------------
    async def refresh_budget(self) -> float:
        """Load this period's spend over all partitions and purposes from the ledger into the book;
        return the USD this run may still commit (``inf`` without a limit)."""
        period = self.book.period()
        _, rows = await self.store.aquery(
            f"SELECT judge, sum(cost_usd) FROM {self.db}.judge_calls FINAL WHERE period = {{p:Int64}} GROUP BY judge",
            {"p": period})  # fmt: skip
        self.book.load(0, {str(j): max(0.0, float(v)) for j, v in rows}, period)
        rooms = [share - self.book.spent(0, scope) for scope in (None, self.judge)
                 if (share := self.book.share(scope)) is not None]  # fmt: skip
        return min(rooms, default=math.inf)

    def fitting(self, chunk: Sequence[tuple[Trace, Any, Any]], room: float) -> list[tuple[Trace, Any, Any]]:
        """The leading items whose first-tier upper cost estimates fit in ``room`` together, so the
        budget refuses no first call (no ``budget_skipped`` placeholders in the normal case)."""
        out: list[tuple[Trace, Any, Any]] = []
        used = 0.0
        for item in chunk:
            estimate = self.first.estimate_usd(extract_values(self.rubric, item[0], item[1], self.cfg.max_value_chars))
            if room <= 0 or used + estimate > room:
                break
            used += estimate
            out.append(item)
        return out

    async def run(self, since_ms: int, until_ms: int | None = None, *, limit: int | None = None,
                  progress: Callable[[int, BackfillResult], None] | None = None,
                  on_start: Callable[[BackfillResult], None] | None = None) -> BackfillResult:  # fmt: skip
        """Judge what is left in ``[since, until)`` (``until`` default: now), at most ``limit`` traces.
        ``on_start`` gets the result with ``total`` / ``already`` filled; ``progress(n, result)``
        is called after every chunk with the traces it finished."""
        pause = self.service.runner.paused.get(self.first.provider.name)
        if pause is not None and pause.until > self.clock():
            raise BackfillError(f"provider {self.first.provider.name!r} of judge {self.judge!r} is unusable: {pause.message}")
        until_ms = int(self.clock() * 1000) if until_ms is None else until_ms
        if until_ms <= since_ms:
            raise BackfillError("until must be after since")
        total, already = await self.count(since_ms, until_ms)
        res = BackfillResult(self.judge, self.rubric.rubric_hash, total, already)
        if on_start is not None:
            on_start(res)
        after: tuple[int, str] = (-1, "")
        sent = 0
        while res.stopped is None:
            rows = await self._page(since_ms, until_ms, after)
            if not rows:
                break
            after = (int(rows[-1][1]), str(rows[-1][0]))
            loaded = await self.load(rows)
            res.missing_spans += len(rows) - len(loaded)
            items = []
            for trace, meta in loaded:
                if self.first.applies(trace, meta):
                    items.append((trace, meta, self.rubric))
                else:
                    res.not_applicable += 1
            if progress is not None and len(rows) > len(items):
                progress(len(rows) - len(items), res)
            while items and res.stopped is None:
                if limit is not None and sent >= limit:
                    res.stopped = "limit"
                    break
                chunk = items[: min(self.chunk_size, len(items) if limit is None else limit - sent)]
                judge_now = self.fitting(chunk, await self.refresh_budget())
                if not judge_now:  # not even one more call fits what this period has left
                    res.stopped = "budget"
                    break
                items = items[len(judge_now) :]
                sent += len(judge_now)
                self._tally(res, await self.service.judge_stored(judge_now, PURPOSE), len(judge_now))
                if progress is not None:
                    progress(len(judge_now), res)
            if limit is not None and sent >= limit and res.stopped is None and res.remaining > 0:
                res.stopped = "limit"
        return res

    def _tally(self, res: BackfillResult, outcomes: Sequence[Any], n_items: int) -> None:
        res.judged += n_items - len(outcomes)  # skipped: judged meanwhile (another run)
        for o in outcomes:
            r = o.record
            v = r.verdict
            res.cost_usd = math.fsum((res.cost_usd, r.cost_usd))
            if v.status in ("ok", "unscored"):
                res.judged += 1
                res.cache_hits += int(r.cache_hit)
            elif v.status == "budget_skipped":
                res.budget_skipped += 1
                res.stopped = res.stopped or "budget"
            else:
                res.errors += 1
                if v.status_reason.startswith(("judge_paused", "provider_config")):
                    res.stopped = "paused"
