"""Pages: hostile trace content is only ever text, statuses and headers, empty and broken stores."""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser

import pytest

from judges.config import BudgetSpec
from stream.dashboard import Dashboard, queries
from stream.dashboard.html import el, esc
from stream.store import ClickHouseStore
from tests.stream.dashboard.seed import HOSTILE, SQLISH, Seeded


class Structure(HTMLParser):
    """Every element and attribute of a page, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.by_tag: dict[str, list[dict[str, str | None]]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)
        self.by_tag.setdefault(tag, []).append(dict(attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(body: bytes) -> Structure:
    p = Structure()
    p.feed(body.decode("utf-8"))
    return p


def assert_inert(body: bytes) -> Structure:
    """No script, no img, no event handler, no javascript: URL — and the hostile text shown as text."""
    page = parse(body)
    assert "script" not in page.tags and "img" not in page.tags and "iframe" not in page.tags
    assert not [a for a, _ in page.attrs if a.startswith("on")]
    assert not [v for _, v in page.attrs if v and v.strip().lower().startswith("javascript:")]
    raw = body.decode("utf-8")
    assert "<script" not in raw and "<img" not in raw and 'onerror="' not in raw
    assert "&lt;script&gt;window.__pwned=1;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=&quot;" in raw
    return page


def test_overview_escapes_hostile_content(dash: Dashboard, seeded: Seeded) -> None:
    reply = dash.handle("/dashboard", {})
    assert reply.status == 200 and reply.content_type.startswith("text/html")
    assert "script-src" not in reply.headers["Content-Security-Policy"]  # default-src 'none': no script at all
    assert "default-src 'none'" in reply.headers["Content-Security-Policy"]
    page = assert_inert(reply.body)
    text = "".join(page.text)
    assert HOSTILE in text  # agent name, explanation, alert message: readable, as text
    assert "no data yet" not in text and "unavailable" not in text
    charts = {a["data-chart"] for a in page.by_tag["svg"] if a.get("data-chart")}
    assert charts == {"pass-rate-task_completion", "pass-rate-tool_use_correctness", "volume", "gates", "signals", "spend"}
    links = [a["href"] for a in page.by_tag["a"] if (a.get("href") or "").startswith("/dashboard/trace/")]
    assert f"/dashboard/trace/{seeded.hostile_id}" in links


def test_rate_points_carry_the_estimator_numbers(dash: Dashboard, seeded: Seeded, now: float) -> None:
    w = queries.make_window("24h", None, now)
    rates = {r.judge: r for r in queries.pass_rates(dash.query, dash.db, w)}
    body = dash.handle("/dashboard", {}).body.decode()
    chart = re.search(r'<svg[^>]*data-chart="pass-rate-task_completion".*?</svg>', body, re.S)
    assert chart is not None
    points = re.findall(r'<circle[^>]*data-rate="([\d.]+)" data-low="([\d.]+)" data-high="([\d.]+)"', chart.group(0))
    want = [(f"{e.rate:.6f}", f"{e.ci_low:.6f}", f"{e.ci_high:.6f}") for e in rates["task_completion"].points if e]
    assert points == want and len(points) == 6
    o = rates["task_completion"].overall
    assert f"{100 * o.rate:.1f}% (95% CI {100 * o.ci_low:.1f}%–{100 * o.ci_high:.1f}%)" in body


def test_trace_page_escapes_spans_messages_and_verdicts(dash: Dashboard, seeded: Seeded) -> None:
    reply = dash.handle(f"/dashboard/trace/{seeded.hostile_id}", {})
    assert reply.status == 200
    page = assert_inert(reply.body)
    text = "".join(page.text)
    for expected in (f"invoke_agent support {HOSTILE}", f"Where is my order? {HOSTILE}", f"error: {HOSTILE}",
                     f"{HOSTILE} {SQLISH}", SQLISH, "execute_tool lookup_order"):  # fmt: skip
        assert expected in text
    rows = [a for a in page.by_tag["tr"] if a.get("class") == "span-row"]
    assert len(rows) == 4
    assert len([a for a in page.by_tag["rect"] if "span-bar" in (a.get("class") or "")]) == 4
    assert reply.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("raw", ["xyz", "0" * 31, "%27%3B%20DROP%20TABLE%20traces%20--", "'; DROP TABLE traces --", "g" * 32])
def test_bad_trace_ids_are_rejected(dash: Dashboard, raw: str) -> None:
    reply = dash.handle(f"/dashboard/trace/{raw}", {})
    assert reply.status == 400 and b"32 hexadecimal digits" in reply.body


def test_unknown_trace_and_paths(dash: Dashboard, seeded: Seeded) -> None:
    assert dash.handle("/dashboard/trace/" + "e" * 32, {}).status == 404
    assert dash.handle(f"/dashboard/trace/{seeded.hostile_id.upper()}", {}).status == 200  # canonicalized
    assert dash.handle("/dashboard/nope", {}).status == 404
    assert dash.handle("/", {}).status == 302
    assert dash.handle("/dashboard", {"range": "1y"}).status == 400
    assert dash.handle("/dashboard", {"range": "7d", "bucket": "day"}).status == 200
    assert dash.handle("/dashboard", {"range": "all"}).status == 200


def test_static_assets_are_bundled_and_nothing_else_is_served(dash: Dashboard) -> None:
    css = dash.handle("/dashboard/static/dashboard.css", {})
    assert css.status == 200 and css.content_type.startswith("text/css") and b".chart" in css.body
    assert dash.handle("/dashboard/static/favicon.svg", {}).content_type == "image/svg+xml"
    for name in ("../server.py", "..%2Fserver.py", "nope.css", "", "__init__.py"):
        assert dash.handle(f"/dashboard/static/{name}", {}).status == 404


def test_empty_store_renders_no_data_yet(dash: Dashboard) -> None:
    reply = dash.handle("/dashboard", {})
    assert reply.status == 200
    text = "".join(parse(reply.body).text)
    assert text.count("no data yet") >= 6 and "unavailable" not in text
    assert "no budget configured" in text and "no alert firing" in text


def test_budget_gauges(store: ClickHouseStore, seeded: Seeded, now: float) -> None:
    spec = BudgetSpec(period_s=86400, global_usd=0.01, per_judge_usd={"task_completion": 1.0})
    body = Dashboard(store, spec, clock=lambda: now).handle("/dashboard", {}).body
    page = parse(body)
    gauges = {a["data-chart"]: a for a in page.by_tag["svg"] if "gauge" in (a.get("class") or "")}
    assert set(gauges) == {"budget-global", "budget-task_completion"}
    fills = [a["class"] for a in page.by_tag["rect"] if "gauge-fill" in (a.get("class") or "")]
    over = seeded.spend_today >= 0.01
    assert fills[0] == ("gauge-fill over" if over else "gauge-fill ok" if seeded.spend_today < 0.005 else "gauge-fill warn")


def test_a_section_that_cannot_be_read_does_not_break_the_page(chdb_dsn: str, now: float) -> None:
    bare = ClickHouseStore(chdb_dsn, database=f"t_{uuid.uuid4().hex[:12]}")  # no tables at all
    try:
        bare.command(f"CREATE DATABASE IF NOT EXISTS {bare.database}")
        reply = Dashboard(bare, clock=lambda: now).handle("/dashboard", {})
        assert reply.status == 200
        assert "".join(parse(reply.body).text).count("unavailable:") == 8
    finally:
        bare.command(f"DROP DATABASE IF EXISTS {bare.database} SYNC")
        bare.close()


def test_builder_escapes_children_and_attributes() -> None:
    assert el("p", "<b>", title='"><x>') == '<p title="&quot;&gt;&lt;x&gt;">&lt;b&gt;</p>'
    assert el("p", el("b", "ok")) == "<p><b>ok</b></p>"  # markup built by el() is kept
    assert esc("'&") == "&#x27;&amp;"
    with pytest.raises(ValueError):
        el("p onclick=x")
    with pytest.raises(ValueError):
        el("p", **{"on click": "x"})
