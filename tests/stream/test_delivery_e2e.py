"""A dead letter larger than the producer may send, end to end: real tansu broker, real
``tracejudge worker`` process, real embedded ClickHouse. tansu has no size limit of its own, so the
refusal is the real client's (``producer_max_request_bytes`` → aiokafka's ``max_request_size``),
which raises the same ``MessageSizeTooLargeError`` a broker's refusal does."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from typing import Any

import httpx

from schemas.decode import TRUNCATION_MARK
from stream import dlq
from tests.factories import genai_trace, proto, request
from tests.stream.conftest import Deployment, wait_for

LIMIT = 64 * 1024


def test_a_dead_letter_over_the_size_limit_goes_without_its_value_and_the_partition_goes_on(
    deployment: Callable[..., Deployment], consume: Any,
) -> None:  # fmt: skip
    rng = random.Random(5)
    d = deployment(partitions=1, producer_max_request_bytes=LIMIT, max_repartition_message_bytes=LIMIT - 14_000,
                   max_judge_message_bytes=LIMIT - 14_000)  # fmt: skip
    worker = d.start_worker()
    traces = [genai_trace(rng, 3) for _ in range(6)]
    key = lambda t: t[0].trace_id.hex().encode()  # noqa: E731
    garbage = b"\x00\x01not otlp\xff" * 20_000  # 220 KB: its dead letter is over the limit
    first: list[tuple[bytes | None, bytes, int | None]] = [(key(t), proto(t), 0) for t in traces[:3]]
    first += [(b"poison", garbage, 0), (None, b"\x00bad\xff", 0)]  # offsets 3 and 4
    d.produce(first)
    db = "tracejudge"
    stored = lambda: int(worker.sql(f"SELECT count() FROM {db}.traces FINAL")[0][0])  # noqa: E731
    metrics = lambda: httpx.get(f"{worker.url}/metrics", timeout=10).text  # noqa: E731
    committed = f'tracejudge_consumer_committed_offset{{partition="0",topic="{d.input_topic}"}}'
    # the partition goes on: the commit passes the poison message, and later messages are stored
    assert wait_for(lambda: f"{committed} 5.0" in metrics(), 60), "the commit did not pass the poison message"
    d.produce([(key(t), proto(t), 0) for t in traces[3:]])
    assert wait_for(lambda: stored() >= len(traces), 60), "the traces after the poison message were not stored"
    assert stored() == len(traces)

    # by source offset: the small one is acknowledged first, the big one only on its second try
    dead = sorted(consume(d.dlq_topic, expect=2, timeout=30), key=lambda r: int(dict(r.headers)[dlq.SOURCE_OFFSET]))
    assert len(dead) == 2
    big, small = (dict(r.headers) for r in dead)
    assert dead[0].value == b"" and dead[0].key == b"poison"
    assert big[dlq.REASON] == b"undecodable" and int(big[dlq.SOURCE_OFFSET]) == 3
    assert big[dlq.SOURCE_TOPIC] == d.input_topic.encode() and big[dlq.SOURCE_PARTITION] == b"0"
    assert int(big[dlq.VALUE_OMITTED]) == len(garbage)
    assert dead[1].value == b"\x00bad\xff" and dlq.VALUE_OMITTED not in small  # under the limit: whole
    assert int(small[dlq.SOURCE_OFFSET]) == 4

    counters = worker.status()["counters"]
    assert counters["dead_letter_values_omitted"] == 1 and counters["dead_lettered"] == 2
    assert counters["send_refused"] == 0 and counters["send_retries"] == 1
    assert 'tracejudge_dead_letter_values_omitted_total{component="ingest"} 1.0' in metrics()
    assert worker.proc.poll() is None


def test_a_trace_too_large_for_one_repartition_message_is_cut_and_every_span_stored(
    deployment: Callable[..., Deployment], consume: Any,
) -> None:  # fmt: skip
    """An unkeyed message whose one trace is larger than the producer may send (as the part of a
    large trace from a compressed input message can be, uncompressed): the trace goes to the
    repartition topic in parts under ``max_repartition_message_bytes``, and the partition goes on.
    It was one part, refused for good, and the partition waited on it."""
    rng = random.Random(6)
    d = deployment(partitions=1, producer_max_request_bytes=LIMIT, max_repartition_message_bytes=LIMIT - 14_000,
                   max_judge_message_bytes=LIMIT - 14_000)  # fmt: skip
    worker = d.start_worker()
    big = genai_trace(rng, 12)
    for i, s in enumerate(big):  # ~18 KB of conversation per span: ~220 KB for the trace
        s.attrs["gen_ai.input.messages"] = f'[{{"role":"user","parts":[{{"type":"text","content":"{i}' + "z" * 18_000 + '"}]}]'
    small = [genai_trace(rng, 3) for _ in range(2)]
    d.produce([(None, proto(big + small[0]), 0), (None, proto(small[1]), 0)])
    db = "tracejudge"
    stored = lambda sql: int(worker.sql(sql.format(db=db))[0][0])  # noqa: E731
    assert wait_for(lambda: stored("SELECT count() FROM {db}.traces FINAL") >= 3, 90), "the traces were not all stored"
    assert stored("SELECT count() FROM {db}.spans FINAL") == 18
    assert stored(f"SELECT span_count FROM {{db}}.traces FINAL WHERE trace_id = '{big[0].trace_id.hex()}'") == 12
    parts = [r for r in consume(d.settings["TRACEJUDGE_REPARTITION_TOPIC"]) if r.key == big[0].trace_id.hex().encode()]
    assert len(parts) >= 4 and all(len(r.value) <= LIMIT - 14_000 for r in parts)
    counters = worker.status()["counters"]
    assert counters["send_refused"] == 0 and counters["repartitioned_messages"] == 2
    assert counters["spans_in"] == 18 and worker.proc.poll() is None


def test_a_span_larger_alone_than_a_repartition_message_sheds_what_the_decoder_drops(
    deployment: Callable[..., Deployment],
) -> None:  # fmt: skip
    """An unkeyed message with a span whose values alone are over the producer's limit (a base64
    image in its input messages, say): the values are cut to ``max_attribute_bytes`` before the
    span goes to the repartition topic, so it fits one record and is stored as it would have been
    keyed. Another span, whose values are each within ``max_attribute_bytes`` but together over
    the limit, has its largest cut to fit, named in ``truncated_attributes``. A third, whose
    status message and 3,000 streamed chunk events no cut of values makes fit, has its status
    message cut and its newest chunk events dropped (counted in an attribute); its exception event
    stays. All three went alone, over the limit, refused for good, and the partition waited on
    them."""
    rng = random.Random(7)
    d = deployment(partitions=1, producer_max_request_bytes=LIMIT, max_repartition_message_bytes=LIMIT - 14_000,
                   max_judge_message_bytes=LIMIT - 14_000, max_attribute_bytes=20_000)  # fmt: skip
    worker = d.start_worker()
    big = genai_trace(rng, 4)
    big[1].attrs["gen_ai.input.messages"] = "data:image/png;base64," + "A" * 300_000
    big[1].attrs["image.raw"] = rng.randbytes(90_000)
    for k in range(4):  # 76 KB of values each within max_attribute_bytes: cut further to fit, and named
        big[2].attrs[f"context.{k}"] = str(k) * 19_000
    small = genai_trace(rng, 3)
    req = request(big + small)
    streamed = req.resource_spans[0].scope_spans[0].spans[3]  # values alone cannot make it fit:
    streamed.status.message = "upstream said: " + "E" * 120_000  # a whole error body as its status
    for i in range(3_000):  # a streaming model's chunk events, then the exception it ended with
        streamed.events.add(name="gen_ai.choice.chunk", time_unix_nano=big[3].start + i).attributes.add(
            key="gen_ai.content").value.string_value = f"token {i} "
    streamed.events.add(name="exception", time_unix_nano=big[3].end).attributes.add(
        key="exception.stacktrace").value.string_value = "frame\n" * 5_000
    d.produce([(None, req.SerializeToString(), 0)])
    db, span = "tracejudge", big[1].span_id.hex()
    stored = lambda sql: worker.sql(sql.format(db=db))[0]  # noqa: E731
    assert wait_for(lambda: int(stored("SELECT count() FROM {db}.traces FINAL")[0]) >= 2, 90), "not stored"
    assert int(stored("SELECT count() FROM {db}.spans FINAL")[0]) == 7
    value, blob, truncated = stored(
        "SELECT attributes['gen_ai.input.messages'], attributes['image.raw'], truncated_attributes "
        f"FROM {{db}}.spans FINAL WHERE span_id = '{span}'"
    )
    assert value == "data:image/png;base64," + "A" * (20_000 - 22) + TRUNCATION_MARK
    assert base64.b64decode(json.loads(blob)["$bytes"]) == big[1].attrs["image.raw"][:20_000]
    assert sorted(truncated) == ["gen_ai.input.messages", "image.raw"]
    values, truncated = stored("SELECT mapFilter((k, v) -> k LIKE 'context.%', attributes), truncated_attributes "
                               f"FROM {{db}}.spans FINAL WHERE span_id = '{big[2].span_id.hex()}'")  # fmt: skip
    assert sorted(values) == [f"context.{k}" for k in range(4)] and truncated and set(truncated) <= set(values)
    for k, v in values.items():  # the cut ones end with the mark, the others are whole
        kept = 19_000 if k not in truncated else len(v) - len(TRUNCATION_MARK)
        assert v == k[-1] * kept + (TRUNCATION_MARK if k in truncated else "")
    assert sum(len(v) for v in values.values()) < LIMIT - 14_000
    status, events, dropped, truncated = stored(
        "SELECT status_message, arrayMap(e -> JSONExtractString(e, 'name'), JSONExtractArrayRaw(events)), "
        "attributes['tracejudge.dropped_events'], truncated_attributes "
        f"FROM {{db}}.spans FINAL WHERE span_id = '{big[3].span_id.hex()}'"
    )
    assert status.startswith("upstream said: EEE") and status.endswith(TRUNCATION_MARK) and len(status) < 1_100
    assert events[-1] == "exception" and set(events[:-1]) == {"gen_ai.choice.chunk"}  # the newest chunks dropped
    assert int(dropped) == 3_001 - len(events) > 0 and truncated[0] == "span.status_message"
    counters = worker.status()["counters"]
    assert counters["send_refused"] == 0 and counters["repartition_oversize_records"] == 0
    assert counters["repartition_spans_fitted"] == 2
    assert counters["repartitioned_messages"] == 1 and worker.proc.poll() is None
