"""JudgeService with to_judge envelopes whose spans are by reference: spans loaded from the real
embedded ClickHouse (one query per batch, none for full envelopes), missing spans dead-lettered."""

from __future__ import annotations

from typing import Any

import pytest

from stream import dlq, judge_envelope
from stream.dlq import InMessage
from stream.rows import span_row
from stream.sink import ClickHouseSink
from tests.judges.fake_llm import build_trace
from tests.judges.fake_provider import FakeProviderServer
from tests.stream.judging_support import honest, message, run, service, verdicts

pytestmark = pytest.mark.usefixtures("closes_services")

META = {"decision": {"class": "suspected_failure", "rule": "r", "stratum": "suspected_failure", "p": 1.0,
                     "policy_version": "pv1"}, "failed_gates": [], "signals": []}  # fmt: skip


def big_trace(seed: int):  # noqa: ANN201
    user = f"where is order {seed}? " + "with many details " * 3000  # ~54 KB of prompt text per chat span
    return build_trace(user, "Sorry.", f"ERROR: order service {seed} down", tool_error=True, seed=seed)


def by_reference(trace: Any, offset: int) -> InMessage:
    value = judge_envelope.encode(trace, META, 20_000)
    assert len(value) <= 20_000 and judge_envelope.decode_partial(value)[2] is not None
    return InMessage("traces.to_judge", 0, offset, trace.trace_id.encode(), value)


def store_spans(store: Any, trace: Any, late: bool = False) -> None:
    rows = [span_row(s, "otlp_spans", 0, 7, 1_800_000_000_000, late) for s in trace.spans]
    run(ClickHouseSink(store).write_spans(rows, f"t:{trace.trace_id}:{late}"))


def count_span_reads(store: Any) -> list[str]:
    reads: list[str] = []
    real = store.aquery

    async def spy(sql: str, *a: Any, **kw: Any) -> Any:
        if ".spans FINAL" in sql:
            reads.append(sql)
        return await real(sql, *a, **kw)

    store.aquery = spy
    return reads


def test_referenced_spans_are_loaded_and_judged_missing_ones_dead_lettered(store) -> None:  # noqa: ANN001
    with FakeProviderServer() as server:
        server.default = honest()
        svc, sent = service(store, server)
        reads = count_span_reads(store)
        normal = message(1, failing=False, offset=0)
        run(svc.handle_batch([normal]))
        assert reads == []  # full envelopes: no extra query

        stored_a, stored_b, never_stored = big_trace(10), big_trace(11), big_trace(12)
        store_spans(store, stored_a)
        store_spans(store, stored_b)
        run(svc.handle_batch([by_reference(stored_a, 1), by_reference(never_stored, 2),
                              message(2, failing=False, offset=3), by_reference(stored_b, 4)]))  # fmt: skip
        assert len(reads) == 1  # one query for the whole batch

        got = verdicts(store)
        assert set(got) == {normal.key.decode(), message(2, failing=False).key.decode(),
                            stored_a.trace_id, stored_b.trace_id}  # fmt: skip
        assert all(v["status"] == "ok" for v in got.values())
        assert got[stored_a.trace_id]["label"] == "fail" and got[stored_a.trace_id]["kafka_offset"] == 1
        prompts = [str(r.body) for r in server.requests]
        assert any("ERROR: order service 10 down" in p and "where is order 10?" in p for p in prompts)
        assert any("ERROR: order service 11 down" in p for p in prompts)
        assert not any("order service 12" in p for p in prompts)

        assert len(sent) == 1 and sent[0].topic == "traces.to_judge.dlq"
        headers = dict(sent[0].headers)
        assert headers[dlq.REASON] == b"spans_ref_not_found" and headers[dlq.SOURCE_OFFSET] == b"2"
        assert never_stored.trace_id.encode() in headers[dlq.DETAIL]
        assert svc.counters["spans_by_reference"] == 2 and svc.counters["spans_ref_not_found"] == 1


def test_a_partly_stored_trace_is_dead_lettered_not_judged_partial(store) -> None:  # noqa: ANN001
    with FakeProviderServer() as server:
        server.default = honest()
        svc, sent = service(store, server)
        trace = big_trace(20)
        part = judge_envelope.with_spans(trace, trace.spans[:-1])
        store_spans(store, part)
        run(svc.handle_batch([by_reference(trace, 0)]))
        assert verdicts(store) == {} and server.requests == []
        assert [dict(r.headers)[dlq.REASON] for r in sent] == [b"spans_ref_not_found"]


def test_a_deferred_by_reference_envelope_is_judged_from_the_backlog(store) -> None:  # noqa: ANN001
    from tests.judges.fake_provider import Hang

    with FakeProviderServer() as server:
        server.default = Hang(5.0)
        svc, sent = service(store, server, providers=[{
            "name": "fake", "type": "openai", "base_url": server.url + "/v1", "api_key_env": "FAKE_OPENAI_KEY",
            "timeout_s": 0.2, "max_attempts": 2, "deadline_s": 1.0, "backoff_base_s": 0.01}])  # fmt: skip
        trace = big_trace(30)
        store_spans(store, trace)
        run(svc.on_assigned([0]))
        run(svc.handle_batch([by_reference(trace, 0)]))
        assert verdicts(store)[trace.trace_id]["status"] == "error"  # deferred: the backlog holds the envelope
        server.default = honest()
        server.requests.clear()
        assert run(svc.drain_backlog()) == 1
        v = verdicts(store)[trace.trace_id]
        assert v["status"] == "ok" and v["label"] == "fail"
        assert any("ERROR: order service 30 down" in str(r.body) for r in server.requests)
        assert sent == [] and svc.counters["spans_by_reference"] == 2
