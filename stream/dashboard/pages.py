"""HTML pages: the overview (``/dashboard``) and the trace drill-down (``/dashboard/trace/<id>``).

Everything is built with :func:`stream.dashboard.html.el`, which escapes every value; charts come
from :mod:`stream.dashboard.svg`. No script runs on these pages (see the CSP in ``server.py``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from schemas.model import Span
from stream.dashboard import svg
from stream.dashboard.html import Markup, el, href, table
from stream.dashboard.queries import ESTIMATOR, RANGES, STEPS, Burn, JudgeRates, SeriesSet, Window
from stream.dashboard.trace_data import TraceDetail, gate_evidence
from stream.estimate import Estimate

BASE = "/dashboard"
CSS = f"{BASE}/static/dashboard.css"
MAX_TEXT = 4000


def clip(value: Any, n: int) -> str:
    s = "" if value is None else str(value)
    return s if len(s) <= n else s[: n - 1] + "…"


def fmt_ts(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else ""


def fmt_estimate(e: Estimate) -> str:
    if math.isnan(e.rate):
        return "no estimate"
    return f"{svg.fmt_pct(e.rate)} (95% CI {svg.fmt_pct(e.ci_low)}–{svg.fmt_pct(e.ci_high)})"


def document(title: str, *body: Any, refresh: int | None = None) -> bytes:
    head = el("head", el("meta", charset="utf-8"), el("meta", name="viewport", content="width=device-width"),
              el("meta", http_equiv="refresh", content=refresh) if refresh else None,
              el("title", title), el("link", rel="stylesheet", href=CSS),
              el("link", rel="icon", href=f"{BASE}/static/favicon.svg", type="image/svg+xml"))  # fmt: skip
    return ("<!DOCTYPE html>\n" + el("html", head, el("body", *body), lang="en")).encode("utf-8")


def error_page(status: int, message: str) -> bytes:
    return document(f"{status} · tracejudge", el("header", el("a", "tracejudge", href=BASE, class_="brand")),
                    el("main", el("h1", str(status)), el("p", message, class_="error"), class_="trace"))  # fmt: skip


# ---- overview ------------------------------------------------------------------------------
@dataclass(slots=True)
class Overview:
    window: Window
    now: float
    source: str
    rates: list[JudgeRates] | Exception
    volume: SeriesSet | Exception
    gates: SeriesSet | Exception
    signals: SeriesSet | Exception
    spend: SeriesSet | Exception
    burn: Burn | Exception
    alerts: list[tuple[Any, ...]] | Exception
    failing: list[dict[str, Any]] | Exception


def _section(sid: str, title: str, data: Any, render: Any, note: str | None = None, wide: bool = False) -> Markup:
    if isinstance(data, Exception):
        body = el("p", clip(f"unavailable: {type(data).__name__}: {data}", 400), class_="error")
    else:
        body = render(data)
    return el("section", el("h2", title), el("p", note, class_="note") if note else None, body, id=sid,
              class_="wide" if wide else None)  # fmt: skip


def _nav(w: Window) -> Markup:
    ranges = [el("a", r, href=href(BASE, range=r), class_="active" if r == w.range else None) for r in RANGES]
    buckets = [el("a", f"per {b}", href=href(BASE, range=w.range, bucket=b), class_="active" if b == w.bucket else None)
               for b in STEPS]  # fmt: skip
    return el("nav", el("span", "range:", class_="muted"), *ranges, el("span", "buckets:", class_="muted"), *buckets)


def _chart(chart_id: str, title: str, w: Window, s: SeriesSet, fmt: Any = svg.fmt_count) -> Markup:
    if s.empty:
        return el("p", "no data yet", class_="empty")
    colors = svg.colors(list(s.series))
    series = [svg.Series(name, vals, colors[name]) for name, vals in s.series.items()]
    return el("figure", svg.stacked_bars(chart_id, title, w.buckets, w.step, series, fmt), svg.legend(series))


def _rates(w: Window) -> Any:
    def render(rates: list[JudgeRates]) -> Markup:
        if not rates:
            return el("p", "no data yet", class_="empty")
        out = []
        for i, jr in enumerate(rates):
            o = jr.overall
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(jr.statuses.items())) or "none in window"
            summary = el("p", el("strong", fmt_estimate(o)), f" over all traffic in the window · {o.n_judged} judged of "
                         f"{o.n_population or 0} traces · version {jr.rubric_hash[:12]} · verdicts: {statuses}",
                         class_="summary")  # fmt: skip
            color = svg.PALETTE[i % len(svg.PALETTE)]
            points = [None if e is None else svg.RatePoint(e.rate, e.ci_low, e.ci_high, e.n_judged, e.n_population)
                      for e in jr.points]  # fmt: skip
            chart = (svg.rate_chart(f"pass-rate-{jr.judge}", f"{jr.judge} pass rate", w.buckets, w.step, points, color)
                     if any(p is not None for p in points) else el("p", "no judged traces in this window", class_="empty"))  # fmt: skip
            out.append(el("article", el("h3", jr.judge), summary, el("figure", chart), class_="judge", data_judge=jr.judge))
        return el("div", *out, class_="judges")

    return render


def _burn(b: Burn) -> Markup:
    period = f"budget period {fmt_ts(b.period_start)} – {fmt_ts(b.period_end)}"
    parts: list[Any] = [el("p", period, class_="note")]
    if b.budget is None and not any(lim for _, _, lim in b.per_judge):
        parts.append(el("p", f"no budget configured (judging_file unset or without limits); spent this period: "
                        f"{svg.fmt_usd(b.spent)}", class_="empty"))  # fmt: skip
    if b.budget is not None:
        parts.append(svg.gauge("budget-global", "all judges", b.spent, b.budget, b.marks))
    for judge, spent, limit in b.per_judge:
        if limit is not None:
            parts.append(svg.gauge(f"budget-{judge}", judge, spent, limit, b.marks))
    return el("div", *parts, class_="burn")


def index_page(o: Overview) -> bytes:
    w = o.window
    r = lambda rows, headers, **kw: table(headers, rows, **kw)  # noqa: E731

    def volume(s: SeriesSet) -> Markup:
        return Markup(_chart("volume", "traces", w, s) + r(s.rows, ["class", "traces", "sampled", "mean inclusion p"]))

    def gates(s: SeriesSet) -> Markup:
        rows = [(g, t, f, e, clip(reason, 160)) for g, t, f, e, reason in s.rows]
        return Markup(_chart("gates", "gate hits", w, s) + r(rows, ["gate", "type", "fail", "error", "latest reason"]))

    def signals(s: SeriesSet) -> Markup:
        rows = [(t, src, pol, n, late, clip(ev, 160)) for t, src, pol, n, late, ev in s.rows]
        return Markup(_chart("signals", "signals", w, s)
                      + r(rows, ["type", "source", "polarity", "count", "late", "latest evidence"]))  # fmt: skip

    def spend(s: SeriesSet) -> Markup:
        rows = [(j, m, p, n, bad, tok, svg.fmt_usd(usd)) for j, m, p, n, bad, tok, usd in s.rows]
        return Markup(_chart("spend", "judge spend (USD)", w, s, lambda v: f"${v:.4g}")
                      + r(rows, ["judge", "model", "purpose", "calls", "not ok", "tokens", "USD"]))  # fmt: skip

    def failing(rows: list[dict[str, Any]]) -> Markup:
        body = [(el("a", f["trace_id"][:16] + "…", href=f"{BASE}/trace/{f['trace_id']}", title=f["trace_id"],
                    class_="trace-link"), time.strftime("%m-%d %H:%M:%S", time.gmtime(f["judged_at"])),
                 f["judge"], f"{f['service']} / {f['agent']}", clip(f["root_name"], 80),
                 "" if f["score"] is None else f"{f['score']:.2f}", clip(f["explanation"], 240),
                 ", ".join(f["failed_gates"])) for f in rows]  # fmt: skip
        return table(["trace", "judged (UTC)", "judge", "service / agent", "root span", "score", "explanation", "failed gates"],
                     body, class_="failing")  # fmt: skip

    def alerts(rows: list[tuple[Any, ...]]) -> Markup:
        return table(["kind", "judge", "version", "message", "since (UTC)"],
                     [(k, j, h, clip(m, 240), time.strftime("%m-%d %H:%M", time.gmtime(ts))) for k, j, h, m, ts in rows],
                     empty="no alert firing")  # fmt: skip

    header = el("header", el("a", "tracejudge", href=BASE, class_="brand"), el("span", "monitoring", class_="muted"),
                _nav(w), el("span", f"{o.source} · {fmt_ts(o.now)}", class_="muted"))  # fmt: skip
    main = el(
        "main",
        _section("pass-rate", "Pass rate per judge", o.rates, _rates(w),
                 f"Estimated over all traffic ({ESTIMATOR} by sampling stratum, using each bucket's stratum "
                 "populations; 95% MOVER-Wilson intervals) from ok verdicts of each judge's newest version.", wide=True),
        _section("volume", "Traffic per sampling class", o.volume, volume),
        _section("gates", "Gate hits", o.gates, gates),
        _section("signals", "Signals", o.signals, signals),
        _section("spend", "Judge spend", o.spend, spend),
        _section("budget", "Budget burn", o.burn, _burn),
        _section("alerts", "Judge alerts firing", o.alerts, alerts),
        _section("failing", "Latest failing traces", o.failing, failing, "Verdict label fail, newest first.", wide=True),
    )  # fmt: skip
    return document("tracejudge dashboard", header, main, refresh=60)


# ---- trace drill-down ----------------------------------------------------------------------
def _dl(items: list[tuple[str, Any]]) -> Markup:
    return el("dl", *((el("dt", k), el("dd", v)) for k, v in items if v not in (None, "", [])))


def _messages(title: str, messages: list[Any]) -> Markup | None:
    if not messages:
        return None
    items = []
    for m in messages:
        calls = [el("li", f"tool call {c.name}({clip(c.arguments or '', MAX_TEXT)})") for c in m.tool_calls]
        items.append(el("div", el("span", m.role, class_="role"), el("pre", clip(m.content, MAX_TEXT)),
                        el("ul", *calls) if calls else None, class_=f"msg role-{m.role}"))  # fmt: skip
    return el("div", el("h4", title), *items, class_="messages")


def _span_details(s: Span) -> Markup | None:
    try:
        inputs, outputs, system = s.input_messages, s.output_messages, s.system_instructions
    except Exception as exc:  # odd content must not break the page
        inputs, outputs, system = [], [], f"(messages could not be parsed: {type(exc).__name__})"
    parts = [
        el("div", el("h4", "system"), el("pre", clip(system, MAX_TEXT))) if system else None,
        _messages("input messages", inputs),
        _messages("output messages", outputs),
        el("div", el("h4", "tool arguments"), el("pre", clip(s.tool_arguments, MAX_TEXT))) if s.tool_arguments else None,
        el("div", el("h4", "tool result"), el("pre", clip(s.tool_result, MAX_TEXT))) if s.tool_result else None,
        el("div", el("h4", "status message"), el("pre", clip(s.status_message, MAX_TEXT))) if s.status_message else None,
        el("div", el("h4", "exceptions"), el("ul", *(el("li", f"{e.type or ''}: {clip(e.message, MAX_TEXT)}")
                                                       for e in s.exceptions))) if s.exceptions else None,  # fmt: skip
    ]
    if not any(parts):
        return None
    return el("details", el("summary", "messages, tool input/output"), *parts)


def _spans(d: TraceDetail) -> Markup:
    if not d.spans:
        return el("p", "no spans stored for this trace", class_="empty")
    t0 = min(n.span.start_ns for n in d.spans)
    rows = [svg.TimelineRow(clip(n.span.name, 200), n.depth, (n.span.start_ns - t0) / 1e6, n.span.duration_ns / 1e6,
                            n.span.kind.value, n.span.is_error) for n in d.spans]  # fmt: skip
    body = []
    for n in d.spans:
        s = n.span
        u = s.usage
        body.append(el("tr", el("td", clip(s.name, 200), class_=f"depth-{min(n.depth, 12)} span-name"), el("td", s.kind.value),
                       el("td", s.operation or ""), el("td", f"{s.duration_ns / 1e6:.1f}"),
                       el("td", s.status_code.value, class_="status-error" if s.is_error else None),
                       el("td", s.tool_name or ""), el("td", s.model or ""),
                       el("td", f"{u.input}/{u.output}" if (u.input or u.output) else ""),
                       class_="span-row", data_span_id=s.span_id))  # fmt: skip
        details = _span_details(s)
        if details:
            body.append(el("tr", el("td", details, colspan=8), class_="span-detail"))
    more = (el("p", f"showing the first {len(d.spans)} of {d.spans_total} spans", class_="note")
            if d.spans_total > len(d.spans) else None)  # fmt: skip
    head = el("thead", el("tr", *(el("th", h) for h in ("span", "kind", "operation", "ms", "status", "tool", "model", "tokens in/out"))))
    return Markup(el("figure", svg.span_timeline(rows)) + (more or "") + el("table", head, el("tbody", body), class_="spans"))


def _verdicts(d: TraceDetail) -> Markup:
    if not d.verdicts:
        return el("p", "not judged", class_="empty")
    out = []
    for v in d.verdicts:
        flags = [f for f in ("monitoring_only", "quarantined", "cache_hit") if v[f]]
        label = v["label"] or v["status"]
        out.append(el("article",
            el("h3", v["judge"], " ", el("span", label, class_=f"badge label-{label}")),
            _dl([("status", f"{v['status']} {v['status_reason']}".strip()),
                 ("score", "" if v["score"] is None else f"{v['score']:.3f}"),
                 ("tier / model", f"{v['tier']} / {v['model']}"), ("tiers called", ", ".join(v["tiers_called"])),
                 ("escalation", v["escalation"]), ("cost", svg.fmt_usd(float(v["cost_usd"] or 0))),
                 ("judged", fmt_ts((v["judged_ms"] or 0) / 1000)), ("version", f"{v['judge_version']} {v['rubric_hash'][:12]}"),
                 ("flags", ", ".join(flags))]),
            el("h4", "explanation"), el("p", clip(v["explanation"], MAX_TEXT), class_="explanation"),
            el("h4", "evidence") if v["evidence"] else None,
            el("ul", *(el("li", clip(e, MAX_TEXT)) for e in v["evidence"]), class_="evidence") if v["evidence"] else None,
            class_="verdict", data_judge=v["judge"]))  # fmt: skip
    return Markup("".join(out))


def trace_page(d: TraceDetail) -> bytes:
    t = d.trace or {}
    summary = _dl([
        ("service / agent", f"{t.get('service_name', '')} / {t.get('agent_name', '')}" if t else ""),
        ("root span", t.get("root_name")), ("started", fmt_ts((t.get("start_ms") or 0) / 1000)),
        ("duration", f"{t['duration_ms']:.0f} ms" if t else ""), ("spans", t.get("span_count")),
        ("errors", t.get("error_count")), ("LLM / tool calls", f"{t['llm_call_count']} / {t['tool_call_count']}" if t else ""),
        ("tokens", t.get("total_tokens")), ("completion", t.get("completion_reason")),
        ("conversation", t.get("conversation_id")), ("user", t.get("user_id")),
        ("sampling", f"{t['sample_class']} · {t['sample_rule']} · stratum {t['sample_stratum']} · p = {t['inclusion_p']:g}"
                     f"{' · sampled' if t['sampled'] else ''}" if t else ""),
        ("failed gates", ", ".join(t.get("failed_gates") or [])), ("gate errors", ", ".join(t.get("gate_errors") or [])),
        ("signals", ", ".join(t.get("signals") or [])),
    ])  # fmt: skip
    gates = table(["gate", "type", "outcome", "severity", "reason", "evidence"],
                  [(g, ty, out, sev, clip(reason, 400), el("ul", *(el("li", clip(x, 400)) for x in gate_evidence(ev))))
                   for g, ty, out, sev, reason, ev in d.gates], empty="no gate hit")  # fmt: skip
    signals = table(["source", "type", "polarity", "rule", "evidence", "message", "late"],
                    [(src, ty, pol, rule, clip(ev, 400), idx, "yes" if late else "")
                     for src, ty, pol, rule, ev, idx, late in d.signals], empty="no signal")  # fmt: skip
    header = el("header", el("a", "tracejudge", href=BASE, class_="brand"), el("a", "← dashboard", href=BASE))
    main = el("main", el("h1", "trace ", el("code", d.trace_id)),
              None if d.trace else el("p", "this trace has no completed trace row (yet)", class_="note"),
              summary,
              el("section", el("h2", "Verdicts"), _verdicts(d), id="verdicts"),
              el("section", el("h2", "Gates"), gates, id="gates"),
              el("section", el("h2", "Signals"), signals, id="signals"),
              el("section", el("h2", "Spans"), _spans(d), id="spans"), class_="trace")  # fmt: skip
    return document(f"trace {d.trace_id} · tracejudge", header, main)
