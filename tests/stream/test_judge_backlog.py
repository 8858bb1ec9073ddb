"""stream/judge_backlog.py against the real embedded ClickHouse and a local provider server: an
entry whose verdict already exists is marked done, not left pending (where it held the drain),
and a replayed batch whose deferrals differ from the first attempt's records them."""

from __future__ import annotations

from typing import Any

import pytest

from stream import judge_envelope
from stream.provenance import message_token
from tests.judges.fake_provider import Fail, FakeProviderServer, Func, RawBody, Reply
from tests.stream.judging_support import (
    FakeTime,
    honest,
    honest_answer,
    message,
    run,
    service,
    table_count,
    verdicts,
)

pytestmark = pytest.mark.usefixtures("closes_services")


def test_an_entry_whose_verdict_exists_is_marked_done_and_the_drain_goes_on(store) -> None:  # noqa: ANN001
    """A verdict written just before a crash, ahead of its entry's done mark (or by a replay that
    judged it live) left the entry pending: the drain skipped it as judged but paired the
    outcomes it did get with the wrong entries, and with ``limit`` entries like it, oldest first,
    no other entry was ever drained again."""
    with FakeProviderServer() as server:
        server.default = honest()
        svc, _ = service(store, server, clock=FakeTime())
        run(svc.on_assigned([0]))
        a, b = message(1, failing=True, user="qa"), message(2, failing=True, user="qb")
        run(svc.handle_batch([a]))  # judged live: its verdict is stored
        rubric = next(iter(svc.runner.judges["task_completion"].values())).rubric
        ta, tb = (judge_envelope.decode_partial(m.value)[0] for m in (a, b))
        rows = [(t.trace_id, rubric.name, rubric.rubric_hash, "pending", "provider_server", m.value.decode(), 0, ms, ms)
                for t, m, ms in ((ta, a, 1_000), (tb, b, 2_000))]  # a first: the oldest  # fmt: skip
        run(svc.sink.write_backlog(rows, "test-backlog"))
        calls = len(server.requests)
        assert run(svc.drain_backlog(limit=1)) == 0  # a: already judged, marked done, no call
        assert len(server.requests) == calls
        assert table_count(store, "judge_backlog", f"trace_id = '{ta.trace_id}' AND state = 'done' "
                           "AND reason = 'already judged'") == 1  # fmt: skip
        assert run(svc.drain_backlog(limit=1)) == 1  # b, which the stuck a held back before
        assert table_count(store, "judge_backlog", "state = 'pending'") == 0
        assert table_count(store, "judge_backlog", f"trace_id = '{tb.trace_id}' AND reason = 'judged'") == 1
        assert {v["status"] for v in verdicts(store).values()} == {"ok"} and len(verdicts(store)) == 2


def test_a_replayed_batch_records_deferrals_its_first_attempt_did_not_have(store) -> None:  # noqa: ANN001
    """The batch's backlog insert carried a token made of its messages alone: a replay whose
    deferrals differed from the first attempt's was dropped as a repeat of it. First attempt: x's
    provider fails (5xx: deferred), y's answers with a body that is not JSON (an error verdict, not
    deferred, nothing cached). The worker dies before its verdicts are stored. Replay: x is
    answered, y's provider fails. y's deferral must be recorded, or its error verdict stays for good."""
    with FakeProviderServer() as server:
        steps: dict[str, Reply | Fail | RawBody] = {"qx": Fail(500), "qy": RawBody(b"<html>gateway</html>")}

        def script(body: Any) -> Reply | Fail | RawBody:
            user = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
            return next((step for q, step in steps.items() if q in user), None) or honest_answer(body)

        server.default = Func(script)
        svc, _ = service(store, server, clock=FakeTime())
        run(svc.on_assigned([0]))
        x, y = message(1, failing=True, user="qx"), message(2, failing=True, user="qy")
        tx, ty = (judge_envelope.decode_partial(m.value)[0] for m in (x, y))
        started = run(svc.start_batch([x, y]))
        assert started.tok == message_token("j", [x, y])  # the replay's is the same
        outcomes = run(svc._finish_jobs(started.todo, started.tasks, started.tok))
        assert [o.backlog_reason is not None for o in outcomes] == [True, False]  # x deferred, y not
        assert outcomes[1].record.verdict.status == "error"
        store.command(f"TRUNCATE TABLE {store.database}.verdicts")  # as if the worker died before its verdicts
        steps.clear()
        steps["qy"] = Fail(500)  # the replay: x is answered, y's provider fails
        run(svc.handle_batch([x, y]))
        pending = {r[0] for r in store.query(f"SELECT trace_id FROM {store.database}.judge_backlog FINAL "
                                             "WHERE state = 'pending'")[1]}  # fmt: skip
        assert ty.trace_id in pending  # recorded, so it is judged again later
        assert verdicts(store)[tx.trace_id]["status"] == "ok"
