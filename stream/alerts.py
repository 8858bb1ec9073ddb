"""On-call alerts: evaluated on a schedule (:meth:`AlertEngine.tick`), posted to a Slack-compatible
webhook, deduplicated through ClickHouse (``alert_state``, ``schemas/sql/0007_alerts.sql``).

Conditions, each under one alert key:

* ``pass_rate:<judge>`` — the judge's estimated pass rate over ALL traffic dropped significantly
  against its trailing baseline. Both windows are estimated with :mod:`stream.estimate` (default
  post-stratified; ok verdicts of the judge's newest version in the current window, minus
  ``monitoring_only`` and ``quarantined`` ones, joined with the traces' recorded ``inclusion_p`` /
  ``sample_stratum``; per-stratum populations = traces completed in that window). Windows are by
  trace ``completed_at``: current = the last ``current_window_s``, baseline = the
  ``baseline_window_s`` before it. It fires only when both windows have ``min_samples`` judged
  traces and the intervals do not overlap — current CI upper bound < baseline CI lower bound (at
  ``confidence``; non-overlap of two 95 % intervals is a conservative test, roughly p < 0.01 for
  equal widths) — and the drop is at least ``min_drop``. It clears (hysteresis) only when the
  current point estimate is back above the baseline's lower bound; in between, or with too few
  samples, the state is kept as it is (no post, no reminder).
* ``budget:global`` / ``budget:judge:<name>`` — judge spend in the current budget period (every
  ``judge_calls`` row: live, backlog, flake, drift, calibration, backfill) against
  ``budget.global_usd`` / ``budget.per_judge_usd``; the severity is the number of
  ``budget_thresholds`` crossed, so crossing 0.8 posts once and crossing 1.0 posts again. A new
  period (spend below the first threshold) resolves it.
* ``<kind>:<judge>:<rubric hash[:12]>`` for ``judge_alerts`` rows of kind drift / quarantine /
  paused created within ``judge_alert_lookback_s``: firing while the newest row is ``firing``.
  A ``paused`` alert clears when its provider (or, failing that, the judge) has an ok call after
  it; any kind clears on a newer ``resolved`` row.

Dedup: a transition to firing (or to a higher severity) is posted once, a still-firing alert is
re-posted at most every ``cooldown_s``, and a cleared one is posted "resolved" once. The state
row is written only after the webhook accepted the post (bounded retries with backoff on
timeouts, 429 and 5xx); a post that failed is tried again at the next tick. So delivery is at
least once: a post whose response was lost is repeated. Run one engine per deployment (for
example on the worker owning to_judge partition 0, like drift checks): two engines on the same
database would both post.

Trace-derived text (verdict explanations) is stripped of control characters, cut to a bound and
escaped for Slack mrkdwn (``&``, ``<``, ``>``; backticks become ``'``), so it can neither mention
``@channel``, forge a link nor open a code block; trace links are built only from 32-hex ids.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from judges.config import AlertsSpec, JudgingConfig
from stream.alert_webhook import WebhookSender
from stream.estimate import Estimate, estimate_pass_rate
from stream.store import ClickHouseStore

log = logging.getLogger(__name__)

Sender = Callable[[dict[str, Any]], Awaitable[None]]
STATE_COLUMNS = (
    "alert_key", "kind", "state", "severity", "message", "details", "first_fired_at", "last_notified_at",
    "notifications", "updated_at", "seq",
)  # fmt: skip
JUDGE_ALERT_KINDS = ("drift", "quarantine", "paused")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_PROVIDER = re.compile(r"^provider (\S+) paused:")


async def _log_only(payload: dict[str, Any]) -> None:
    log.warning("ALERT (no webhook configured): %s", payload.get("text", ""))


@dataclass
class Condition:
    key: str
    kind: str
    active: bool | None  # None: cannot tell now -> the stored state is kept, nothing is posted
    severity: int = 1
    title: str = ""  # plain words, built from our own names and numbers
    body: str = ""  # mrkdwn, already escaped
    resolved: str = ""  # mrkdwn, already escaped
    examples: list[tuple[str, str]] = field(default_factory=list)  # (trace id, raw text)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertState:
    key: str
    state: str
    severity: int
    first_fired_ms: int
    last_notified_ms: int
    notifications: int
    seq: int


def escape(text: Any, limit: int = 300) -> str:
    """Slack mrkdwn-safe text: control characters collapsed, cut to ``limit``, ``&<>`` escaped."""
    s = " ".join(_CONTROL.sub(" ", str(text)).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _dur(s: float) -> str:
    return f"{s / 3600:g}h" if s >= 3600 else f"{s / 60:g}m" if s >= 60 else f"{s:g}s"


class AlertEngine:
    """``tick()`` evaluates every condition (at most every ``alerts.interval_s``), posts what
    changed and returns one dict per post attempted: key, kind, event (firing | reminder |
    resolved), posted, text, and error when the webhook failed. Never raises."""

    def __init__(self, store: ClickHouseStore, cfg: JudgingConfig, sender: Sender | httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 env: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self.store = store
        self.db = store.database
        self.cfg = cfg
        self.spec: AlertsSpec = cfg.alerts
        self.clock = clock
        env = os.environ if env is None else env
        url = self.spec.webhook_url or (env.get(self.spec.webhook_url_env) if self.spec.webhook_url_env else None)
        if sender is not None and not isinstance(sender, httpx.AsyncClient):
            self.send: Sender = sender
        elif url:
            self.send = WebhookSender(url, sender, timeout_s=self.spec.webhook_timeout_s, sleep=sleep,
                                      max_attempts=self.spec.webhook_max_attempts, backoff_s=self.spec.webhook_backoff_s)  # fmt: skip
        else:
            log.warning("alerts: no webhook_url / webhook_url_env set; alerts are only logged")
            self.send = _log_only
        self.dashboard = (self.spec.dashboard_base_url or "").rstrip("/")
        try:
            self.pass_labels = {name: r.labels[0] for name, r in cfg.rubrics().items()}
        except (ValueError, OSError):
            self.pass_labels = {}
        self._last_eval: float | None = None

    async def aclose(self) -> None:
        if isinstance(self.send, WebhookSender):
            await self.send.aclose()

    # ---- the schedule -----------------------------------------------------------------------
    async def tick(self) -> list[dict[str, Any]]:
        if not self.spec.enabled:
            return []
        now = self.clock()
        if self._last_eval is not None and now - self._last_eval < self.spec.interval_s:
            return []
        self._last_eval = now
        conditions: list[Condition] = []
        for evaluate in (self.pass_rate_conditions, self.budget_conditions, self.judge_alert_conditions):
            try:
                conditions += await evaluate(now)
            except Exception:  # noqa: BLE001 - one failing evaluation must not silence the others
                log.exception("alerts: %s failed", evaluate.__name__)
        try:
            states = await self.load_states()
        except Exception:  # noqa: BLE001 - without the state nothing can be deduplicated: skip
            log.exception("alerts: cannot read alert_state")
            return []
        events = []
        for c in conditions:
            event = await self._apply(c, states.get(c.key), now)
            if event is not None:
                events.append(event)
        return events

    async def _apply(self, c: Condition, prev: AlertState | None, now: float) -> dict[str, Any] | None:
        firing = prev is not None and prev.state == "firing"
        if c.active is None:
            return None
        if c.active:
            if not firing or c.severity > prev.severity:  # type: ignore[union-attr]
                event = "firing"
            elif now * 1000 - prev.last_notified_ms >= self.spec.cooldown_s * 1000:  # type: ignore[union-attr]
                event = "reminder"
            else:
                return None
        elif firing:
            event = "resolved"
        else:
            return None
        payload = self.render(c, event)
        out = {"key": c.key, "kind": c.kind, "event": event, "text": payload["text"], "posted": False}
        try:
            await self.send(payload)
        except Exception as exc:  # noqa: BLE001 - the state is not advanced: the next tick tries again
            log.error("alerts: posting %s %s failed: %s", event, c.key, exc)
            out["error"] = str(exc)
            return out
        out["posted"] = True
        now_ms = int(now * 1000)
        first = now_ms if event == "firing" and not firing else (prev.first_fired_ms if prev else now_ms)
        severity = c.severity if c.active else (prev.severity if prev else 0)
        if event == "reminder" and prev is not None:
            severity = max(severity, prev.severity)
        seq = (prev.seq if prev else 0) + 1
        row = (c.key, c.kind, "firing" if c.active else "resolved", min(severity, 255), payload["text"],
               json.dumps(c.details, default=str), first, now_ms, (prev.notifications if prev else 0) + 1, now_ms, seq)  # fmt: skip
        try:
            await self.store.ainsert("alert_state", [row], STATE_COLUMNS, f"alert:{c.key}:{seq}")
        except Exception:  # noqa: BLE001 - posted but not recorded: it may be posted again (at least once)
            log.exception("alerts: recording the state of %s failed", c.key)
        return out

    async def load_states(self) -> dict[str, AlertState]:
        _, rows = await self.store.aquery(
            f"SELECT alert_key, state, severity, toUnixTimestamp64Milli(first_fired_at), "
            f"toUnixTimestamp64Milli(last_notified_at), notifications, seq FROM {self.db}.alert_state FINAL"
        )
        return {str(r[0]): AlertState(str(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6])) for r in rows}

    # ---- rendering --------------------------------------------------------------------------
    def _link(self, path: str, label: str) -> str:
        url = f"{self.dashboard}{path}".replace("&", "&amp;")
        return f"<{url}|{escape(label, 80)}>"

    def render(self, c: Condition, event: str) -> dict[str, Any]:
        """A Slack-compatible message: ``text`` (the notification line) plus ``blocks``."""
        prefix = {"firing": "FIRING", "reminder": "STILL FIRING", "resolved": "RESOLVED"}[event]
        icon = ":white_check_mark:" if event == "resolved" else ":rotating_light:"
        title = f"[{prefix}] {c.title}"
        body = c.resolved if event == "resolved" else c.body
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": re.sub(r"[<>&]", "", title)[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {body}"[:2900]}},
        ]
        if c.examples and event != "resolved":
            lines = []
            for tid, text in c.examples:
                ref = self._link(f"/dashboard/trace/{tid}", tid) if self.dashboard and _TRACE_ID.match(tid) else f"`{escape(tid, 40)}`"
                lines.append(f"• {ref} {escape(text, 200)}")
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": ("*Latest failing verdicts*\n" + "\n".join(lines))[:2900]}})
        context = f"alert `{escape(c.key, 120)}`"
        if self.dashboard:
            context += " · " + self._link("/dashboard", "dashboard")
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
        return {"text": escape(title, 300), "blocks": blocks}

    # ---- (1) pass rate against the trailing baseline ----------------------------------------
    async def pass_rate_conditions(self, now: float) -> list[Condition]:
        s = self.spec
        cur, base, end = now - s.current_window_s, now - s.current_window_s - s.baseline_window_s, now
        p = {"cur": int(cur * 1000), "base": int(base * 1000), "end": int(end * 1000)}
        window = ("completed_at >= fromUnixTimestamp64Milli({base:Int64}) "
                  "AND completed_at < fromUnixTimestamp64Milli({end:Int64}) AND sample_stratum != ''")  # fmt: skip
        _, pop_rows = await self.store.aquery(
            f"SELECT completed_at >= fromUnixTimestamp64Milli({{cur:Int64}}) AS is_cur, sample_stratum, count() "
            f"FROM {self.db}.traces FINAL WHERE {window} GROUP BY is_cur, sample_stratum", p)
        _, rows = await self.store.aquery(
            "SELECT v.judge, v.rubric_hash, t.is_cur, t.sample_stratum, t.inclusion_p, v.label, count(), "
            f"toUnixTimestamp64Milli(max(v.judged_at)) FROM {self.db}.verdicts AS v FINAL INNER JOIN "
            f"(SELECT trace_id, completed_at >= fromUnixTimestamp64Milli({{cur:Int64}}) AS is_cur, sample_stratum, "
            f"inclusion_p FROM {self.db}.traces FINAL WHERE {window} AND inclusion_p > 0) AS t "
            "ON v.trace_id = t.trace_id WHERE v.status = 'ok' AND v.monitoring_only = 0 AND v.quarantined = 0 "
            "GROUP BY v.judge, v.rubric_hash, t.is_cur, t.sample_stratum, t.inclusion_p, v.label", p)  # fmt: skip
        population: dict[bool, dict[str, int]] = {True: {}, False: {}}
        for is_cur, stratum, n in pop_rows:
            population[bool(is_cur)][str(stratum)] = int(n)
        newest: dict[str, tuple[int, str]] = {}  # judge -> (last judged ms, rubric hash) in the current window
        for judge, h, is_cur, *_rest, last_ms in rows:
            if is_cur and (judge not in newest or int(last_ms) > newest[judge][0]):
                newest[str(judge)] = (int(last_ms), str(h))
        out = []
        for judge, (_, h) in sorted(newest.items()):
            pass_label = self.pass_labels.get(judge, "pass")
            samples: dict[bool, list[tuple[bool, float, str]]] = defaultdict(list)
            for j, hh, is_cur, stratum, ip, label, n, _ in rows:
                if j == judge and hh == h:
                    samples[bool(is_cur)] += [(label == pass_label, float(ip), str(stratum))] * int(n)
            try:
                now_e = estimate_pass_rate(samples[True], s.method, s.confidence, population[True])
                base_e = estimate_pass_rate(samples[False], s.method, s.confidence, population[False])
            except ValueError as exc:
                log.warning("alerts: pass rate of %s not estimable: %s", judge, exc)
                continue
            out.append(await self._pass_rate_condition(judge, h, pass_label, now_e, base_e, p))
        return out

    async def _pass_rate_condition(self, judge: str, h: str, pass_label: str, cur: Estimate, base: Estimate,
                                   p: dict[str, int]) -> Condition:  # fmt: skip
        s = self.spec
        details = {"judge": judge, "rubric_hash": h, "method": s.method, "confidence": s.confidence,
                   "current": _est(cur), "baseline": _est(base)}  # fmt: skip
        c = Condition(f"pass_rate:{judge}", "pass_rate", None, details=details)
        if cur.n_judged < s.min_samples or base.n_judged < s.min_samples or math.isnan(cur.rate) or math.isnan(base.rate):
            return c
        dropped = cur.ci_high < base.ci_low and base.rate - cur.rate >= s.min_drop
        c.active = True if dropped else (False if cur.rate >= base.ci_low else None)
        name = escape(judge, 64)
        windows = f"last {_dur(s.current_window_s)} vs the {_dur(s.baseline_window_s)} before"
        c.title = f"{judge} pass rate dropped to {_pct(cur.rate)} from {_pct(base.rate)}"[:140]
        c.body = (
            f"*Judge* `{name}` (version `{escape(h[:12], 12)}`): estimated pass rate over all traffic, {windows}.\n"
            f"*Now*: {_pct(cur.rate)} [{_pct(cur.ci_low)}, {_pct(cur.ci_high)}] from {cur.n_judged} judged traces\n"
            f"*Baseline*: {_pct(base.rate)} [{_pct(base.ci_low)}, {_pct(base.ci_high)}] from {base.n_judged} judged traces\n"
            f"The {s.confidence:.0%} intervals ({s.method}) do not overlap. Monitoring-only and quarantined verdicts are excluded."
        )
        c.resolved = (f"*Judge* `{name}`: pass rate {_pct(cur.rate)} is back within the baseline "
                      f"({_pct(base.rate)}, lower bound {_pct(base.ci_low)}; {windows}).")  # fmt: skip
        if c.active and s.max_examples:
            _, rows = await self.store.aquery(
                f"SELECT trace_id, label, explanation FROM {self.db}.verdicts FINAL WHERE judge = {{j:String}} "
                "AND rubric_hash = {h:String} AND status = 'ok' AND label != {pass:String} AND monitoring_only = 0 "
                f"AND quarantined = 0 AND trace_id IN (SELECT trace_id FROM {self.db}.traces FINAL WHERE "
                "completed_at >= fromUnixTimestamp64Milli({cur:Int64}) AND completed_at < fromUnixTimestamp64Milli({end:Int64})) "
                "ORDER BY judged_at DESC, trace_id LIMIT {n:UInt32}",
                {"j": judge, "h": h, "pass": pass_label, "cur": p["cur"], "end": p["end"], "n": s.max_examples})  # fmt: skip
            c.examples = [(str(t), f"{lab}: {expl}") for t, lab, expl in rows]
        return c

    # ---- (2) spend against the budget -------------------------------------------------------
    async def budget_conditions(self, now: float) -> list[Condition]:
        b = self.cfg.budget
        scopes = [("global", None, b.global_usd)] + [(f"judge:{j}", j, v) for j, v in sorted(b.per_judge_usd.items())]
        scopes = [x for x in scopes if x[2] is not None]
        if not scopes:
            return []
        period = math.floor(now / b.period_s)
        _, rows = await self.store.aquery(
            f"SELECT judge, sum(cost_usd) FROM {self.db}.judge_calls FINAL WHERE period = {{p:Int64}} GROUP BY judge",
            {"p": period})  # fmt: skip
        spent = {str(j): float(v) for j, v in rows}
        out = []
        thresholds = self.spec.budget_thresholds
        for scope, judge, limit in scopes:
            assert limit is not None
            usd = math.fsum(spent.values()) if judge is None else spent.get(judge, 0.0)
            frac = usd / limit if limit > 0 else (math.inf if usd > 0 else 0.0)
            severity = sum(1 for t in thresholds if frac >= t)
            what = "all judges" if judge is None else f"judge `{escape(judge, 64)}`"
            crossed = max((t for t in thresholds if frac >= t), default=0.0)
            out.append(Condition(
                f"budget:{scope}", "budget", severity > 0, severity,
                title=f"judge spend ({'global' if judge is None else judge}) passed {crossed:.0%} of its budget"[:140],
                body=(f"Spend of {what} this budget period: *${usd:.4f}* of ${limit:.2f} ({_pct(frac) if math.isfinite(frac) else 'over'}); "
                      f"period {period} ({_dur(b.period_s)}, UTC-aligned). Thresholds: {', '.join(f'{t:.0%}' for t in thresholds)}."),
                resolved=f"Spend of {what} is below {thresholds[0]:.0%} of its budget again (${usd:.4f} of ${limit:.2f}; period {period}).",
                details={"scope": scope, "period": period, "spent_usd": usd, "limit_usd": limit, "fraction": frac},
            ))  # fmt: skip
        return out

    # ---- (3) judge trust alerts written by the judging runtime --------------------------------
    async def judge_alert_conditions(self, now: float) -> list[Condition]:
        since = int((now - self.spec.judge_alert_lookback_s) * 1000)
        _, rows = await self.store.aquery(
            "SELECT kind, judge, rubric_hash, argMax(state, created_at), argMax(message, created_at), count(), "
            f"toUnixTimestamp64Milli(max(created_at)) FROM {self.db}.judge_alerts FINAL "
            "WHERE created_at >= fromUnixTimestamp64Milli({since:Int64}) AND kind IN {kinds:Array(String)} "
            "GROUP BY kind, judge, rubric_hash ORDER BY kind, judge, rubric_hash",
            {"since": since, "kinds": list(JUDGE_ALERT_KINDS)})  # fmt: skip
        ok_by_judge: dict[str, int] = {}
        ok_by_provider: dict[str, int] = {}
        if any(r[0] == "paused" for r in rows):
            _, ok_rows = await self.store.aquery(
                f"SELECT judge, provider, toUnixTimestamp64Milli(max(ts)) FROM {self.db}.judge_calls "
                "WHERE status = 'ok' AND ts >= fromUnixTimestamp64Milli({since:Int64}) GROUP BY judge, provider",
                {"since": since})  # fmt: skip
            for j, prov, ms in ok_rows:
                ok_by_judge[str(j)] = max(ok_by_judge.get(str(j), 0), int(ms))
                ok_by_provider[str(prov)] = max(ok_by_provider.get(str(prov), 0), int(ms))
        out = []
        for kind, judge, h, state, message, n, last_ms in rows:
            active = state == "firing"
            if active and kind == "paused":
                m = _PROVIDER.match(str(message))
                recovered = ok_by_provider.get(m.group(1), 0) if m else ok_by_judge.get(str(judge), 0)
                active = recovered <= int(last_ms)
            label = {"drift": "drifted", "quarantine": "is quarantined", "paused": "is paused"}[kind]
            who = f"`{escape(judge, 64)}` (version `{escape(str(h)[:12], 12)}`)"
            out.append(Condition(
                f"{kind}:{judge}:{str(h)[:12]}", kind, active,
                title=f"judge {judge} {label}"[:140],
                body=f"Judge {who} {label}: {escape(message, 600)}\n{int(n)} alert row(s) in the last {_dur(self.spec.judge_alert_lookback_s)}.",
                resolved=f"Judge {who}: {kind} cleared" + (" (ok calls again)." if kind == "paused" else "."),
                details={"kind": kind, "judge": judge, "rubric_hash": h, "rows": int(n), "last_ms": int(last_ms)},
            ))  # fmt: skip
        return out


def _est(e: Estimate) -> dict[str, Any]:
    return {"rate": e.rate, "ci_low": e.ci_low, "ci_high": e.ci_high, "n_judged": e.n_judged, "n_population": e.n_population}
