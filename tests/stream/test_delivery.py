"""stream/delivery.py: retry only what failed; a dead letter refused as too large goes without its
value; other final refusals are retried, logged at ERROR and counted. The errors are aiokafka's
own classes, raised the way Faust hands them over (wrapped in ``ProducerSendError``); the real
client-side refusal on a real broker is in test_worker_e2e.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
)
from faust.exceptions import ProducerSendError

from stream import dlq
from stream.delivery import DeliveryCounts, ProduceFailed, deliver, refused, too_large, without_value
from stream.dlq import InMessage, OutRecord
from tests.judges.fake_provider import FakeProviderServer
from tests.stream.judging_support import service

Rule = Callable[[OutRecord, int], BaseException | None]  # (record, attempt) -> error to fail it with


class ScriptedProducer:
    """Fails each record as ``rule`` says, per attempt, the way ``FaustProducer`` reports it."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.attempts: list[list[OutRecord]] = []
        self.delivered: list[OutRecord] = []

    async def send_all(self, records: Sequence[OutRecord]) -> None:
        self.attempts.append(list(records))
        failures = []
        for r in records:
            error = self.rule(r, len(self.attempts))
            if error is None:
                self.delivered.append(r)
            else:
                failures.append((r, error))
        if failures:
            raise ProduceFailed(failures, len(records))


async def retry(op: Any, what: str) -> Any:
    """``retry_forever`` without the waits, giving up (the test fails) after 20 attempts."""
    for _ in range(20):
        try:
            return await op()
        except Exception:  # noqa: BLE001, S112 - as retry_forever does
            continue
    raise AssertionError(f"{what}: not delivered after 20 attempts")


def run(send_all: Any, records: Sequence[OutRecord]) -> DeliveryCounts:
    counts = DeliveryCounts()
    asyncio.run(deliver(send_all, records, retry, "produce", counts))
    return counts


def wrapped(error: BaseException) -> BaseException:
    """As Faust raises a client-side error (``raise ProducerSendError(...) from exc``)."""
    try:
        raise ProducerSendError(f"Error while sending: {error!r}") from error
    except ProducerSendError as exc:
        return exc


def a_dead_letter(value: bytes, key: bytes | None = b"k" * 32) -> OutRecord:
    msg = InMessage("otlp_spans", 2, 41, key, value, 1, (("traceparent", b"00-abc"), ("big", b"h" * 100)))
    return dlq.dead_letter(msg, "otlp_spans.dlq", "undecodable", "not OTLP")


def records(n: int) -> list[OutRecord]:
    return [OutRecord("t.by_trace", f"{i:032x}".encode(), b"v%d" % i) for i in range(n)]


def test_a_partial_failure_sends_only_the_failed_records_again() -> None:
    out = records(5)
    p = ScriptedProducer(lambda r, n: KafkaConnectionError() if n == 1 and r.key in (out[1].key, out[3].key) else None)
    counts = run(p.send_all, out)
    assert p.attempts == [out, [out[1], out[3]]]  # in their order, the others not again
    assert sorted(r.value for r in p.delivered) == sorted(r.value for r in out)  # each exactly once
    assert counts == DeliveryCounts(values_omitted=0, refused=0)


def test_an_error_without_the_records_named_sends_them_all_again() -> None:
    out, calls = records(3), []

    async def send_all(rs: Sequence[OutRecord]) -> None:
        calls.append(list(rs))
        if len(calls) < 3:
            raise ConnectionError("broker down")

    assert run(send_all, out) == DeliveryCounts()
    assert calls == [out, out, out]


@pytest.mark.parametrize("error", [MessageSizeTooLargeError(), wrapped(MessageSizeTooLargeError("client")),
                                   RecordListTooLargeError()])  # fmt: skip
def test_a_dead_letter_refused_as_too_large_is_sent_without_the_message(error: BaseException,
                                                                         caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    big, small = a_dead_letter(b"x" * 5000), a_dead_letter(b"y" * 10)
    p = ScriptedProducer(lambda r, n: error if len(r.value or b"") > 1000 else None)
    with caplog.at_level(logging.ERROR, logger="stream.delivery"):
        counts = run(p.send_all, [big, small])
    assert counts == DeliveryCounts(values_omitted=1, refused=0)
    assert len(p.attempts) == 2 and p.attempts[1] == [without_value(big)]
    sent = p.delivered[-1]
    assert sent.value == b"" and sent.key == big.key and sent.topic == "otlp_spans.dlq"
    headers = dict(sent.headers)
    assert headers[dlq.REASON] == b"undecodable" and headers[dlq.DETAIL] == b"not OTLP"
    assert (headers[dlq.SOURCE_TOPIC], headers[dlq.SOURCE_PARTITION], headers[dlq.SOURCE_OFFSET]) == (
        b"otlp_spans", b"2", b"41")
    assert "traceparent" not in headers and "big" not in headers  # the original headers are left out too
    assert int(headers[dlq.VALUE_OMITTED]) == 5000 + len("traceparent") + 6 + 3 + 100
    assert small in p.delivered and p.delivered.count(small) == 1
    assert "otlp_spans@41 refused as too large (5000 bytes" in caplog.text


def test_a_dead_letter_with_a_null_header_refused_as_too_large_is_not_lost() -> None:
    """Kafka allows a header without a value (aiokafka reads it as None). Measuring it for the
    smaller dead letter raised, half-way through rebuilding the records to send again: the retry
    sent only those rebuilt before the error, and the rest were acknowledged unsent."""
    msg = InMessage("otlp_spans", 0, 7, None, b"\x00" * 5000, 1, (("traceparent", None), ("x", b"12")))
    big = dlq.dead_letter(msg, "otlp_spans.dlq", "undecodable", "not OTLP")
    first, last = a_dead_letter(b"a" * 2000), a_dead_letter(b"b" * 3000)
    p = ScriptedProducer(lambda r, n: MessageSizeTooLargeError() if len(r.value or b"") > 1000 else None)
    counts = run(p.send_all, [first, big, last])
    assert counts.values_omitted == 3 and len(p.delivered) == 3
    assert sorted(dict(r.headers)[dlq.SOURCE_OFFSET] for r in p.delivered) == [b"41", b"41", b"7"]
    assert int(dict(without_value(big).headers)[dlq.VALUE_OMITTED]) == 5000 + len("traceparent") + 1 + 2


def test_a_key_too_large_to_keep_is_left_out_and_counted() -> None:
    big = a_dead_letter(b"x" * 10, key=b"k" * 2000)
    smaller = without_value(big)
    assert smaller.key is None
    assert int(dict(smaller.headers)[dlq.VALUE_OMITTED]) == 10 + 2000 + len("traceparent") + 6 + 3 + 100
    assert without_value(a_dead_letter(b"", key=None)).key is None


def test_a_dead_letter_still_refused_without_its_value_is_not_cut_again() -> None:
    big = a_dead_letter(b"x" * 5000)
    p = ScriptedProducer(lambda r, n: MessageSizeTooLargeError() if n <= 3 else None)
    counts = run(p.send_all, [big])
    assert [a[0] for a in p.attempts] == [big] + [without_value(big)] * 3
    assert counts == DeliveryCounts(values_omitted=1, refused=2)  # the two later refusals: logged, retried


def test_a_record_that_is_not_a_dead_letter_is_never_cut(caplog: pytest.LogCaptureFixture) -> None:
    part = records(1)[0]
    p = ScriptedProducer(lambda r, n: MessageSizeTooLargeError() if n <= 2 else None)
    with caplog.at_level(logging.ERROR, logger="stream.delivery"):
        counts = run(p.send_all, [part])
    assert p.attempts == [[part]] * 3 and p.delivered == [part]
    assert counts == DeliveryCounts(values_omitted=0, refused=2)
    assert caplog.text.count("refuses 1 of 1 records for good (topic t.by_trace; MessageSizeTooLargeError") == 2


def test_an_authorization_failure_is_retried_until_it_is_fixed_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    out = records(2)
    p = ScriptedProducer(lambda r, n: TopicAuthorizationFailedError("t.by_trace") if n <= 4 else None)
    with caplog.at_level(logging.ERROR, logger="stream.delivery"):
        counts = run(p.send_all, out)
    assert counts == DeliveryCounts(values_omitted=0, refused=8) and p.delivered == out
    assert caplog.text.count("refuses 2 of 2 records for good (topic t.by_trace; TopicAuthorizationFailedError") == 4


@pytest.mark.parametrize(("error", "large", "final"), [
    (MessageSizeTooLargeError(), True, True),
    (wrapped(RecordListTooLargeError()), True, True),
    (wrapped(TopicAuthorizationFailedError("t")), False, True),
    (KafkaConnectionError(), False, False),
    (wrapped(KafkaConnectionError()), False, False),
    (ValueError("Need at least one: key or value"), False, False),
])  # fmt: skip
def test_what_counts_as_too_large_and_as_final(error: BaseException, large: bool, final: bool) -> None:
    assert too_large(error) is large
    assert refused(error) is final


def test_the_judge_service_sends_its_dead_letters_the_same_way(store: Any) -> None:
    """The judge's dead letters (to_judge messages it cannot decode) take the same path and counters."""
    with FakeProviderServer() as server:
        svc, _ = service(store, server)
        p = ScriptedProducer(lambda r, n: MessageSizeTooLargeError() if len(r.value or b"") > 1000 else None)
        svc.send = p.send_all
        garbage = [InMessage("traces.to_judge", 0, 7, b"k", b"{" * 5000), InMessage("traces.to_judge", 0, 8, b"k", b"{")]
        asyncio.run(svc.handle_batch(garbage))
    assert [dict(r.headers)[dlq.SOURCE_OFFSET] for r in p.delivered] == [b"8", b"7"]
    assert p.delivered[1].value == b"" and dict(p.delivered[1].headers)[dlq.VALUE_OMITTED] == b"5000"
    assert svc.counters["dead_letter_values_omitted"] == 1 and svc.counters["dead_lettered"] == 2
