"""A span ClickHouse refuses, end to end: real tansu, a real ``tracejudge worker`` process, a real
``tracejudge store-server`` (so this test can change the schema under the running worker). A
``CHECK`` constraint on ``spans`` stands for a value the schema cannot take: the worker
dead-letters the message (``insert_rejected``), stores everything else and goes on; once the
constraint is gone, ``tracejudge dlq replay`` brings the span in."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import clickhouse_connect
import httpx

from tests.factories import genai_trace, proto
from tests.stream.conftest import Deployment, wait_for
from tests.stream.test_cli import tracejudge


def test_a_refused_span_is_dead_lettered_the_partition_goes_on_and_a_replay_stores_it(
    store_dsn: str, deployment: Callable[..., Deployment], tmp_path: Path,
) -> None:  # fmt: skip
    d = deployment(partitions=1, clickhouse_dsn=store_dsn)
    worker = d.start_worker()  # migrates the schema
    admin = clickhouse_connect.get_client(dsn=store_dsn)
    admin.command("ALTER TABLE tracejudge.spans ADD CONSTRAINT no_poison CHECK name != 'poison'")

    rng = random.Random(12)
    traces = [genai_trace(rng, 4) for _ in range(4)]
    traces[1][3].name = "poison"
    key = lambda t: t[0].trace_id.hex().encode()  # noqa: E731
    d.produce([(key(t), proto(t), 0) for t in traces[:3]])
    spans = lambda: int(admin.command("SELECT count() FROM tracejudge.spans FINAL"))  # noqa: E731
    metrics = lambda: httpx.get(f"{worker.url}/metrics", timeout=10).text  # noqa: E731
    committed = f'tracejudge_consumer_committed_offset{{partition="0",topic="{d.input_topic}"}}'
    assert wait_for(lambda: f"{committed} 3.0" in metrics(), 60), "the commit did not pass the refused span"
    d.produce([(key(traces[3]), proto(traces[3]), 0)])  # the partition goes on
    assert wait_for(lambda: spans() == 15, 60), spans()
    counters = worker.status()["counters"]
    assert counters["refused_rows"] == {"spans": 1} and counters["dead_lettered"] == 1
    assert counters["dead_letter_reasons"] == {"insert_rejected": 1}
    assert 'tracejudge_store_refused_rows_total{table="spans"} 1.0' in metrics()

    env = {k: v for k, v in d.settings.items() if k in ("TRACEJUDGE_KAFKA_BOOTSTRAP", "TRACEJUDGE_DLQ_TOPIC")}
    shown = tracejudge("dlq", "show", "--json", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    (row,) = [json.loads(line) for line in shown.stdout.splitlines()]
    assert row["reason"] == "insert_rejected" and row["source"] == f"{d.input_topic}[0]@1"
    assert "VIOLATED_CONSTRAINT" in row["detail"] and row["value_bytes"] == len(proto(traces[1]))

    admin.command("ALTER TABLE tracejudge.spans DROP CONSTRAINT no_poison")  # the cause, fixed
    done = tracejudge("dlq", "replay", "--reason", "insert_rejected", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert wait_for(lambda: spans() == 16, 60), spans()
    poison = admin.command("SELECT count() FROM tracejudge.spans FINAL WHERE name = 'poison'")
    assert int(poison) == 1
    assert worker.status()["counters"]["refused_rows"] == {"spans": 1}  # the replay was not refused
    assert worker.proc.poll() is None
