"""The judging runtime behind the ``judge`` agent on ``traces.to_judge``.

For each batch of to_judge messages (:meth:`JudgeService.handle_batch`: ``start_batch`` then
``finish_batch``):

1. decode each envelope (undecodable → ``traces.to_judge.dlq`` with the reason); an envelope whose
   spans are by reference (too large for a Kafka message, :mod:`stream.judge_envelope`) gets them
   from ClickHouse — one query per batch, retried like every read, none for full envelopes; if some
   referenced span is not stored (it should not happen: the worker produces to_judge only after its
   spans are stored) the envelope is dead-lettered (``spans_ref_not_found``), never judged partial;
2. skip every (trace, judge, rubric version) that already has a verdict row — a batch replayed after
   a crash is not judged (or paid) twice;
3. look the inputs up in the verdict cache (ok calls in the ledger, keyed by rubric hash, model and
   canonical input hash) — which also recovers answers paid for before a crash;
4. judge the rest concurrently (at most ``max_in_flight`` HTTP calls) through :class:`JudgeRunner`;
5. write ledger rows, backlog entries, flake pairs and alerts, and *then* the verdict rows; only
   after that does the batch return and Faust commit its offsets.

Budgets are shares per to_judge partition (:mod:`judges.budget`): on assignment the partition's spend
in the current period is read from the ledger, so a partition that moves to another worker keeps its
spend; no lock is shared between workers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from judges.budget import BudgetBook
from judges.build import MissingKeyProvider, build_judges, build_providers
from judges.config import JudgingConfig
from judges.flake import FlakeTracker
from judges.prompt import extract_values, input_hash
from judges.providers.base import Provider
from schemas.model import Trace
from stream import judge_envelope
from stream.calibrate_cli import latest_calibrations, monitoring_only
from stream.delivery import DeliveryCounts, deliver
from stream.dlq import InMessage, OutRecord, dead_letter
from stream.judge_backlog import drain_backlog
from stream.judge_drift import check_drift
from stream.judge_rows import CallContext, VerdictRecord, verdict_row
from stream.judge_runner import JudgeRunner, Outcome
from stream.judge_sink import JudgeSink
from stream.provenance import message_token, token
from stream.retry import retry_forever

log = logging.getLogger(__name__)

#: to_judge messages decoded before their calls are started (see ``JudgeService.start_batch``)
LAUNCH_CHUNK = 32


class StartedBatch(NamedTuple):
    """A batch whose calls are out: (message, trace, meta, judge, values, input hash) per job, the
    call tasks, and the batch's write token."""

    todo: list[tuple[Any, ...]]
    tasks: list[asyncio.Future[Outcome]]
    tok: str


def _cancel(tasks: Iterable[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()


class JudgeService:
    def __init__(
        self,
        cfg: JudgingConfig,
        sink: JudgeSink,
        send: Callable[[Sequence[OutRecord]], Awaitable[None]],
        *,
        topic: str,
        dlq_topic: str,
        partitions_total: int,
        providers: Mapping[str, Provider] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        on_verdicts: Callable[[Sequence[tuple[VerdictRecord, Trace]]], Awaitable[None]] | None = None,
    ) -> None:
        self.cfg = cfg
        #: called after verdict rows are stored (e.g. to emit gen_ai.evaluation.result events);
        #: an exception there is logged, never lets the batch fail
        self.on_verdicts = on_verdicts
        self.sink = sink
        self.send = send
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.clock = clock
        self.sleep = sleep
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.providers = dict(providers) if providers is not None else build_providers(cfg)
        self.budget = BudgetBook(cfg.budget, partitions_total, clock)
        self.flake = FlakeTracker(cfg.flake)
        # a paid call's ledger row is queued the moment the call returns and written by the next
        # flush (``ledger_flush_s`` timer, tick, or the batch's own write), not when its whole batch
        # is done: a crash while other calls of the batch are still in flight must not lose it
        self.runner = JudgeRunner(cfg, build_judges(cfg, self.providers), self.budget, self.flake, clock=clock,
                                  on_call=self._queue_call)  # fmt: skip
        self.owned: set[int] = set()
        self._pending_calls: list[tuple[Any, ...]] = []
        self._flush_lock = asyncio.Lock()  # flush_calls returns only when every row queued before it is stored
        self._flush_seq = 0
        self._last_drain = 0.0
        self._last_drift = 0.0
        self._started = False
        self._start_lock = asyncio.Lock()
        self.counters: dict[str, int] = {
            "messages": 0, "dead_lettered": 0, "verdicts": 0, "replay_skipped": 0, "backlog_added": 0,
            "backlog_judged": 0, "write_retries": 0, "alerts": 0, "assignments": 0, "spans_by_reference": 0,
            "spans_ref_not_found": 0, "dead_letter_values_omitted": 0, "send_refused": 0,
        }  # fmt: skip
        for provider in self.providers.values():
            if isinstance(provider, MissingKeyProvider):
                self.runner.pause(provider.name, provider.message)
                self.runner.paused[provider.name].until = float("inf")

    # ---- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Load trust state: flake pairs (quarantine) and calibrations (monitoring_only, tier
        disagreement). Runs once, before the first batch is judged."""
        async with self._start_lock:
            if not self._started:
                await self._load_trust_state()
                self._started = True

    async def _load_trust_state(self) -> None:
        for judge, h, pairs, disagreements in await self._retry(self.sink.flake_stats, "load flake stats"):
            self.flake.load(judge, h, pairs, disagreements)
        store = self.sink.store
        calibrations = await self._retry(lambda: store.run(latest_calibrations, store), "load calibrations")
        for name, tiers in self.runner.judges.items():
            rubric = next(iter(tiers.values())).rubric
            if monitoring_only(self.cfg, name, rubric.rubric_hash, calibrations):
                self.runner.monitoring_only.add((name, rubric.rubric_hash))
                log.warning("judge %s (%s) is below its calibration floor: monitoring_only", name, rubric.rubric_hash[:12])
            disagreement = [c for (j, h, _t), c in calibrations.items() if j == name and h == rubric.rubric_hash]
            if any((getattr(c, "tier_disagreement", None) or 0.0) > self.cfg.calibration.max_tier_disagreement
                   for c in disagreement):  # fmt: skip
                self.runner.tiers_disagree.add((name, rubric.rubric_hash))

    async def aclose(self) -> None:
        """Close the providers' connection pools (the worker does it once its agents have stopped)."""
        for provider in self.providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()

    async def on_assigned(self, partitions: Iterable[int]) -> None:
        self.counters["assignments"] += 1
        new = set(partitions) - self.owned
        if not new:
            return
        period = self.budget.period()
        spend = await self._retry(lambda: self.sink.spend(new, period), "load judge spend")
        for p in new:
            self.budget.load(p, spend.get(p, {}), period)
        self.owned |= new
        log.info("judging partitions %s; spend this period: %s", sorted(new),
                 {p: round(sum(s.values()), 6) for p, s in spend.items()})  # fmt: skip

    async def on_revoked(self, partitions: Iterable[int]) -> None:
        await self.flush_calls()
        for p in set(partitions) & self.owned:
            self.budget.drop(p)
            self.owned.discard(p)

    # ---- batches ----------------------------------------------------------------------------
    async def handle_batch(self, msgs: Sequence[InMessage]) -> None:
        await self.finish_batch(await self.start_batch(msgs))

    async def start_batch(self, msgs: Sequence[InMessage]) -> StartedBatch:
        """Steps 1-4 up to the calls going out; :meth:`finish_batch` awaits them and writes (step 5).
        The ``judge`` agent starts the next batch while one finishes (:class:`stream.batch_chain.BatchChain`):
        a message that arrives during a batch's calls no longer waits for them to end. Overlapping
        batches share ``max_in_flight`` and the budget; a trace in both (a duplicate to_judge
        message) may be judged twice, its verdict row written twice with the same key."""
        await self.start()
        self.counters["messages"] += len(msgs)
        todo: list[tuple[Any, ...]] = []
        tasks: list[asyncio.Future[Outcome]] = []
        try:
            # chunk by chunk, so the calls of a chunk are in flight while the next one is decoded
            # (decoding and prompt extraction are most of the stage's CPU: without this, no call of
            # a batch started before the whole batch was decoded, and the loop idled at its end)
            for i in range(0, len(msgs), LAUNCH_CHUNK):
                chunk = msgs[i : i + LAUNCH_CHUNK]
                items = await self._decode(chunk)
                jobs = [(m, t, meta, r) for m, t, meta in items for r in self.runner.applicable(t, meta)]
                await self._start_jobs(jobs, "live", todo, tasks)
                await asyncio.sleep(0)  # let the calls just started go out before the next chunk
        except BaseException:
            _cancel(tasks)
            raise
        return StartedBatch(todo, tasks, message_token("j", msgs))

    async def finish_batch(self, started: StartedBatch) -> None:
        try:
            await self._finish_jobs(started.todo, started.tasks, started.tok)
        except BaseException:
            _cancel(started.tasks)
            raise

    async def _decode(self, msgs: Sequence[InMessage]) -> list[tuple[InMessage, Trace, dict[str, Any]]]:
        """Decoded (message, trace, meta); undecodable ones and those whose referenced spans are
        missing are dead-lettered."""
        decoded, dlq = [], []
        for m in msgs:
            try:
                if m.value is None:
                    raise ValueError("empty message")
                trace, meta, ref = judge_envelope.decode_partial(m.value)
            except Exception as exc:  # noqa: BLE001 - any undecodable message is dead-lettered
                dlq.append(dead_letter(m, self.dlq_topic, "undecodable_to_judge", f"{type(exc).__name__}: {exc}"))
                continue
            decoded.append((m, trace, meta, ref))
        items, missing = await self.load_referenced(decoded)
        for m, reason in missing:
            log.error("to_judge %s/%d@%d: %s: dead-lettered", m.topic, m.partition, m.offset, reason)
            dlq.append(dead_letter(m, self.dlq_topic, "spans_ref_not_found", reason))
        if dlq:
            counts = DeliveryCounts()
            await deliver(self.send, dlq, self._retry, "dead-letter to_judge", counts)
            self.counters["dead_letter_values_omitted"] += counts.values_omitted
            self.counters["send_refused"] += counts.refused
            self.counters["dead_lettered"] += len(dlq)
        return items

    async def _judge_jobs(self, jobs: list[tuple[Any, ...]], purpose: str,
                          tok: str) -> list[tuple[tuple[Any, ...], Outcome]]:  # fmt: skip
        """(job, outcome) of each job judged; a job left out had a verdict already (skipped)."""
        todo: list[tuple[Any, ...]] = []
        tasks: list[asyncio.Future[Outcome]] = []
        try:
            await self._start_jobs(jobs, purpose, todo, tasks)
            return list(zip(todo, await self._finish_jobs(todo, tasks, tok), strict=True))
        except BaseException:
            _cancel(tasks)
            raise

    async def _start_jobs(self, jobs: list[tuple[Any, ...]], purpose: str, todo: list[tuple[Any, ...]],
                          tasks: list[asyncio.Future[Outcome]]) -> None:  # fmt: skip
        """Skip jobs that already have a verdict, extract the prompt values, look them up in the
        verdict cache and start judging the rest (appended to ``todo`` and ``tasks``)."""
        if not jobs:
            return
        existing = await self._retry(
            lambda: self.sink.existing_verdicts((t.trace_id, r.name, r.rubric_hash) for _, t, _, r in jobs),
            "read verdicts")  # fmt: skip
        new = []
        for m, t, meta, r in jobs:
            status = existing.get((t.trace_id, r.name, r.rubric_hash))
            if status is not None and (purpose == "live" or status in ("ok", "unscored")):
                self.counters["replay_skipped"] += 1
                continue
            values = extract_values(r, t, meta, self.cfg.max_value_chars)
            new.append((m, t, meta, r, values, input_hash(values)))
        cached = {}
        if self.cfg.cache and new:
            cached = await self._retry(lambda: self.sink.cached_results(ih for *_, ih in new), "read verdict cache")
        worker_run = self.runner.worker_run
        for m, t, meta, r, values, ih in new:
            ctx = CallContext(purpose, m.partition, m.offset, worker_run)
            tasks.append(asyncio.ensure_future(self.runner.run(t, meta, r, ctx, cached, values, ih)))
        todo.extend(new)

    async def _finish_jobs(self, todo: list[tuple[Any, ...]], tasks: list[asyncio.Future[Outcome]],
                           tok: str) -> list[Outcome]:  # fmt: skip
        outcomes = await asyncio.gather(*tasks)
        await self._write(todo, outcomes, tok)
        return list(outcomes)

    async def _write(self, todo: list[tuple[Any, ...]], outcomes: Sequence[Outcome], tok: str) -> None:
        now_ms = int(self.clock() * 1000)
        await self.flush_calls()  # every call of these outcomes was queued when it returned
        backlog, rejudges, alerts, verdicts = [], [], [], []
        for (m, t, meta, r, _values, _ih), o in zip(todo, outcomes, strict=True):
            v = o.record.verdict
            if o.backlog_reason:
                envelope = m.value.decode("utf-8") if isinstance(m.value, bytes) else m.value
                backlog.append((v.trace_id, v.judge, v.rubric_hash, "pending", o.backlog_reason, envelope,
                                m.partition, now_ms, now_ms))  # fmt: skip
            if o.rejudge:
                model, a, b = o.rejudge
                rejudges.append((v.trace_id, v.judge, v.rubric_hash, model, a, b, 1 if a == b else 0, now_ms))
            for kind, message, details in o.alerts:
                alerts.append((uuid.uuid4().hex, kind, v.judge, v.rubric_hash, "firing", message, details or "{}", now_ms))
            verdicts.append(verdict_row(o.record, t, meta, _ctx_of(m), now_ms))
        if backlog:
            # the token names the rows too: a replay of the batch whose outcomes differ (a call that
            # failed the first time succeeds, another fails) must not be dropped as a repeat of it
            btok = token(tok + ":backlog", (f"{r[0]}/{r[1]}/{r[2]}/{r[4]}" for r in backlog))
            await self._retry(lambda: self.sink.write_backlog(backlog, btok), "write backlog")
            self.counters["backlog_added"] += len(backlog)
        if rejudges:
            rtok = token(tok + ":rejudges", (f"{r[0]}/{r[1]}/{r[2]}/{r[4]}/{r[5]}" for r in rejudges))
            await self._retry(lambda: self.sink.write_rejudges(rejudges, rtok), "write flake pairs")
        if alerts:
            await self._retry(lambda: self.sink.write_alerts(alerts, tok + ":alerts"), "write alerts")
            self.counters["alerts"] += len(alerts)
        if verdicts:
            await self._retry(lambda: self.sink.write_verdicts(verdicts, tok + ":verdicts"), "write verdicts")
            self.counters["verdicts"] += len(verdicts)
            if self.on_verdicts is not None:
                try:
                    await self.on_verdicts([(o.record, t) for (_m, t, *_), o in zip(todo, outcomes, strict=True)])
                except Exception:  # noqa: BLE001 - listeners are best effort; the verdicts are stored
                    log.exception("verdict listener failed")

    def _queue_call(self, row: tuple[Any, ...]) -> None:
        self._pending_calls.append(row)

    async def flush_calls(self) -> None:
        """Write buffered ledger rows (also on a short timer, so a paid call is on record quickly).
        Serialized: when it returns, every row queued before the call is stored, including rows a
        concurrent flush (the timer's) took first — verdicts are never written ahead of their calls."""
        async with self._flush_lock:
            if not self._pending_calls:
                return
            rows, self._pending_calls = self._pending_calls, []
            self._flush_seq += 1
            tok = f"calls:{self.runner.worker_run}:{self._flush_seq}"
            await self._retry(lambda: self.sink.write_calls(rows, tok), "write judge ledger")

    # ---- periodic work ----------------------------------------------------------------------
    async def tick(self) -> None:
        await self.flush_calls()
        now = self.clock()
        if now - self._last_drain >= self.cfg.backlog_drain_interval_s:
            self._last_drain = now
            await self.drain_backlog()
        if self.cfg.drift.reference_sets and 0 in self.owned and now - self._last_drift >= self.cfg.drift.interval_s:
            self._last_drift = now  # one worker (the owner of partition 0) runs the schedule
            await self.check_drift()

    async def check_drift(self) -> list[str]:
        """Re-run each judge's frozen reference set (:func:`stream.judge_drift.check_drift`)."""
        return await check_drift(self)

    async def drain_backlog(self, limit: int | None = None) -> int:
        """Judge deferred traces of owned partitions whose budget share is back to normal
        (:func:`stream.judge_backlog.drain_backlog`)."""
        return await drain_backlog(self, limit)

    async def judge_stored(self, items: Sequence[tuple[Trace, Mapping[str, Any], Any]], purpose: str = "backfill") -> list[Outcome]:
        """Judge traces rebuilt from ClickHouse rather than read from Kafka (``stream.backfill``):
        each (trace, meta, rubric) takes the to_judge path — existing-verdict skip, verdict cache,
        budget, cascade — with ``purpose`` on the ledger. The jobs carry no Kafka partition or
        offset (-1), so the budget book the caller gave this service must accept partition -1."""
        await self.start()
        jobs = [(InMessage(self.topic, -1, -1, t.trace_id.encode(), judge_envelope.encode(t, dict(meta))), t, meta, r)
                for t, meta, r in items]  # fmt: skip
        judged = await self._judge_jobs(jobs, purpose, f"{purpose}:{uuid.uuid4().hex}") if jobs else []
        return [o for _job, o in judged]

    async def load_referenced(
        self, decoded: Sequence[tuple[Any, Trace, dict[str, Any], judge_envelope.SpansRef | None]]
    ) -> tuple[list[tuple[Any, Trace, dict[str, Any]]], list[tuple[Any, str]]]:
        """:func:`stream.judge_envelope.attach_referenced` with the spans of the by-reference
        envelopes: one ClickHouse query for the batch, only when some envelope is by reference."""
        ids = sorted({t.trace_id for _, t, _, ref in decoded if ref is not None})
        if not ids:
            return [(x, t, meta) for x, t, meta, _ in decoded], []
        stored = await self._retry(lambda: self.sink.load_spans(ids), "load referenced spans")
        ok, missing = judge_envelope.attach_referenced(decoded, stored)
        self.counters["spans_ref_not_found"] += len(missing)
        self.counters["spans_by_reference"] += sum(ref is not None for *_, ref in decoded) - len(missing)
        return ok, missing

    def status(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "runner": dict(self.runner.stats),
            "budget": self.budget.snapshot(),
            "paused": {p: x.message for p, x in self.runner.paused.items() if x.until > self.clock()},
            "monitoring_only": sorted(j for j, _ in self.runner.monitoring_only),
            "owned_partitions": sorted(self.owned),
        }

    async def _retry(self, op: Callable[[], Awaitable[Any]], what: str) -> Any:
        def count() -> None:
            self.counters["write_retries"] += 1

        return await retry_forever(op, what, sleep=self.sleep, initial=self.retry_initial,
                                   maximum=self.retry_max, on_retry=count)  # fmt: skip


def _ctx_of(m: InMessage) -> CallContext:
    return CallContext("live" if m.offset >= 0 else "backlog", m.partition, m.offset)

