"""Fault: ambiguous inserts — ClickHouse stored the block, the client never heard (fault matrix #7).

Guarantee: the pipeline retries the insert with the *same* deduplication token, so ClickHouse drops
the retried block before it becomes a part: no physical duplicate, not only none under ``FINAL``.

Staged two ways (``tests/reliability/server_mode.py``): at the clickhouse-connect client of the
embedded store (``stream/faults.py``: with ``{"ambiguous_inserts": N}`` in the control file the next
N inserts are executed for real and then raise a connection-reset ``OperationalError``), and with
the store server behind a TCP proxy that forwards N insert requests, lets the server answer, and
resets the worker's connection instead of relaying the answer. Physical duplicates are counted without ``FINAL`` (raw rows vs distinct
keys); since a background merge could hide one, ClickHouse's own ``DuplicatedInsertedBlocks``
counter (blocks it dropped by token) must also account for every injected fault.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from stream.faults import write_faults
from stream.store import ClickHouseStore
from tests.factories import genai_trace, proto
from tests.reliability.server_mode import MODES, Faults, faults_for
from tests.reliability.support import SIZES, pick
from tests.stream.conftest import Deployment, wait_for

DB = "tracejudge"
SPAN_COLS = ["trace_id", "span_id", "start_time", "end_time", "ingested_at"]
SPAN_ROW = ["a" * 32, "b" * 16, 1_700_000_000_000_000_000, 1_700_000_000_100_000_000, 1_700_000_000_000]

# table -> its ReplacingMergeTree key: raw rows must equal distinct keys
KEYS = {"spans": "trace_id, span_id", "traces": "trace_id", "gate_results": "trace_id, gate",
        "signals": "trace_id, source, type, rule, signal_key"}  # fmt: skip


def _faulty(chdb_dsn: str, database: str, faults: Path) -> ClickHouseStore:
    return ClickHouseStore(chdb_dsn, database=database, faults_file=faults)


def test_ambiguous_insert_stores_then_raises_and_same_token_retry_is_dropped(
    store: ClickHouseStore, chdb_dsn: str, tmp_path: Path
) -> None:
    """The fault layer itself, on real chDB: the data is stored although the call fails; a retry
    with the same token adds nothing; a retry with a new token would (the check can fail)."""
    faults = tmp_path / "faults.json"
    s = _faulty(chdb_dsn, store.database, faults)
    try:
        # the same row under several tokens: a background merge of `spans` (ReplacingMergeTree) would
        # collapse those stored twice and hide what the raw counts below are about
        s.command(f"SYSTEM STOP MERGES {s.database}.spans")
        write_faults(faults, ambiguous_inserts=1)
        with pytest.raises(OperationalError, match="Connection reset"):
            s.insert("spans", [SPAN_ROW], SPAN_COLS, dedup_token="spans:t1")
        raw = lambda: s.query(f"SELECT count() FROM {s.database}.spans")[1][0][0]  # noqa: E731
        assert raw() == 1  # stored although the client "never heard"
        s.insert("spans", [SPAN_ROW], SPAN_COLS, dedup_token="spans:t1")  # the retry: countdown is over
        assert raw() == 1
        s.insert("spans", [SPAN_ROW], SPAN_COLS, dedup_token="spans:t2")  # a retry that rebuilt its token
        assert raw() == 2
        assert s.fault_counts() == {"down_errors": 0, "ambiguous_inserts": 1}
        write_faults(faults, ambiguous_inserts=2)  # a new write of the file arms a new count
        for tok in ("x1", "x2"):
            with pytest.raises(OperationalError):
                s.insert("spans", [SPAN_ROW], SPAN_COLS, dedup_token=tok)
        s.insert("spans", [SPAN_ROW], SPAN_COLS, dedup_token="x3")
        assert s.fault_counts()["ambiguous_inserts"] == 3 and raw() == 5
    finally:
        s.close()


def test_down_refuses_every_call_without_touching_the_engine(
    store: ClickHouseStore, chdb_dsn: str, tmp_path: Path
) -> None:
    faults = tmp_path / "faults.json"
    s = _faulty(chdb_dsn, store.database, faults)
    try:
        assert s.query("SELECT 1")[1] == [(1,)]  # no file: pass through
        write_faults(faults, clickhouse="down")
        for call in (lambda: s.query("SELECT 1"), lambda: s.command("SELECT 1"),
                     lambda: s.insert("spans", [SPAN_ROW], SPAN_COLS, dedup_token="d1")):  # fmt: skip
            with pytest.raises(OperationalError, match="Connection refused"):
                call()
        assert s._client.ping() is False  # noqa: SLF001
        faults.write_text("{not json")  # a half-written file keeps the previous state
        with pytest.raises(OperationalError):
            s.query("SELECT 1")
        write_faults(faults, clickhouse="up")
        assert s.query(f"SELECT count() FROM {s.database}.spans")[1] == [(0,)]  # the refused insert never ran
        write_faults(faults, clickhouse="down")
        faults.unlink()
        assert s.query("SELECT 1")[1] == [(1,)]
        assert s.fault_counts() == {"down_errors": 4, "ambiguous_inserts": 0}
    finally:
        s.close()


def count(worker: Any, sql: str) -> int:
    return int(worker.sql(sql)[0][0])


DEDUP_EVENTS = "SELECT value FROM system.events WHERE event = 'DuplicatedInsertedBlocks'"


def dedup_blocks(worker: Any) -> int:
    rows = worker.sql(DEDUP_EVENTS)
    return int(rows[0][0]) if rows else 0


def counter_per_dropped_insert(store: ClickHouseStore) -> int:
    """How much ``DuplicatedInsertedBlocks`` grows per insert dropped by its token, measured on the
    same engine version in this process (ClickHouse 26.9 counts such an insert twice)."""
    value = lambda: (store.query(DEDUP_EVENTS)[1] or [(0,)])[0][0]  # noqa: E731
    tok = f"calibrate:{store.database}"
    store.insert("spans", [SPAN_ROW], SPAN_COLS, dedup_token=tok)
    before = value()
    store.insert("spans", [SPAN_ROW], SPAN_COLS, dedup_token=tok)
    per_drop = int(value() - before)
    assert per_drop >= 1 and store.query(f"SELECT count() FROM {store.database}.spans")[1] == [(1,)]
    return per_drop


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES)
def test_ambiguous_inserts_are_retried_with_the_same_token_no_physical_duplicates(
    deployment: Callable[..., Deployment], figures: Callable[..., None], store: ClickHouseStore, tmp_path: Path,
    size: str, mode: str,
) -> None:  # fmt: skip
    per_drop = counter_per_dropped_insert(store)
    with faults_for(mode, tmp_path) as faults:
        run_ambiguous(deployment, figures, faults, per_drop, size, mode)


def run_ambiguous(
    deployment: Callable[..., Deployment], figures: Callable[..., None], faults: Faults, per_drop: int, size: str, mode: str
) -> None:
    injected_target = pick(size, 12, 80)
    d = deployment(**faults.settings, insert_retry_initial=0.1, insert_retry_max=1)
    worker = d.start_worker()
    dedup_before = dedup_blocks(worker)
    faults.lose_insert_replies(injected_target)
    rng = random.Random(71)
    sent: dict[str, int] = {}
    started = time.monotonic()
    deadline = started + pick(size, 30, 240)
    # Rounds of traces until every armed fault has hit an insert (span, gate, signal and trace
    # inserts all draw from the same countdown). Half keyed, half unkeyed (via the repartition topic).
    while time.monotonic() < deadline:
        msgs: list[tuple[bytes | None, bytes, int | None]] = []
        for i in range(pick(size, 8, 20)):
            t = genai_trace(rng, rng.randrange(3, 10))
            sent[t[0].trace_id.hex()] = len(t)
            msgs.append((t[0].trace_id.hex().encode(), proto(t), None) if i % 2 else (None, proto(t), i % 4))
        d.produce(msgs)
        time.sleep(0.5)
        if faults.injected(worker)["ambiguous_inserts"] >= injected_target:
            break
    assert wait_for(lambda: count(worker, f"SELECT count() FROM {DB}.traces FINAL") >= len(sent), 60, 0.5)
    status = worker.status()
    injected = faults.injected(worker)["ambiguous_inserts"]
    wait_for(lambda: dedup_blocks(worker) - dedup_before >= injected * per_drop, 10, 0.5)  # asserted below

    raw, distinct = {}, {}
    for table, key in KEYS.items():
        raw[table] = count(worker, f"SELECT count() FROM {DB}.{table}")
        distinct[table] = count(worker, f"SELECT count() FROM (SELECT DISTINCT {key} FROM {DB}.{table})")
    dropped = round((dedup_blocks(worker) - dedup_before) / per_drop, 2)
    merged = count(worker, f"SELECT count() FROM system.parts WHERE database = '{DB}' AND active AND level > 0 "
                           f"AND table IN ('spans', 'traces')")  # fmt: skip
    stored = dict(worker.sql(f"SELECT trace_id, span_count FROM {DB}.traces FINAL"))
    figures(
        scenario=f"ambiguous insert ({'client-layer fault' if mode == 'embedded' else 'store server, reply lost'})",
        guarantee="retried with the same dedup token: no physical duplicates",
        ambiguous_injected=injected,
        write_retries=status["counters"]["write_retries"],
        blocks_dropped_by_token=dropped,
        raw_rows=sum(raw.values()),
        distinct_keys=sum(distinct.values()),
        dup=sum(raw.values()) - sum(distinct.values()),
        merged_parts=merged,
        traces=len(sent),
        lost=len(set(sent) - set(stored)),
        runtime_s=round(time.monotonic() - started, 1),
    )
    assert injected == injected_target, "not every armed fault hit an insert"
    # embedded: each fault surfaces to the pipeline, which retries. Server: clickhouse-connect itself
    # replays an insert once after a connection reset (same body, same token), so the pipeline sees
    # only the faults whose replay was lost too — both kinds of retry must reuse the token.
    assert status["counters"]["write_retries"] >= (injected if mode == "embedded" else 1)
    # Every injected fault was retried with the token of the block ClickHouse already had, and it
    # was dropped: exactly one dropped insert per fault (a retry hit by the next fault is dropped
    # and retried again; nothing else replays in this test). A retry that rebuilt its token would
    # be stored instead: fewer drops (and a duplicate, unless a merge collapsed it meanwhile).
    assert dropped == injected
    assert raw == distinct, f"physical duplicates: raw {raw} vs distinct keys {distinct}"
    assert raw["spans"] == sum(sent.values()) and raw["traces"] == len(sent)
    assert stored == sent


def test_judge_backlog_marks_are_retried_with_the_same_token(store: ClickHouseStore, chdb_dsn: str, tmp_path: Path) -> None:
    """Regression: the judging runtime once built the token of a retried insert inside the retried
    call (a new uuid per attempt), so an ambiguous insert came back as a second physical row."""
    from tests.judges.fake_provider import FakeProviderServer
    from tests.stream.judging_support import OPEN, FakeTime, close_services, honest, message, service

    faults = tmp_path / "faults.json"
    faulty = _faulty(chdb_dsn, store.database, faults)
    since = len(OPEN)
    loop = asyncio.new_event_loop()
    try:
        clock = FakeTime()
        with FakeProviderServer() as server:
            server.default = honest()
            svc, _ = service(faulty, server, clock=clock, budget={"global_usd": 0.0095, "stop_success_at": 1.0,
                                                                  "cheap_only_at": 1.0})  # fmt: skip
            loop.run_until_complete(svc.on_assigned([0]))
            for i in range(3):  # two fit the budget, one is deferred to the backlog
                loop.run_until_complete(svc.handle_batch([message(i, failing=True, user=f"q{i}")]))
            clock.t += 86400
            write_faults(faults, ambiguous_inserts=40)  # every insert of the drain, and their retries
            assert loop.run_until_complete(svc.drain_backlog()) == 1
        assert faulty.fault_counts()["ambiguous_inserts"] > 0
        db = store.database
        # a deferred trace has two legitimate rows per table (pending/done, budget_skipped/ok): key + state
        keys = {"judge_backlog": "trace_id, judge, rubric_hash, state", "judge_calls": "call_id",
                "verdicts": "trace_id, judge, rubric_hash, status"}  # fmt: skip
        for table, key in keys.items():
            raw = store.query(f"SELECT count() FROM {db}.{table}")[1][0][0]
            distinct = store.query(f"SELECT count() FROM (SELECT DISTINCT {key} FROM {db}.{table})")[1][0][0]
            assert raw == distinct, f"{table}: {raw} rows, {distinct} distinct"
    finally:
        loop.run_until_complete(close_services(since))
        loop.close()
        faulty.close()
