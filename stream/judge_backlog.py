"""The judge backlog: traces whose judging was deferred (their partition's budget share exhausted,
a paused provider, a provider failure worth another try) are judged when the share is back to
normal.

:meth:`stream.judging.JudgeService.tick` calls :func:`drain_backlog` every
``backlog_drain_interval_s``. A backlog entry holds the to_judge envelope as it arrived; it takes
the to_judge path again (existing-verdict skip, verdict cache, budget, cascade) with purpose
``backlog`` on the ledger, and is marked done once judged, when a verdict already exists (an
entry whose verdict was written just before a crash, ahead of its done mark), or when it can no
longer be judged (its judge version is no longer configured, its envelope does not decode, its
referenced spans are missing).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from judges.budget import Level
from stream import judge_envelope
from stream.dlq import InMessage

if TYPE_CHECKING:
    from stream.judging import JudgeService


async def drain_backlog(service: JudgeService, limit: int | None = None) -> int:
    """Judge deferred traces of owned partitions whose budget share is back to normal."""
    ready = [p for p in service.owned if all(
        service.budget.level(p, name) == Level.NORMAL for name in service.runner.judges)]  # fmt: skip
    if not ready:
        return 0
    items = await service._retry(
        lambda: service.sink.pending_backlog(ready, limit or service.cfg.batch_max_messages), "read backlog")
    jobs, done, decoded = [], [], []
    now_ms = int(service.clock() * 1000)
    for it in items:
        tiers = service.runner.judges.get(it.judge)
        rubric = next(iter(tiers.values())).rubric if tiers else None
        try:
            trace, meta, ref = judge_envelope.decode_partial(it.envelope)
        except Exception:  # noqa: BLE001 - it decoded once; never block the backlog on it
            trace = None
        if rubric is None or rubric.rubric_hash != it.rubric_hash or trace is None:
            reason = "judge version no longer configured" if trace is not None else "undecodable"
            done.append((it.trace_id, it.judge, it.rubric_hash, "done", reason, "", it.partition, now_ms, now_ms))
            continue
        decoded.append(((it, rubric), trace, meta, ref))
    loaded, missing = await service.load_referenced(decoded)
    for (it, _rubric), reason in missing:
        done.append((it.trace_id, it.judge, it.rubric_hash, "done", reason, "", it.partition, now_ms, now_ms))
    for (it, rubric), trace, meta in loaded:
        msg = InMessage(service.topic, it.partition, -1, trace.trace_id.encode(), it.envelope)
        jobs.append((msg, trace, meta, rubric))
    judged_jobs = await service._judge_jobs(jobs, "backlog", f"backlog:{uuid.uuid4().hex}") if jobs else []
    judged, ran = 0, set()
    for (m, t, _meta, r, *_), o in judged_jobs:
        ran.add((t.trace_id, r.name, r.rubric_hash))
        if o.backlog_reason is None:
            judged += 1
            done.append((t.trace_id, r.name, r.rubric_hash, "done", "judged", "", m.partition, now_ms, now_ms))
    for m, t, _meta, r in jobs:  # left out: an ok or unscored verdict exists (written before a crash, or by a replay)
        if (t.trace_id, r.name, r.rubric_hash) not in ran:
            done.append((t.trace_id, r.name, r.rubric_hash, "done", "already judged", "", m.partition, now_ms, now_ms))
    if done:
        tok = f"backlog-done:{uuid.uuid4().hex}"  # once, outside the retried call: a retry must reuse it
        await service._retry(lambda: service.sink.write_backlog(done, tok), "mark backlog")
    service.counters["backlog_judged"] += judged
    return judged

