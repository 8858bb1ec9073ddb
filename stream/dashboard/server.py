"""Serving the dashboard: one request handler (:class:`Dashboard`), mounted on the worker's Faust
web server (:func:`add_dashboard`) or on a small standalone HTTP server (:func:`make_server`).

The handler is synchronous: it runs on a thread (the worker hands it to the default executor), and
its queries go to the store's ClickHouse thread, so the event loop never waits on ClickHouse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from stream.dashboard import pages, queries
from stream.dashboard.trace_data import load_trace, valid_trace_id
from stream.http_server import QuietHTTPServer

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    # no script at all, styles only from this server: trace content can never run in the page
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}


def _static_files() -> dict[str, bytes]:
    root = resources.files("stream.dashboard").joinpath("static")
    return {e.name: e.read_bytes() for e in root.iterdir() if e.name[e.name.rfind(".") :] in STATIC_TYPES}


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Dashboard:
    """``handle(path, query)`` → :class:`Reply` for every dashboard URL."""

    def __init__(self, store: Any, budget: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.db = store.database
        self.budget = budget
        self.clock = clock
        self.static = _static_files()
        self.source = "ClickHouse server" if str(store.dsn).startswith("http") else "embedded ClickHouse"

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> tuple[list[str], list[Any]]:
        return self.store.query(sql, parameters=dict(params) if params else None, settings={"readonly": 1})

    def handle(self, path: str, query: Mapping[str, str] | None = None) -> Reply:
        query = query or {}
        path = path.rstrip("/") or "/"
        try:
            if path in ("/", pages.BASE):
                return self.overview(query) if path == pages.BASE else Reply(302, "text/plain", b"", {"Location": pages.BASE})
            if path.startswith(pages.BASE + "/trace/"):
                return self.trace(path.removeprefix(pages.BASE + "/trace/"))
            if path.startswith(pages.BASE + "/static/"):
                return self.asset(path.removeprefix(pages.BASE + "/static/"))
        except Exception:
            log.exception("dashboard request %s failed", path)
            return self._html(500, pages.error_page(500, "internal error (see the server log)"))
        return self._html(404, pages.error_page(404, "not found"))

    @staticmethod
    def _html(status: int, body: bytes) -> Reply:
        return Reply(status, "text/html; charset=utf-8", body, dict(SECURITY_HEADERS))

    def overview(self, query: Mapping[str, str]) -> Reply:
        range_name = query.get("range", "24h")
        bucket = query.get("bucket") or None
        now = self.clock()
        try:
            first = self._try(queries.first_trace_ts, self.query, self.db) if range_name == "all" else None
            window = queries.make_window(range_name, bucket, now, first if isinstance(first, int) else None)
        except ValueError as exc:
            return self._html(400, pages.error_page(400, str(exc)))
        q, db = self.query, self.db
        o = pages.Overview(
            window=window, now=now, source=self.source,
            rates=self._try(queries.pass_rates, q, db, window),
            volume=self._try(queries.volume_by_class, q, db, window),
            gates=self._try(queries.gate_hits, q, db, window),
            signals=self._try(queries.signal_counts, q, db, window),
            spend=self._try(queries.judge_spend, q, db, window),
            burn=self._try(queries.budget_burn, q, db, self.budget, now),
            alerts=self._try(queries.firing_alerts, q, db),
            failing=self._try(queries.failing_traces, q, db, window),
        )  # fmt: skip
        return self._html(200, pages.index_page(o))

    @staticmethod
    def _try(fn: Callable[..., Any], *args: Any) -> Any:
        """A section that cannot be read (e.g. a table missing on a server) shows its error; the page still renders."""
        try:
            return fn(*args)
        except Exception as exc:
            log.warning("dashboard: %s failed: %s", fn.__name__, exc)
            return exc

    def trace(self, raw_id: str) -> Reply:
        trace_id = valid_trace_id(raw_id)
        if trace_id is None:
            return self._html(400, pages.error_page(400, "a trace id is 32 hexadecimal digits"))
        detail = load_trace(self.query, self.db, trace_id)
        if not detail.found:
            return self._html(404, pages.error_page(404, f"no trace {trace_id} in the store"))
        return self._html(200, pages.trace_page(detail))

    def asset(self, name: str) -> Reply:
        body = self.static.get(name)  # exact names of the bundled files only: no path is ever opened
        if body is None:
            return self._html(404, pages.error_page(404, "not found"))
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=300"}
        return Reply(200, STATIC_TYPES[name[name.rfind(".") :]], body, headers)


# ---- on the worker's web server (Faust / aiohttp) -------------------------------------------
def add_dashboard(app: Any, store: Any, budget: Any = None) -> Dashboard:
    """Mount ``/dashboard``, ``/dashboard/trace/{trace_id}`` and ``/dashboard/static/{name}``."""
    from faust.web import Request, Response, View

    dashboard = Dashboard(store, budget)

    async def respond(view: View, request: Request) -> Response:
        path, query = request.path, {k: v for k, v in request.query.items()}  # type: ignore[attr-defined]
        reply = await asyncio.get_running_loop().run_in_executor(None, dashboard.handle, path, query)
        return view.bytes(reply.body, status=reply.status, headers={**reply.headers, "Content-Type": reply.content_type})

    @app.page(pages.BASE, name="dashboard")
    class DashboardIndex(View):
        async def get(self, request: Request) -> Response:
            return await respond(self, request)

    @app.page(pages.BASE + "/trace/{trace_id}", name="dashboard_trace")
    class DashboardTrace(View):
        async def get(self, request: Request, trace_id: str) -> Response:
            return await respond(self, request)

    @app.page(pages.BASE + "/static/{name}", name="dashboard_static")
    class DashboardStatic(View):
        async def get(self, request: Request, name: str) -> Response:
            return await respond(self, request)

    return dashboard


# ---- standalone ----------------------------------------------------------------------------
def make_server(dashboard: Dashboard, host: str = "127.0.0.1", port: int = 0) -> QuietHTTPServer:
    """An HTTP server for the dashboard (``serve_forever()`` to run; port 0 picks a free one)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "tracejudge-dashboard"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            reply = dashboard.handle(url.path, query)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            log.debug("dashboard %s " + format, self.address_string(), *args)

    server = QuietHTTPServer((host, port), Handler)
    server.label = "dashboard"
    return server
