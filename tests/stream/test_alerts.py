"""On-call alerts against the real embedded ClickHouse and a local HTTP server receiving the
webhooks: a significant pass-rate drop posts once, is not re-posted, resolves once; noise and
untrusted verdicts never alert; budget thresholds, judge trust alerts, webhook retries, payloads."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace
from typing import Any

import pytest

from judges.config import parse_judging_config
from stream.alerts import AlertEngine, escape
from stream.estimate import estimate_pass_rate
from stream.http_server import QuietHTTPServer
from stream.judge_rows import ALERT_COLUMNS, CALL_COLUMNS
from stream.store import ClickHouseStore
from tests.stream.judging_support import FakeTime, config

NOW = 1_800_000_000.0
HOUR = 3600.0
H = "c" * 64
HOSTILE = "<!channel> see <http://evil.example|the fix> & ```" + "x" * 1000
_LOOP = asyncio.new_event_loop()


def run(coro: Any) -> Any:
    return _LOOP.run_until_complete(coro)


class Receiver:
    """A webhook endpoint on a local port: records every POST, answers scripted statuses (then 200)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.statuses: deque[int] = deque()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                receiver.posts.append(body)
                status = receiver.statuses.popleft() if receiver.statuses else 200
                payload = b"ok" if status == 200 else b"server_error"
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/T000/B000"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def engine(store: ClickHouseStore, hook: Receiver, clock: FakeTime, **alerts: Any) -> tuple[AlertEngine, list[float]]:
    spec = {"webhook_url": hook.url, "dashboard_base_url": "https://tj.example.com/", "interval_s": 0, **alerts}
    budget = spec.pop("budget", {})
    cfg = parse_judging_config(config(SimpleNamespace(url="http://127.0.0.1:9"), alerts=spec, budget=budget))
    delays: list[float] = []

    async def sleep(s: float) -> None:
        delays.append(s)

    return AlertEngine(store, cfg, clock=clock, sleep=sleep, env={}), delays


# ---- seeding: traces with their sampling decision, and verdicts of them ---------------------------
_SEQ = iter(range(1, 10**9))
TRACE_COLS = ["trace_id", "sample_class", "sample_stratum", "inclusion_p", "sampled", "start_time", "end_time",
              "first_seen", "last_seen", "completed_at"]  # fmt: skip
VERDICT_COLS = ["trace_id", "judge", "rubric_hash", "status", "label", "explanation", "monitoring_only", "quarantined",
                "sample_class", "sample_stratum", "inclusion_p", "judged_at", "version"]  # fmt: skip


def traffic(store: ClickHouseStore, at: float, *, failures: int, failures_passing: int, successes: int,
            judge: str = "task_completion", quarantined: bool = False, explanation: str = "the tool failed") -> None:  # fmt: skip
    """``failures`` suspected failures (p = 1, all judged, ``failures_passing`` pass) and ``successes``
    successes (p = 0.1, every 10th judged, all pass), completed at ``at``."""
    batch = next(_SEQ)
    traces, verdicts = [], []
    ms = int(at * 1000)
    for i in range(failures + successes):
        tid = f"{batch:08x}{i:024x}"
        failure = i < failures
        stratum, p = ("suspected_failure", 1.0) if failure else ("success:base", 0.1)
        judged = failure or i % 10 == 0
        traces.append([tid, stratum.split(":")[0], stratum, p, int(judged), ms * 10**6, ms * 10**6, ms, ms, ms])
        if judged:
            passed = (i < failures_passing) if failure else True
            verdicts.append([tid, judge, H, "ok", "pass" if passed else "fail", "fine" if passed else explanation,
                             0, int(quarantined), stratum.split(":")[0], stratum, p, ms + 1000, 4])  # fmt: skip
    store.insert("traces", traces, TRACE_COLS)
    store.insert("verdicts", verdicts, VERDICT_COLS)


def states(store: ClickHouseStore) -> dict[str, tuple[Any, ...]]:
    _, rows = store.query(f"SELECT alert_key, state, severity, notifications, seq FROM {store.database}.alert_state FINAL")
    return {r[0]: tuple(r[1:]) for r in rows}


def state_rows(store: ClickHouseStore) -> int:
    store.command(f"OPTIMIZE TABLE {store.database}.alert_state FINAL")
    return int(store.query(f"SELECT count() FROM {store.database}.alert_state")[1][0][0])


def spend(store: ClickHouseStore, usd: float, at: float, judge: str = "task_completion", purpose: str = "live") -> None:
    n = next(_SEQ)
    row = (f"call{n}", int(at * 1000), int(at // 86400), f"{n:032x}", judge, "1", H, "cheap", purpose, "fake", "m",
           "m", "ok", "", 1000, 100, usd, 0.1, 1, 0, "w", f"ih{n}", "")  # fmt: skip
    store.insert("judge_calls", [row], CALL_COLUMNS)


def text_of(post: dict[str, Any]) -> str:
    return json.dumps(post, ensure_ascii=False)


# ---- (1) pass rate ---------------------------------------------------------------------------------
def test_a_significant_drop_posts_once_and_its_recovery_once(store: ClickHouseStore) -> None:
    clock = FakeTime(NOW)
    traffic(store, NOW - 12 * HOUR, failures=100, failures_passing=90, successes=300)  # baseline: 97.5 %
    traffic(store, NOW - HOUR / 2, failures=100, failures_passing=30, successes=300, explanation=HOSTILE)  # now: 82.5 %
    with Receiver() as hook:
        eng, _ = engine(store, hook, clock)
        events = run(eng.tick())
        assert [(e["key"], e["event"], e["posted"]) for e in events] == [("pass_rate:task_completion", "firing", True)]
        assert len(hook.posts) == 1
        post = hook.posts[0]
        assert "task_completion pass rate dropped to 82.5% from 97.5%" in post["text"]
        body = text_of(post)
        assert "<https://tj.example.com/dashboard|dashboard>" in body
        assert "<https://tj.example.com/dashboard/trace/" in body  # failing examples link to their traces
        assert "<!channel>" not in body and "<http://evil.example" not in body and "&lt;!channel&gt;" in body
        assert all(len(b["text"]["text"]) <= 3000 for b in post["blocks"] if b["type"] == "section")
        details = json.loads(store.query(f"SELECT details FROM {store.database}.alert_state FINAL")[1][0][0])
        assert details["current"]["ci_high"] < details["baseline"]["ci_low"]
        assert details["current"]["n_judged"] == 130 and details["current"]["n_population"] == 400

        clock.t += 60
        assert run(eng.tick()) == [] and len(hook.posts) == 1  # still firing: no storm

        clock.t += 2 * HOUR  # a good hour: the pass rate is back within the baseline
        traffic(store, clock.t - HOUR / 2, failures=100, failures_passing=90, successes=300)
        events = run(eng.tick())
        assert [(e["key"], e["event"]) for e in events] == [("pass_rate:task_completion", "resolved")]
        assert len(hook.posts) == 2 and hook.posts[1]["text"].startswith("[RESOLVED]")
        clock.t += 60
        assert run(eng.tick()) == [] and len(hook.posts) == 2
    assert states(store)["pass_rate:task_completion"] == ("resolved", 1, 2, 2)


def test_a_firing_alert_is_reposted_at_most_every_cooldown(store: ClickHouseStore) -> None:
    clock = FakeTime(NOW)
    traffic(store, NOW - 12 * HOUR, failures=100, failures_passing=90, successes=300)
    traffic(store, NOW - 10, failures=100, failures_passing=30, successes=300)
    with Receiver() as hook:
        eng, _ = engine(store, hook, clock, cooldown_s=1200)
        events = [e["event"] for t in (0, 600, 600, 300, 300) if not setattr(clock, "t", clock.t + t) for e in run(eng.tick())]
    assert events == ["firing", "reminder"]  # at 0 and 1200 s; nothing at 600, 1500, 1800
    assert [p["text"].split("]")[0] for p in hook.posts] == ["[FIRING", "[STILL FIRING"]


@pytest.mark.parametrize("case", ["few_samples", "overlapping_intervals", "quarantined_judge"])
def test_point_noise_and_untrusted_verdicts_never_alert(store: ClickHouseStore, case: str) -> None:
    traffic(store, NOW - 12 * HOUR, failures=100, failures_passing=90, successes=300)
    if case == "few_samples":  # 0 of 5 failures pass, but only 15 judged traces (min_samples 30)
        traffic(store, NOW - 600, failures=5, failures_passing=0, successes=100)
    elif case == "overlapping_intervals":  # 85 % vs 90 % of the failures: a dip inside the noise
        traffic(store, NOW - 600, failures=100, failures_passing=85, successes=300)
    else:  # a real drop, but seen only by a quarantined judge version
        traffic(store, NOW - 600, failures=100, failures_passing=10, successes=300, quarantined=True)
    with Receiver() as hook:
        eng, _ = engine(store, hook, FakeTime(NOW))
        assert run(eng.tick()) == []
        assert hook.posts == [] and states(store) == {}
    if case == "overlapping_intervals":
        cur = _estimate(store, NOW - HOUR, NOW)
        base = _estimate(store, NOW - 25 * HOUR, NOW - HOUR)
        assert cur.rate < base.rate and cur.ci_high >= base.ci_low  # lower, but not significantly


def _estimate(store: ClickHouseStore, a: float, b: float) -> Any:
    db = store.database
    w = f"completed_at >= fromUnixTimestamp64Milli({int(a * 1000)}) AND completed_at < fromUnixTimestamp64Milli({int(b * 1000)})"
    _, pop = store.query(f"SELECT sample_stratum, count() FROM {db}.traces FINAL WHERE {w} GROUP BY 1")
    _, rows = store.query(f"SELECT v.label = 'pass', t.inclusion_p, t.sample_stratum FROM {db}.verdicts AS v FINAL "
                          f"INNER JOIN (SELECT * FROM {db}.traces FINAL WHERE {w}) AS t ON v.trace_id = t.trace_id")  # fmt: skip
    return estimate_pass_rate([(bool(r[0]), float(r[1]), str(r[2])) for r in rows], "poststratified", 0.95, dict(pop))


# ---- (2) budget --------------------------------------------------------------------------------------
def test_budget_thresholds_post_once_each_and_resolve_in_the_next_period(store: ClickHouseStore) -> None:
    clock = FakeTime(NOW)
    spend(store, 0.50, NOW - 100)
    spend(store, 0.35, NOW - 50, purpose="backfill")
    spend(store, 5.00, NOW - 86400)  # the previous period does not count
    with Receiver() as hook:
        eng, _ = engine(store, hook, clock, budget={"global_usd": 1.0})
        assert [(e["key"], e["event"]) for e in run(eng.tick())] == [("budget:global", "firing")]
        assert "80%" in hook.posts[0]["text"] and "$0.8500" in text_of(hook.posts[0])
        clock.t += 60
        assert run(eng.tick()) == []
        spend(store, 0.20, clock.t - 1)
        assert [(e["key"], e["event"]) for e in run(eng.tick())] == [("budget:global", "firing")]
        assert "100%" in hook.posts[1]["text"]
        clock.t += 60
        assert run(eng.tick()) == [] and len(hook.posts) == 2
        clock.t = (NOW // 86400 + 1) * 86400 + 10  # a new budget period
        assert [(e["key"], e["event"]) for e in run(eng.tick())] == [("budget:global", "resolved")]
    assert len(hook.posts) == 3 and states(store)["budget:global"][:2] == ("resolved", 2)


# ---- (3) judge trust alerts ---------------------------------------------------------------------------
def test_quarantine_and_pause_rows_post_once_and_a_pause_resolves_when_calls_succeed(store: ClickHouseStore) -> None:
    clock = FakeTime(NOW)
    rows = [("a1", "quarantine", "task_completion", H, "firing", "judge task_completion quarantined", "{}", int((NOW - 60) * 1000)),
            ("a2", "paused", "groundedness", H, "firing", "provider fake paused: provider_config: HTTP 401", "{}",
             int((NOW - 30) * 1000)),
            ("a3", "drift", "old_judge", H, "firing", "drifted long ago", "{}", int((NOW - 3 * 86400) * 1000))]  # fmt: skip
    store.insert("judge_alerts", rows, ALERT_COLUMNS)
    with Receiver() as hook:
        eng, _ = engine(store, hook, clock)
        got = sorted((e["key"], e["event"]) for e in run(eng.tick()))
        assert got == [("paused:groundedness:cccccccccccc", "firing"), ("quarantine:task_completion:cccccccccccc", "firing")]
        clock.t += 60
        assert run(eng.tick()) == [] and len(hook.posts) == 2
        # the same pause raised again later: same alert, no new post
        store.insert("judge_alerts", [("a4", "paused", "groundedness", H, "firing", "provider fake paused: again", "{}",
                                       int(clock.t * 1000))], ALERT_COLUMNS)  # fmt: skip
        clock.t += 60
        assert run(eng.tick()) == []
        spend(store, 0.002, clock.t - 1, judge="groundedness")  # the key was fixed: an ok call
        assert [(e["key"], e["event"]) for e in run(eng.tick())] == [("paused:groundedness:cccccccccccc", "resolved")]
        clock.t += 60
        assert run(eng.tick()) == [] and len(hook.posts) == 3


# ---- delivery ------------------------------------------------------------------------------------------
def test_webhook_500_then_success_is_retried_and_recorded_once(store: ClickHouseStore) -> None:
    clock = FakeTime(NOW)
    spend(store, 0.9, NOW - 10)
    with Receiver() as hook:
        eng, delays = engine(store, hook, clock, budget={"global_usd": 1.0}, webhook_max_attempts=3, webhook_backoff_s=0.5)
        hook.statuses.extend([500])
        [event] = run(eng.tick())
        assert event["posted"] and len(hook.posts) == 2 and hook.posts[0] == hook.posts[1] and delays == [0.5]
        assert states(store)["budget:global"] == ("firing", 1, 1, 1) and state_rows(store) == 1

        spend(store, 0.2, clock.t - 1)  # crosses 100 %: the webhook is down for all three attempts
        hook.statuses.extend([503, 502, 500])
        clock.t += 60
        [event] = run(eng.tick())
        assert not event["posted"] and "after 3 attempts" in event["error"] and len(hook.posts) == 5
        assert states(store)["budget:global"] == ("firing", 1, 1, 1)  # unchanged: not delivered
        clock.t += 60
        [event] = run(eng.tick())  # delivered at the next tick, once
        assert event["posted"] and event["event"] == "firing" and len(hook.posts) == 6
        assert states(store)["budget:global"] == ("firing", 2, 2, 2) and state_rows(store) == 1

        hook.statuses.extend([404])  # a refused webhook (e.g. revoked) is not retried
        clock.t = (NOW // 86400 + 1) * 86400
        [event] = run(eng.tick())
        assert not event["posted"] and "refused" in event["error"] and len(hook.posts) == 7


def test_ticks_are_throttled_to_the_interval(store: ClickHouseStore) -> None:
    clock = FakeTime(NOW)
    with Receiver() as hook:
        eng, _ = engine(store, hook, clock, interval_s=60, budget={"global_usd": 1.0})
        assert run(eng.tick()) == []
        spend(store, 0.9, NOW)
        clock.t += 30
        assert run(eng.tick()) == []  # not evaluated yet
        clock.t += 30
        assert [e["event"] for e in run(eng.tick())] == ["firing"]


def test_escape_neutralizes_mentions_links_and_control_characters() -> None:
    out = escape("a\n<!here>\x00 <@U123> & <https://x|y>" + "z" * 500, limit=40)
    assert "<" not in out and ">" not in out and "\n" not in out and "\x00" not in out
    assert out.startswith("a &lt;!here&gt; &lt;@U123&gt; &amp;") and out.endswith("…")
