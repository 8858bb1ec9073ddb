"""The judging runtime under its dollar budget, against a local provider server over real HTTP and
the real embedded ClickHouse: failures deferred to the backlog and judged in the next period,
concurrent calls within the budget, the degradation ladder, a partition's spend moving with it."""

from __future__ import annotations

import pytest

from tests.judges.fake_provider import FakeProviderServer
from tests.stream.judging_support import FakeTime, honest, ledger, message, run, service, table_count, verdict_rows, verdicts

pytestmark = pytest.mark.usefixtures("closes_services")


def test_deferred_failures_are_judged_when_the_next_period_starts(store) -> None:  # noqa: ANN001
    clock = FakeTime()
    with FakeProviderServer() as server:
        server.default = honest()
        # $0.0095 per period; a call costs $0.002 but reserves its ~$0.0058 upper estimate: two fit
        svc, _ = service(store, server, clock=clock, budget={"global_usd": 0.0095, "stop_success_at": 1.0,
                                                             "cheap_only_at": 1.0})  # fmt: skip
        run(svc.on_assigned([0]))
        for i in range(4):
            run(svc.handle_batch([message(i, failing=True, user=f"q{i}")]))
        got = verdicts(store)
        assert sorted(v["status"] for v in got.values()) == ["budget_skipped", "budget_skipped", "ok", "ok"]
        assert table_count(store, "judge_backlog", "state = 'pending'") == 2
        assert sum(c["cost_usd"] for c in ledger(store)) <= 0.0095
        assert run(svc.drain_backlog()) == 0  # same period: still no budget
        clock.t += 86400
        # drained under the new period's budget too: two reservations of ~$0.0058 do not both fit
        assert run(svc.drain_backlog()) == 1
        assert table_count(store, "judge_backlog", "state = 'pending'") == 1
        clock.t += 86400
        assert run(svc.drain_backlog()) == 1
        got = verdicts(store)
        assert sorted(v["status"] for v in got.values()) == ["ok"] * 4
        assert sorted(v["purpose"] for v in got.values()) == ["backlog", "backlog", "live", "live"]
        assert table_count(store, "judge_backlog", "state = 'pending'") == 0
        assert verdict_rows(store) == 4


def test_concurrent_calls_never_exceed_the_budget(store) -> None:  # noqa: ANN001
    with FakeProviderServer() as server:
        server.default = honest()
        svc, _ = service(store, server, max_in_flight=8, budget={"global_usd": 0.05})
        run(svc.on_assigned([0]))
        run(svc.handle_batch([message(i, failing=True, user=f"q{i}") for i in range(40)]))
        spent = sum(c["cost_usd"] for c in ledger(store))
        got = verdicts(store)
        statuses = [v["status"] for v in got.values()]
        print(f"\nbudget $0.05, 40 concurrent failures: spent ${spent:.4f}, "
              f"{statuses.count('ok')} judged, {statuses.count('budget_skipped')} deferred")  # fmt: skip
        assert len(got) == 40 and spent <= 0.05 + 1e-12
        assert statuses.count("ok") == len(server.requests) == round(spent / 0.002)
        assert statuses.count("budget_skipped") == table_count(store, "judge_backlog", "state = 'pending'") > 0


def test_degradation_ladder_order(store) -> None:  # noqa: ANN001
    """As the share is used up: success samples stop first, then escalation, then failures are deferred."""
    with FakeProviderServer() as server:
        server.default = honest()
        svc, _ = service(store, server, budget={"global_usd": 0.03, "stop_success_at": 0.3, "cheap_only_at": 0.6})
        run(svc.on_assigned([0]))
        events = []
        for i in range(30):
            success = i % 2 == 0
            m = message(i, failing=False, cls="success" if success else "suspected_failure",
                        user=f"maybe q{i}")  # fmt: skip  - every cheap verdict is unsure: escalates when allowed
            run(svc.handle_batch([m]))
            v = verdicts(store)[m.key.decode()]
            events.append((success, v["status"], len(v["tiers_called"])))
        first = lambda pred: next(i for i, e in enumerate(events) if pred(e))  # noqa: E731
        success_stopped = first(lambda e: e[0] and e[1] == "budget_skipped")
        no_escalation = first(lambda e: not e[0] and e[1] == "ok" and e[2] == 1)
        deferred = first(lambda e: not e[0] and e[1] == "budget_skipped")
        assert 0 < success_stopped < no_escalation < deferred
        # each step holds once reached
        assert all(e[1] == "budget_skipped" for e in events[success_stopped:] if e[0])
        assert all(e[2] <= 1 for e in events[no_escalation:] if not e[0])
        assert all(e[1] == "budget_skipped" for e in events[deferred:] if not e[0])
        assert sum(c["cost_usd"] for c in ledger(store)) <= 0.03
        skipped_success = table_count(store, "verdicts", "sample_class = 'success' AND status = 'budget_skipped'")
        assert skipped_success > 0
        # only failures are deferred to the backlog; every skipped trace has its verdict row
        assert table_count(store, "judge_backlog") == sum(1 for e in events if not e[0] and e[1] == "budget_skipped")
        assert table_count(store, "verdicts") == 30


def test_a_partitions_spend_moves_with_it_to_another_worker(store) -> None:  # noqa: ANN001
    """No shared lock: each partition owns budget / partitions; the new owner reads the ledger."""
    with FakeProviderServer() as server:
        server.default = honest()
        budget = {"global_usd": 0.04, "stop_success_at": 1.0, "cheap_only_at": 1.0}  # $0.02 per partition
        a, _ = service(store, server, partitions=2, budget=budget)
        b, _ = service(store, server, partitions=2, budget=budget)
        run(a.on_assigned([0, 1]))
        run(b.on_assigned([]))
        for i in range(4):
            run(a.handle_batch([message(i, failing=True, user=f"a{i}", partition=0)]))
        spent_a = a.budget.spent(0)
        assert spent_a == 0.008 and len(server.requests) == 4
        run(a.on_revoked([0]))  # rebalance: partition 0 moves to b
        run(b.on_assigned([0]))
        assert b.budget.spent(0) == spent_a
        for i in range(4, 12):
            run(b.handle_batch([message(i, failing=True, user=f"b{i}", partition=0)]))
        on_p0 = sum(c["cost_usd"] for c in ledger(store) if c["kafka_partition"] == 0)
        assert on_p0 <= 0.02 + 1e-12
        assert table_count(store, "verdicts", "status = 'budget_skipped'") > 0
