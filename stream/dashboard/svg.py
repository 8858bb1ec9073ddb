"""Server-side SVG charts: stacked bars, a rate line with confidence intervals, budget gauges and a
span timeline. Pure functions of their data; every label goes through :mod:`.html` (escaped), and
each data mark carries a ``<title>`` (the browser's native tooltip — no JavaScript)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from stream.dashboard.html import Markup, el

W, H = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 60, 14, 12, 42
PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5",
           "#9c6b4e", "#9498a0")  # fmt: skip
FIXED = {"suspected_failure": "#ff725c", "success": "#3ca951", "drop": "#9498a0", "other": "#9498a0"}


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float]
    color: str


@dataclass(frozen=True, slots=True)
class RatePoint:
    rate: float
    low: float
    high: float
    judged: int
    population: int | None


def colors(names: Sequence[str]) -> dict[str, str]:
    out, i = {}, 0
    for n in names:
        if n in FIXED:
            out[n] = FIXED[n]
        else:
            out[n] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def bucket_label(ts: int, step: int) -> str:
    return time.strftime("%Y-%m-%d" if step >= 86400 else "%m-%d %H:%M", time.gmtime(ts))


def fmt_count(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.3g}M"
    if v >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:.4g}"


def fmt_usd(v: float) -> str:
    return f"${v:,.2f}" if v >= 1 or v == 0 else f"${v:.4f}"


def fmt_pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def nice_ticks(top: float, n: int = 4) -> list[float]:
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(math.ceil(top / step - 1e-9)) + 1)]


def _frame(chart_id: str, title: str, body: list[Markup], ticks: list[float], fmt: Callable[[float], str],
           buckets: Sequence[int], step: int, axis: str | None = None) -> Markup:  # fmt: skip
    """Axes, grid, tick and axis labels around a plot whose y range is ticks[0]..ticks[-1]."""
    plot_h, plot_w = H - TOP - BOTTOM, W - LEFT - RIGHT
    y_of = _y_scale(ticks)
    parts: list[Markup] = [el("title", title)]
    for t in ticks:
        y = y_of(t)
        parts.append(el("line", x1=LEFT, x2=W - RIGHT, y1=f"{y:.1f}", y2=f"{y:.1f}", class_="grid"))
        parts.append(el("text", fmt(t), x=LEFT - 6, y=f"{y + 4:.1f}", text_anchor="end", class_="tick"))
    n = max(1, len(buckets))
    every = max(1, math.ceil(n / 6))
    for i in range(0, len(buckets), every):
        x = LEFT + (i + 0.5) * plot_w / n
        parts.append(el("text", bucket_label(buckets[i], step), x=f"{x:.1f}", y=TOP + plot_h + 16,
                        text_anchor="middle", class_="tick"))  # fmt: skip
    parts.append(el("line", x1=LEFT, x2=W - RIGHT, y1=TOP + plot_h, y2=TOP + plot_h, class_="axis"))
    parts.append(el("line", x1=LEFT, x2=LEFT, y1=TOP, y2=TOP + plot_h, class_="axis"))
    parts.append(el("text", f"time (UTC, per {'day' if step >= 86400 else 'hour'})", x=LEFT + plot_w / 2,
                    y=H - 6, text_anchor="middle", class_="axis-label"))  # fmt: skip
    parts.append(el("text", axis or title, x=12, y=TOP + plot_h / 2, text_anchor="middle", class_="axis-label",
                    transform=f"rotate(-90 12 {TOP + plot_h / 2:.1f})"))  # fmt: skip
    return el("svg", *parts, *body, class_="chart", data_chart=chart_id, viewBox=f"0 0 {W} {H}",
              width=W, height=H, role="img", aria_label=title, xmlns="http://www.w3.org/2000/svg")  # fmt: skip


def _y_scale(ticks: list[float]) -> Callable[[float], float]:
    lo, hi = ticks[0], ticks[-1]
    plot_h = H - TOP - BOTTOM
    return lambda v: TOP + plot_h - (v - lo) / ((hi - lo) or 1.0) * plot_h


def stacked_bars(chart_id: str, title: str, buckets: Sequence[int], step: int, series: Sequence[Series],
                 fmt: Callable[[float], str] = fmt_count, axis: str | None = None) -> Markup:  # fmt: skip
    totals = [sum(s.values[i] for s in series) for i in range(len(buckets))]
    ticks = nice_ticks(max(totals, default=0.0))
    y_of = _y_scale(ticks)
    plot_w = W - LEFT - RIGHT
    bw = plot_w / max(1, len(buckets))
    bars: list[Markup] = []
    for i, b in enumerate(buckets):
        base = 0.0
        x = LEFT + i * bw + bw * 0.12
        for s in series:
            v = s.values[i]
            if v <= 0:
                continue
            y0, y1 = y_of(base), y_of(base + v)
            tip = f"{bucket_label(b, step)} · {s.name}: {fmt(v)}"
            bars.append(el("rect", el("title", tip), x=f"{x:.1f}", y=f"{y1:.1f}", width=f"{max(1.0, bw * 0.76):.1f}",
                           height=f"{max(0.5, y0 - y1):.1f}", fill=s.color, class_="bar", data_series=s.name))  # fmt: skip
            base += v
    return _frame(chart_id, title, bars, ticks, fmt, buckets, step, axis)


def rate_chart(chart_id: str, title: str, buckets: Sequence[int], step: int,
               points: Sequence[RatePoint | None], color: str = "#4269d0") -> Markup:  # fmt: skip
    """Pass rate per bucket (circles, joined by a line) with its confidence interval (band + bars)."""
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
    y_of = _y_scale(ticks)
    plot_w = W - LEFT - RIGHT
    bw = plot_w / max(1, len(buckets))
    marks: list[Markup] = []
    runs: list[list[tuple[float, RatePoint]]] = [[]]
    for i, p in enumerate(points):
        if p is None or math.isnan(p.rate):
            runs.append([])
            continue
        runs[-1].append((LEFT + (i + 0.5) * bw, p))
    for run in (r for r in runs if r):
        if len(run) > 1:
            upper = " L".join(f"{x:.1f},{y_of(p.high):.1f}" for x, p in run)
            lower = " L".join(f"{x:.1f},{y_of(p.low):.1f}" for x, p in reversed(run))
            marks.append(el("path", d=f"M{upper} L{lower} Z", fill=color, class_="ci-band"))
            marks.append(el("path", d="M" + " L".join(f"{x:.1f},{y_of(p.rate):.1f}" for x, p in run),
                            stroke=color, fill="none", class_="rate-line"))  # fmt: skip
        for x, p in run:
            marks.append(el("line", x1=f"{x:.1f}", x2=f"{x:.1f}", y1=f"{y_of(p.low):.1f}", y2=f"{y_of(p.high):.1f}",
                            stroke=color, class_="ci-bar"))  # fmt: skip
    for i, p in enumerate(points):
        if p is None or math.isnan(p.rate):
            continue
        x = LEFT + (i + 0.5) * bw
        pop = f" of {p.population}" if p.population is not None else ""
        tip = (f"{bucket_label(buckets[i], step)}: {fmt_pct(p.rate)} (95% CI {fmt_pct(p.low)}–{fmt_pct(p.high)}), "
               f"{p.judged} judged{pop} traces")  # fmt: skip
        marks.append(el("circle", el("title", tip), cx=f"{x:.1f}", cy=f"{y_of(p.rate):.1f}", r=3.5, fill=color,
                        class_="point", data_rate=f"{p.rate:.6f}", data_low=f"{p.low:.6f}", data_high=f"{p.high:.6f}"))  # fmt: skip
    return _frame(chart_id, title, marks, ticks, lambda v: f"{100 * v:.0f}%", buckets, step, "pass rate")


def gauge(chart_id: str, label: str, spent: float, budget: float, marks: Sequence[tuple[float, str]]) -> Markup:
    """Budget burn: spent / budget as a bar, with the degradation ladder's thresholds marked."""
    w, h, left, bar_w = 720, 54, 8, 560
    frac = spent / budget if budget > 0 else (1.0 if spent > 0 else 0.0)
    cls = "over" if frac >= 1.0 else "warn" if any(frac >= f for f, _ in marks) else "ok"
    parts: list[Markup] = [
        el("title", f"{label}: {fmt_usd(spent)} of {fmt_usd(budget)}"),
        el("rect", x=left, y=18, width=bar_w, height=16, class_="gauge-track"),
        el("rect", el("title", f"{fmt_pct(frac)} spent"), x=left, y=18, width=f"{bar_w * min(1.0, frac):.1f}",
           height=16, class_=f"gauge-fill {cls}"),  # fmt: skip
        el("text", f"{label}: {fmt_usd(spent)} of {fmt_usd(budget)} ({fmt_pct(frac)})", x=left, y=12, class_="tick"),
    ]
    for f, name in marks:
        x = left + bar_w * f
        parts.append(el("line", el("title", f"{name} at {fmt_pct(f)}"), x1=f"{x:.1f}", x2=f"{x:.1f}", y1=14, y2=38,
                        class_="gauge-mark"))  # fmt: skip
        parts.append(el("text", name, x=f"{x:.1f}", y=49, text_anchor="middle", class_="tick"))
    return el("svg", *parts, class_="gauge", data_chart=chart_id, viewBox=f"0 0 {w} {h}", width=w, height=h,
              role="img", aria_label=label, xmlns="http://www.w3.org/2000/svg")  # fmt: skip


@dataclass(frozen=True, slots=True)
class TimelineRow:
    label: str
    depth: int
    start_ms: float  # from the trace's first span
    duration_ms: float
    kind: str
    error: bool


def span_timeline(rows: Sequence[TimelineRow]) -> Markup:
    """One bar per span (tree order, indented by depth) on the trace's time axis."""
    row_h, label_w, w = 18, 300, 960
    total = max((r.start_ms + r.duration_ms for r in rows), default=0.0) or 1.0
    plot_w = w - label_w - 16
    h = TOP + row_h * len(rows) + 24
    parts: list[Markup] = [el("title", "span timeline")]
    for t in nice_ticks(total, 5):
        if t > total * 1.0001:
            break
        x = label_w + t / total * plot_w
        parts.append(el("line", x1=f"{x:.1f}", x2=f"{x:.1f}", y1=TOP, y2=h - 20, class_="grid"))
        parts.append(el("text", f"{fmt_count(t)} ms", x=f"{x:.1f}", y=h - 6, text_anchor="middle", class_="tick"))
    for i, r in enumerate(rows):
        y = TOP + i * row_h
        indent = min(r.depth, 12)
        label = r.label if len(r.label) <= 44 - 2 * indent else r.label[: 43 - 2 * indent] + "…"
        parts.append(el("text", label, x=4 + 12 * indent, y=y + 13, class_="span-label"))
        x = label_w + r.start_ms / total * plot_w
        tip = f"{r.label}: {r.duration_ms:.1f} ms from +{r.start_ms:.1f} ms ({r.kind}{', error' if r.error else ''})"
        parts.append(el("rect", el("title", tip), x=f"{x:.1f}", y=y + 3, width=f"{max(1.5, r.duration_ms / total * plot_w):.1f}",
                        height=row_h - 6, class_=f"span-bar kind-{r.kind}{' error' if r.error else ''}"))  # fmt: skip
    return el("svg", *parts, class_="timeline", data_chart="span-timeline", viewBox=f"0 0 {w} {h}", width=w, height=h,
              role="img", aria_label="span timeline", xmlns="http://www.w3.org/2000/svg")  # fmt: skip


def legend(series: Sequence[Series] | dict[str, str]) -> Markup:
    items = series.items() if isinstance(series, dict) else [(s.name, s.color) for s in series]
    return el("ul", *(el("li", el("svg", el("rect", width=10, height=10, fill=c), width=10, height=10,
                                           class_="swatch"), " ", name) for name, c in items), class_="legend")  # fmt: skip

