"""``tracejudge dlq show`` and ``tracejudge dlq replay`` as on-call would run them: a worker
dead-letters a message over ``max_message_bytes``; the limit is raised and the worker restarted;
the replay sends the message back and the worker stores its trace. Real tansu, real worker
processes, real embedded ClickHouse."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from tests.factories import genai_trace, proto
from tests.stream.conftest import Deployment, wait_for
from tests.stream.test_cli import tracejudge


def test_show_then_replay_after_the_cause_is_fixed(deployment: Callable[..., Deployment], tmp_path: Path) -> None:
    rng = random.Random(9)
    d = deployment(partitions=1, max_message_bytes=4096)
    worker = d.start_worker()
    traces = [genai_trace(rng, 3) for _ in range(3)]
    big = genai_trace(rng, 4)
    big[1].attrs["tool.output"] = "x" * 20_000  # the message is over 4096 bytes
    key = lambda t: t[0].trace_id.hex().encode()  # noqa: E731
    d.produce([(key(traces[0]), proto(traces[0]), 0), (key(big), proto(big), 0)]
              + [(key(t), proto(t), 0) for t in traces[1:]])  # fmt: skip
    db = "tracejudge"
    stored = lambda: int(worker.sql(f"SELECT count() FROM {db}.traces FINAL")[0][0])  # noqa: E731
    assert wait_for(lambda: stored() >= 3 and worker.status()["counters"]["dead_lettered"] == 1, 60)
    worker.stop()

    env = {k: v for k, v in d.settings.items() if k in ("TRACEJUDGE_KAFKA_BOOTSTRAP", "TRACEJUDGE_DLQ_TOPIC")}
    shown = tracejudge("dlq", "show", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"{d.dlq_topic}: 1 dead letters" in shown.stdout
    assert "message_too_large" in shown.stdout and f"{d.input_topic}[0]@1" in shown.stdout
    rows = tracejudge("dlq", "show", "--json", cwd=tmp_path, env=env)
    (row,) = [json.loads(line) for line in rows.stdout.splitlines()]
    assert row["reason"] == "message_too_large" and row["source"] == f"{d.input_topic}[0]@1"
    assert row["value_bytes"] == len(proto(big)) and row["value_omitted"] is None

    dry = tracejudge("dlq", "replay", "--reason", "message_too_large", "--dry-run", cwd=tmp_path, env=env)
    assert dry.returncode == 0 and "would send 1 message(s)" in dry.stdout, dry.stdout + dry.stderr

    d.settings["TRACEJUDGE_MAX_MESSAGE_BYTES"] = str(1 << 20)  # the cause, fixed
    worker = d.start_worker()
    done = tracejudge("dlq", "replay", "--reason", "message_too_large", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    at = f"dlq {row['dlq_partition']}@{row['dlq_offset']}"
    assert f"sent 1 message(s) of message_too_large {d.input_topic}[0]@1 ({at}) to {d.input_topic}" in done.stdout
    assert wait_for(lambda: stored() == 4, 60), "the replayed trace was not stored"
    twice = tracejudge("dlq", "replay", "--reason", "message_too_large", cwd=tmp_path, env=env)
    assert twice.returncode == 0 and "sent 0 message(s)" in twice.stdout, twice.stdout + twice.stderr
    assert "1 of them replayed before, not sent again (--again sends them" in twice.stdout
    (row,) = [json.loads(line) for line in tracejudge("dlq", "show", "--json", cwd=tmp_path, env=env).stdout.splitlines()]
    assert row["replayed"]["to"] == d.input_topic and row["replayed"]["messages"] == 1
    spans = dict(worker.sql(f"SELECT trace_id, span_count FROM {db}.traces FINAL"))
    assert spans[big[0].trace_id.hex()] == 4
    assert worker.status()["counters"]["dead_lettered"] == 0  # this run dead-lettered nothing

    later = tracejudge("dlq", "show", "--since", "2100-01-01", cwd=tmp_path, env=env)
    assert later.returncode == 0 and f"{d.dlq_topic}: 0 dead letters since 2100-01-01" in later.stdout, later.stderr
    bad = tracejudge("dlq", "replay", "--reason", "x", "--since", "yesterday", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "not an ISO 8601 date/time" in bad.stderr
    gone = tracejudge("dlq", "show", "--topic", "no.such.topic", cwd=tmp_path, env=env)
    assert gone.returncode == 1 and "does not exist" in gone.stderr


def test_missing_offsets_are_printed_as_ranges() -> None:
    from stream.cli_dlq import _ranges

    offsets = [("t", 1, 101), ("t", 1, 100), ("t", 1, 102), ("t", 1, 107), ("t", 0, 5), ("u", 1, 108)]
    assert _ranges(offsets) == "t[0]@5, t[1]@100-102, t[1]@107, u[1]@108"
    assert _ranges([]) == ""


def test_an_unreachable_broker_is_a_clear_error(tmp_path: Path) -> None:
    env = {"TRACEJUDGE_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    for args in (("dlq", "show"), ("dlq", "replay", "--reason", "x")):
        run = tracejudge(*args, cwd=tmp_path, env=env)
        assert run.returncode == 1, run.stderr
        assert "Kafka at 127.0.0.1:1: KafkaConnectionError" in run.stderr and "Traceback" not in run.stderr
        assert "Unclosed" not in run.stderr
