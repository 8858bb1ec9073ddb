"""`/dashboard` on a real running worker's web server, over the store it holds (embedded chDB)."""

from __future__ import annotations

import random
from collections.abc import Callable

import httpx

from tests.factories import genai_trace, proto
from tests.stream.conftest import Deployment, wait_for
from tests.stream.dashboard.seed import HOSTILE


def test_worker_serves_the_dashboard(deployment: Callable[..., Deployment]) -> None:
    rng = random.Random(3)
    d = deployment()
    worker = d.start_worker()
    traces = [genai_trace(rng, 5) for _ in range(6)]
    traces[0][1].name = f"chat {HOSTILE}"
    d.produce([(t[0].trace_id.hex().encode(), proto(t), None) for t in traces])
    assert wait_for(lambda: worker.sql("SELECT count() FROM tracejudge.traces FINAL")[0][0] >= 6, 90)

    page = httpx.get(f"{worker.url}/dashboard", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'data-chart="volume"' in page.text and 'class="bar"' in page.text
    assert httpx.get(f"{worker.url}/dashboard", params={"range": "7d", "bucket": "day"}, timeout=30).status_code == 200

    tid = traces[0][0].trace_id.hex()
    drill = httpx.get(f"{worker.url}/dashboard/trace/{tid}", timeout=30)
    assert drill.status_code == 200
    assert drill.text.count('class="span-row"') == 5 and "<script" not in drill.text
    assert "chat &lt;script&gt;window.__pwned=1;alert(1)&lt;/script&gt;" in drill.text
    assert httpx.get(f"{worker.url}/dashboard/trace/not-a-trace", timeout=30).status_code == 400
    css = httpx.get(f"{worker.url}/dashboard/static/dashboard.css", timeout=30)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert worker.status()["open_traces"] == 0  # the worker's own API still answers next to it
