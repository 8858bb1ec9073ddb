"""`tracejudge dashboard`: standalone server on the embedded store, or the worker's URL."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from stream.cli import app


def test_prints_the_workers_dashboard_when_a_worker_holds_the_store(tmp_path: Path) -> None:
    (tmp_path / "worker.json").write_text(json.dumps({"pid": os.getpid(), "url": "http://127.0.0.1:6123"}))
    result = CliRunner().invoke(app, ["dashboard"], env={"TRACEJUDGE_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:6123/dashboard" in result.output


def test_serves_the_embedded_store_standalone(tmp_path: Path) -> None:
    env = {**os.environ, "TRACEJUDGE_DATA_DIR": str(tmp_path / "data"), "TRACEJUDGE_LOG_LEVEL": "warning"}
    env.pop("TRACEJUDGE_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "stream", "dashboard", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        url, seen = None, []
        deadline = time.monotonic() + 90
        # a selector (epoll), not select.select: descriptors of a long test process pass 1,023
        # (the test process's chDB engine keeps some per database created and dropped)
        ready = selectors.DefaultSelector()
        ready.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            if ready.select(1.0):
                line = proc.stdout.readline()  # type: ignore[union-attr]
                seen.append(line)
                m = re.search(r"(http://127\.0\.0\.1:\d+/dashboard)", line)
                url = m.group(1) if m else None
        ready.close()
        assert url, "".join(seen)
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "no data yet" in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert httpx.get(url + "/trace/" + "ab" * 16, timeout=30).status_code == 404
        assert httpx.get(url + "/trace/nothex", timeout=30).status_code == 400
        assert httpx.get(url + "/static/dashboard.css", timeout=30).headers["content-type"].startswith("text/css")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
