"""Scenario 5b: ClickHouse refuses some rows (fault matrix #5, "never acked unless stored or
dead-lettered", for an error no retry can fix).

A real ``tracejudge worker`` on a real ``tracejudge store-server``; a ``CHECK`` constraint added to
``spans`` under the running worker refuses every span named ``poison…``, as an unforeseen value
the schema cannot take would be. About 2 % of the messages carry one or two such spans, among
good spans. Guarantee, span by span: every good span stored, no refused span stored, each
message with a refused span dead-lettered once (reason ``insert_rejected``, its original value),
every partition's committed offset at its end (nothing held). Then the constraint is dropped and
``tracejudge dlq replay --reason insert_rejected`` stores the refused spans: stored = sent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from stream.dlq import REASON, SOURCE_OFFSET, SOURCE_PARTITION
from tests.factories import genai_trace, proto
from tests.reliability.support import SIZES, committed_offsets, ends_of, pick, produce_all
from tests.stream.conftest import Deployment, wait_for
from tests.stream.test_cli import tracejudge


@pytest.mark.parametrize("size", SIZES)
def test_refused_spans_are_dead_lettered_every_other_span_stored_and_nothing_held(
    size: str, store_dsn: str, deployment: Callable[..., Deployment], consume: Any, figures: Callable[..., None],
    tmp_path: Path,
) -> None:  # fmt: skip
    rng = random.Random(505)
    n = int(pick(size, 1_500, 30_000))
    d = deployment(partitions=2, clickhouse_dsn=store_dsn)
    worker = d.start_worker()
    admin = clickhouse_connect.get_client(dsn=store_dsn)
    admin.command("ALTER TABLE tracejudge.spans ADD CONSTRAINT no_poison CHECK name NOT LIKE 'poison%'")

    msgs: list[tuple[bytes, bytes]] = []
    refused_in: list[int] = []  # per message: how many of its spans the constraint refuses
    span_count: list[int] = []
    for i in range(n):
        spans = genai_trace(rng, rng.randrange(3, 9))
        bad = 0
        if i % 50 == 17:  # 2 %: one refused span, every third such message two
            bad = 2 if (i // 50) % 3 == 0 else 1
            for s in rng.sample(spans[1:], bad):
                s.name = f"poison {i}"
        msgs.append((spans[0].trace_id.hex().encode(), proto(spans)))
        refused_in.append(bad)
        span_count.append(len(spans))

    started = time.monotonic()
    where = produce_all(d.broker.bootstrap, d.input_topic, msgs)
    ends = ends_of(where)
    group = d.settings["TRACEJUDGE_CONSUMER_GROUP"]
    held = not wait_for(lambda: committed_offsets(d.broker.bootstrap, group, d.input_topic) == ends,
                        timeout=pick(size, 120, 900), interval=1.0)  # fmt: skip
    drain_s = time.monotonic() - started

    stored = {(int(p), int(o)): int(c) for p, o, c in admin.query(
        "SELECT kafka_partition, kafka_offset, count() FROM tracejudge.spans FINAL GROUP BY 1, 2").result_rows}
    poison_stored = int(admin.command("SELECT count() FROM tracejudge.spans FINAL WHERE name LIKE 'poison%'"))
    index = {pos: i for i, pos in enumerate(where)}
    dead = consume(d.dlq_topic, expect=sum(b > 0 for b in refused_in), idle=3.0, timeout=120)
    dlq: dict[tuple[int, int], Any] = {}
    twice = wrong = 0
    for r in dead:
        h = dict(r.headers)
        src = (int(h[SOURCE_PARTITION]), int(h[SOURCE_OFFSET]))
        twice += src in dlq
        dlq[src] = r
        i = index[src]
        wrong += h[REASON] != b"insert_rejected" or r.value != msgs[i][1] or refused_in[i] == 0
    good_lost = sum(span_count[i] - refused_in[i] - stored.get(pos, 0) for pos, i in index.items())
    undelivered = [pos for pos, i in index.items() if refused_in[i] and pos not in dlq]
    status = worker.status()
    counters, spans_inserts = status["counters"], status["store_inserts"]["spans"]
    copy = status["store_inserts"].get("spans (copy)", {})  # the split's inserts, in a Null copy of spans

    admin.command("ALTER TABLE tracejudge.spans DROP CONSTRAINT no_poison")
    env = {k: v for k, v in d.settings.items() if k in ("TRACEJUDGE_KAFKA_BOOTSTRAP", "TRACEJUDGE_DLQ_TOPIC")}
    replayed = tracejudge("dlq", "replay", "--reason", "insert_rejected", cwd=tmp_path, env=env)
    total = sum(span_count)
    after = wait_for(lambda: int(admin.command("SELECT count() FROM tracejudge.spans FINAL")) == total, 60)

    figures(scenario="5b ClickHouse refuses rows", guarantee="good spans stored, refused ones dead-lettered once, "
            "nothing held; replay stores them", messages_in=n, spans_in=total, refused_spans=sum(refused_in),
            messages_dead_lettered=len(dlq), good_spans_lost=good_lost, refused_spans_stored=poison_stored,
            dead_lettered_twice=twice, wrong_dead_letters=wrong, partition_held=held,
            span_inserts=spans_inserts["inserts"], span_inserts_refused=spans_inserts["failures"],
            copy_inserts=copy.get("inserts", 0) + copy.get("failures", 0),
            drain_s=round(drain_s, 1), stored_after_replay=int(admin.command(
                "SELECT count() FROM tracejudge.spans FINAL")))  # fmt: skip
    assert not held, f"the commit did not reach the end: {committed_offsets(d.broker.bootstrap, group, d.input_topic)}"
    assert good_lost == 0 and poison_stored == 0 and twice == 0 and wrong == 0 and not undelivered
    assert len(dlq) == sum(b > 0 for b in refused_in)
    assert counters["refused_rows"] == {"spans": sum(refused_in)}
    assert counters["dead_letter_reasons"] == {"insert_rejected": len(dlq)}
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert after, "the replay did not store the refused spans"
    assert worker.proc.poll() is None

