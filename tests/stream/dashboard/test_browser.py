"""The dashboard in a real headless browser: Debian's chromium driven by Playwright.

The page is served by the standalone server over seeded rows in real embedded ClickHouse. Skipped
(with the reason) when chromium is not installed: `make test` installs it as root.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from judges.config import BudgetSpec
from stream.dashboard import Dashboard, make_server
from stream.store import ClickHouseStore
from tests.stream.dashboard.seed import HOSTILE, Seeded

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
DOCS_SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "dashboard.png"
CHARTS = ["pass-rate-task_completion", "pass-rate-tool_use_correctness", "volume", "gates", "signals", "spend"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (test extra)")
pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason="Debian chromium not installed (as root, `make test` runs apt-get install chromium)",
)


@pytest.fixture
def served(store: ClickHouseStore, seeded: Seeded, now: float) -> Iterator[str]:
    budget = BudgetSpec(period_s=86400, global_usd=0.5, per_judge_usd={"task_completion": 0.2})
    server = make_server(Dashboard(store, budget, clock=lambda: now), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_dashboard_in_chromium(served: str, seeded: Seeded, tmp_path: Path) -> None:
    dialogs: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            assert page.goto(f"{served}/dashboard").status == 200

            for chart in CHARTS:
                svg = page.locator(f'svg[data-chart="{chart}"]')
                assert svg.count() == 1, chart
                marks = svg.locator("circle.point, rect.bar").count()
                assert marks > 0, chart
                assert svg.locator("text.axis-label").count() == 2, chart  # time axis and value axis
                assert svg.locator("text.tick").count() >= 4, chart
                assert "time (UTC, per hour)" in svg.locator("text.axis-label").all_text_contents()
            assert page.locator('svg[data-chart="pass-rate-task_completion"] circle.point').count() == 6
            assert page.locator('svg[data-chart="pass-rate-task_completion"] path.ci-band').count() >= 1
            assert page.locator("svg.gauge").count() == 2
            # computed style from the bundled stylesheet (served by us, allowed by the CSP)
            assert page.locator("section#volume").evaluate("e => getComputedStyle(e).borderRadius") == "8px"

            failing = page.locator("table.failing tbody tr")
            assert failing.count() > 0
            assert HOSTILE in page.locator("table.failing").inner_text()  # shown as text, not markup
            assert page.evaluate("typeof window.__pwned") == "undefined"
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

            page.click(f'a[href="/dashboard/trace/{seeded.hostile_id}"]')
            page.wait_for_url(f"**/dashboard/trace/{seeded.hostile_id}")
            spans = page.locator("tr.span-row")
            assert spans.count() == 4
            names = spans.locator("td.span-name").all_inner_texts()
            assert names[0] == f"invoke_agent support {HOSTILE}" and names[2].startswith("execute_tool lookup_order")
            assert page.locator("svg.timeline rect.span-bar").count() == 4
            assert page.locator("tr.span-row td.status-error").count() == 1
            assert "fail" in page.locator('article.verdict[data-judge="task_completion"] .badge').first.inner_text()
            assert HOSTILE in page.locator("p.explanation").first.inner_text()
            details = page.locator("tr.span-detail details").first
            details.locator("summary").click()
            assert "Where is my order?" in details.inner_text()
            assert page.evaluate("typeof window.__pwned") == "undefined"
            page.screenshot(path=str(tmp_path / "trace.png"), full_page=True)
        finally:
            browser.close()
    assert dialogs == [] and errors == []
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
    if os.environ.get("TRACEJUDGE_UPDATE_SCREENSHOT") == "1":  # refresh the README's image on demand
        shutil.copyfile(tmp_path / "dashboard.png", DOCS_SCREENSHOT)
    print(f"screenshots: {tmp_path / 'dashboard.png'}, {tmp_path / 'trace.png'} (copied to {DOCS_SCREENSHOT})")
