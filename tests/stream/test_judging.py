"""The judging runtime against a local provider server over real HTTP and the real embedded
ClickHouse: verdicts and ledger rows, replay without re-judging, cache, cascade, provider faults,
paused judges, flake quarantine, drift and calibration. The budget's tests are in
test_judging_budget.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from stream import dlq
from stream.dlq import InMessage
from tests.judges.fake_provider import Fail, FakeProviderServer, Hang, RawBody, Reply
from tests.stream.judging_support import (
    CHEAP,
    STRONG,
    honest,
    ledger,
    message,
    run,
    service,
    table_count,
    verdict_rows,
    verdicts,
)

pytestmark = pytest.mark.usefixtures("closes_services")


def test_verdicts_and_ledger_rows_for_a_batch(store) -> None:  # noqa: ANN001
    with FakeProviderServer() as server:
        server.default = honest()
        svc, sent = service(store, server)
        msgs = [message(i, failing=i % 2 == 0) for i in range(6)]
        garbage = InMessage("traces.to_judge", 0, 99, b"k", b"{not json")
        run(svc.handle_batch([*msgs, garbage]))
        got = verdicts(store)
        assert len(got) == 6
        for i, m in enumerate(msgs):
            v = got[m.key.decode()]
            assert v["status"] == "ok"
            assert v["label"] == ("fail" if i % 2 == 0 else "pass")
            assert v["tier"] == "cheap" and v["tiers_called"] == ["cheap"] and v["escalated"] == 0
            assert v["model"] == CHEAP and v["model_reported"] == CHEAP + "-2025-01-01"
            assert v["cost_usd"] == 0.002 and v["input_tokens"] == 1000
            assert v["sample_class"] == "suspected_failure" and v["inclusion_p"] == 1.0
            assert v["kafka_offset"] == i and v["purpose"] == "live"
        calls = ledger(store)
        assert len(calls) == len(server.requests) == 6
        assert {c["trace_id"] for c in calls} == {m.key.decode() for m in msgs}
        assert all(c["purpose"] == "live" and c["cost_usd"] == 0.002 and c["status"] == "ok" for c in calls)
        assert len(sent) == 1 and sent[0].topic == "traces.to_judge.dlq"
        headers = dict(sent[0].headers)
        assert headers[dlq.REASON] == b"undecodable_to_judge" and headers[dlq.SOURCE_OFFSET] == b"99"


def test_replayed_batch_is_not_judged_or_paid_again(store) -> None:  # noqa: ANN001
    with FakeProviderServer() as server:
        server.default = honest()
        svc, _ = service(store, server)
        msgs = [message(i, failing=i == 0) for i in range(4)]
        run(svc.handle_batch(msgs))
        assert len(server.requests) == 4
        svc2, _ = service(store, server)  # a restarted worker replaying the uncommitted batch
        run(svc2.handle_batch(msgs))
        assert len(server.requests) == 4
        assert svc2.counters["replay_skipped"] == 4
        assert verdict_rows(store) == 4 and len(ledger(store)) == 4


def test_identical_input_is_served_from_the_cache(store) -> None:  # noqa: ANN001
    with FakeProviderServer() as server:
        server.default = honest()
        svc, _ = service(store, server)
        run(svc.handle_batch([message(1, failing=True)]))
        # another trace (other id) with the same content: same canonical input
        svc2, _ = service(store, server)  # a fresh process: the hit comes from the ledger in ClickHouse
        run(svc2.handle_batch([message(2, failing=True, offset=5)]))
        assert len(server.requests) == 1
        got = verdicts(store)
        assert len(got) == 2
        hit = [v for v in got.values() if v["cache_hit"] == 1]
        assert len(hit) == 1 and hit[0]["label"] == "fail" and hit[0]["cost_usd"] == 0.0
        assert hit[0]["input_hash"] == [v for v in got.values() if v["cache_hit"] == 0][0]["input_hash"]
        assert len(ledger(store)) == 1  # a cache hit is not a paid call


def test_low_confidence_escalates_and_both_calls_are_recorded(store) -> None:  # noqa: ANN001
    with FakeProviderServer() as server:
        server.default = honest()
        svc, _ = service(store, server)
        unsure, sure = message(1, failing=False, user="maybe my order is lost?"), message(2, failing=False)
        run(svc.handle_batch([unsure, sure]))
        got = verdicts(store)
        v = got[unsure.key.decode()]
        assert v["tiers_called"] == ["cheap", "strong"] and v["escalated"] == 1
        assert v["escalation"] == "low_confidence" and v["tier"] == "strong" and v["model"] == STRONG
        assert v["cost_usd"] == 0.004 and v["score"] == 0.95
        assert got[sure.key.decode()]["tiers_called"] == ["cheap"]
        models = sorted(c["model"] for c in ledger(store) if c["trace_id"] == unsure.key.decode())
        assert models == [CHEAP, STRONG]


def test_required_classes_always_get_the_strong_tier(store) -> None:  # noqa: ANN001
    with FakeProviderServer() as server:
        server.default = honest()
        svc, _ = service(store, server, cascade={"always_strong_for": {"sample_classes": ["suspected_failure"]}})
        run(svc.handle_batch([message(1, failing=True), message(2, failing=False, cls="success")]))
        got = verdicts(store)
        assert [v["escalation"] for v in got.values() if v["sample_class"] == "suspected_failure"] == ["required"]
        assert [v["tiers_called"] for v in got.values() if v["sample_class"] == "success"] == [["cheap"]]


def test_retry_after_then_success(store) -> None:  # noqa: ANN001
    with FakeProviderServer() as server:
        server.script(Fail(429, retry_after="0.2"), Fail(503))
        server.default = honest()
        svc, _ = service(store, server)
        run(svc.handle_batch([message(1, failing=True)]))
        (v,) = verdicts(store).values()
        assert v["status"] == "ok" and v["label"] == "fail" and v["attempts"] == 3
        assert server.requests[1].arrived_at - server.requests[0].arrived_at >= 0.2


def test_bad_provider_output_is_never_a_label(store) -> None:  # noqa: ANN001
    with FakeProviderServer() as server:
        server.default = RawBody(b"<html>oops</html>", content_type="text/html")  # not an API response
        svc, _ = service(store, server, cascade={"escalate_on_failure": False})
        run(svc.handle_batch([message(1, failing=True)]))
        # valid JSON that violates the output contract
        server.default = Reply(text=json.dumps({"label": "maybe", "score": 3, "explanation": "x"}))
        run(svc.handle_batch([message(2, failing=True, user="other", offset=2)]))
        got = verdicts(store)
        assert sorted(v["status"] for v in got.values()) == ["error", "unscored"]
        assert all(v["label"] is None and v["score"] is None for v in got.values())
        unscored = [v for v in got.values() if v["status"] == "unscored"][0]
        assert unscored["status_reason"].startswith("invalid_output")


def test_hanging_provider_gives_an_error_verdict_and_a_backlog_entry(store) -> None:  # noqa: ANN001
    with FakeProviderServer() as server:
        server.default = Hang(5.0)
        svc, _ = service(store, server, providers=[{
            "name": "fake", "type": "openai", "base_url": server.url + "/v1", "api_key_env": "FAKE_OPENAI_KEY",
            "timeout_s": 0.2, "max_attempts": 2, "deadline_s": 1.0, "backoff_base_s": 0.01}])  # fmt: skip
        run(svc.handle_batch([message(1, failing=True)]))
        (v,) = verdicts(store).values()
        assert v["status"] == "error" and v["label"] is None
        assert v["status_reason"].startswith("provider_timeout")
        assert table_count(store, "judge_backlog", "state = 'pending'") == 1


def test_config_error_pauses_the_judge_without_retries(store) -> None:  # noqa: ANN001
    with FakeProviderServer() as server:
        server.default = Fail(401, message="invalid api key")
        svc, _ = service(store, server)
        run(svc.handle_batch([message(i, failing=True) for i in range(5)]))
        # concurrent calls may all start before the first 401 returns, but none is retried and the
        # next batch makes no call at all
        first = len(server.requests)
        assert 1 <= first <= 5
        run(svc.handle_batch([message(10 + i, failing=True, user=f"u{i}") for i in range(3)]))
        assert len(server.requests) == first
        got = verdicts(store)
        assert len(got) == 8 and all(v["status"] == "error" and v["label"] is None for v in got.values())
        assert sum(v["status_reason"].startswith("judge_paused") for v in got.values()) >= 3
        assert table_count(store, "judge_backlog", "state = 'pending'") == 8
        assert table_count(store, "judge_alerts", "kind = 'paused'") == 1
        assert svc.status()["paused"]


def test_flaky_judge_is_quarantined_when_the_provider_turns_flaky(store) -> None:  # noqa: ANN001
    flips = iter(range(10**6))

    def coin(body):  # noqa: ANN001, ANN202 - every other answer flips the label
        label = "pass" if next(flips) % 2 else "fail"
        return Reply(text=json.dumps({"label": label, "score": 0.9 if label == "pass" else 0.1,
                                      "explanation": "coin", "evidence": []}))  # fmt: skip

    from tests.judges.fake_provider import Func

    with FakeProviderServer() as server:
        server.default = honest(unsure_cheap=False)  # consistent at first
        svc, _ = service(store, server, flake={"fraction": 1.0, "min_pairs": 5, "max_disagreement": 0.2},
                         max_in_flight=1, cache=False)  # fmt: skip
        for i in range(6):
            run(svc.handle_batch([message(i, failing=True, user=f"q{i}")]))
        assert table_count(store, "judge_rejudges", "agree = 1") == 6
        assert table_count(store, "judge_alerts", "kind = 'quarantine'") == 0
        server.default = Func(coin)  # the provider's behaviour changes mid-test
        for i in range(6, 12):
            run(svc.handle_batch([message(i, failing=True, user=f"q{i}")]))
        assert table_count(store, "judge_alerts", "kind = 'quarantine'") == 1
        assert table_count(store, "judge_rejudges") == 12
        got = verdicts(store)
        assert got[message(0, failing=True).key.decode()]["quarantined"] == 0
        assert got[message(11, failing=True).key.decode()]["quarantined"] == 1
        assert sum(c["purpose"] == "flake" for c in ledger(store)) == 12
        assert svc.flake.quarantined("task_completion", svc.runner.judges["task_completion"]["cheap"].rubric.rubric_hash)


def _golden(tmp_path, n: int = 20):  # noqa: ANN001, ANN202
    from judges.calibration import golden_line
    from stream import judge_envelope

    lines = []
    for i in range(n):
        m = message(100 + i, failing=i % 2 == 0, user=f"golden {i}")
        trace, meta = judge_envelope.decode(m.value)
        lines.append(golden_line(f"case-{i}", "fail" if i % 2 == 0 else "pass", trace, meta))
    path = tmp_path / "reference.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_drift_alarm_fires_when_the_provider_changes_behaviour(store, tmp_path) -> None:  # noqa: ANN001
    ref = _golden(tmp_path)
    with FakeProviderServer() as server:
        server.default = honest(unsure_cheap=False)
        svc, _ = service(store, server, drift={"reference_sets": {"task_completion": str(ref)}, "max_drop": 0.1})
        run(svc.on_assigned([0]))
        assert run(svc.check_drift()) == []  # the first run is the baseline
        assert table_count(store, "judge_calibrations", "kind = 'drift'") == 2  # cheap and strong
        # the "pinned" model silently changes: now it passes everything
        server.default = Reply(text=json.dumps({"label": "pass", "score": 0.9, "explanation": "ok", "evidence": []}))
        alerts = run(svc.check_drift())
        assert len(alerts) == 2 and all("drifted" in a for a in alerts)
        assert table_count(store, "judge_alerts", "kind = 'drift'") == 2
        assert sum(c["purpose"] == "drift" for c in ledger(store)) == 80  # 2 runs x 2 tiers x 20 cases


def test_judge_below_its_calibration_floor_is_monitoring_only(store, tmp_path) -> None:  # noqa: ANN001
    from judges.calibration import load_golden
    from stream.calibrate_cli import acalibrate

    ref = _golden(tmp_path)
    with FakeProviderServer() as server:
        # a judge that answers pass to everything: kappa 0 on the golden set
        server.default = Reply(text=json.dumps({"label": "pass", "score": 0.9, "explanation": "ok", "evidence": []}))
        svc, _ = service(store, server, calibration={"min_kappa": {"task_completion": 0.6}})
        run(acalibrate(svc.cfg, "task_completion", load_golden(ref), store, providers=svc.providers))
        svc2, _ = service(store, server, calibration={"min_kappa": {"task_completion": 0.6}})
        run(svc2.start())
        run(svc2.handle_batch([message(1, failing=True)]))
        (v,) = verdicts(store).values()
        assert v["status"] == "ok" and v["monitoring_only"] == 1
        assert svc2.status()["monitoring_only"] == ["task_completion"]


def test_the_next_batch_is_judged_while_one_finishes_and_verdicts_wait_for_finish(store) -> None:  # noqa: ANN001
    async def scenario(svc, server) -> list[int]:  # noqa: ANN001
        first = await svc.start_batch([message(i, failing=i == 0, user=f"q{i}") for i in range(3)])
        second = await svc.start_batch([message(i, failing=False, user=f"q{i}") for i in range(3, 5)])
        for _ in range(500):  # both batches' calls reach the provider before either is finished
            if len(server.requests) == 5:
                break
            await asyncio.sleep(0.01)
        seen = [len(server.requests), verdict_rows(store)]
        await svc.finish_batch(first)
        seen.append(verdict_rows(store))
        await svc.finish_batch(second)
        return [*seen, verdict_rows(store)]

    with FakeProviderServer() as server:
        server.default = honest()
        svc, _ = service(store, server)
        assert run(scenario(svc, server)) == [5, 0, 3, 5]
        assert len(ledger(store)) == 5


def test_the_app_closes_the_providers_connection_pools_at_shutdown(store) -> None:  # noqa: ANN001
    """After the agents have stopped (mode's ``on_shutdown``), the judge's providers are closed."""
    import faust

    from stream.app import add_judge_agent
    from stream.config import Settings

    with FakeProviderServer() as server:
        server.default = honest()
        svc, _ = service(store, server)
        run(svc.handle_batch([message(1, failing=True)]))
        clients = [p._client for p in svc.providers.values()]  # noqa: SLF001
        assert clients and not any(c.is_closed for c in clients)
        app = faust.App("shutdown-test", broker="kafka://127.0.0.1:1")
        add_judge_agent(app, Settings(), svc, consume=None)
        run(app.on_shutdown())
        assert all(c.is_closed for c in clients)
