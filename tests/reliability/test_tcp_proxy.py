"""The fault tests' TCP proxy against a real local HTTP server: pass, cut, restore, reply lost."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from stream.http_server import QuietHTTPServer
from tests.reliability.tcp_proxy import TcpProxy


class Upstream(QuietHTTPServer):  # a reset by the proxy's cut is a DEBUG line, not a traceback
    def __init__(self) -> None:
        self.received: list[bytes] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as clickhouse-connect's pool uses it

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.received.append(self.path.encode() + b" " + body)
                reply = b"stored " + body
                self.send_response(200)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        server = self
        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    s = Upstream()
    t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    yield s
    s.shutdown()
    s.server_close()


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[TcpProxy]:
    with TcpProxy(upstream.server_address[:2]) as p:
        yield p


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> bytes:
    conn.request("POST", path, body=body)
    return conn.getresponse().read()


def test_pass_relays_both_ways_on_a_kept_alive_connection(upstream: Upstream, proxy: TcpProxy) -> None:
    conn = http.client.HTTPConnection(*proxy.address, timeout=5)
    assert post(conn, "/?query=SELECT", b"one") == b"stored one"
    assert post(conn, "/?query=SELECT", b"two") == b"stored two"
    assert upstream.received == [b"/?query=SELECT one", b"/?query=SELECT two"]
    assert proxy.stats["connections"] == 1 and proxy.stats["replies_lost"] == 0


def test_cut_resets_live_and_new_connections_then_restore(upstream: Upstream, proxy: TcpProxy) -> None:
    live = http.client.HTTPConnection(*proxy.address, timeout=5)
    assert post(live, "/", b"before") == b"stored before"
    proxy.cut()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        post(live, "/", b"during-live")  # the kept-alive connection was reset
    fresh = http.client.HTTPConnection(*proxy.address, timeout=5)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        post(fresh, "/", b"during-new")
    assert upstream.received == [b"/ before"]  # nothing reached the server while cut
    assert proxy.stats["reset_live"] >= 1 and proxy.stats["reset_at_accept"] >= 1
    proxy.restore()
    again = http.client.HTTPConnection(*proxy.address, timeout=5)
    assert post(again, "/", b"after") == b"stored after"


def test_reply_lost_after_the_server_did_the_work(upstream: Upstream, proxy: TcpProxy) -> None:
    proxy.lose_replies(1, match=b"INSERT")
    conn = http.client.HTTPConnection(*proxy.address, timeout=5)
    assert post(conn, "/?query=SELECT", b"q") == b"stored q"  # does not match: relayed
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        post(conn, "/?query=INSERT+INTO+t", b"row")
    assert upstream.received[-1] == b"/?query=INSERT+INTO+t row"  # the server stored it
    assert proxy.stats["replies_lost"] == 1 and proxy.replies_to_lose == 0
    retry = http.client.HTTPConnection(*proxy.address, timeout=5)
    assert post(retry, "/?query=INSERT+INTO+t", b"row") == b"stored row"  # the count is spent
