"""stream/http_server.py: a client that resets its connection is a DEBUG line, not a traceback on
stderr; a handler that fails is logged with its traceback. Real sockets on loopback."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from stream.http_server import QuietHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        raise ValueError("handler bug")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return None


@pytest.fixture
def server() -> Iterator[QuietHTTPServer]:
    s = QuietHTTPServer(("127.0.0.1", 0), Handler)
    s.label = "test server"
    t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield s
    s.shutdown()
    s.server_close()


def wait_for_record(caplog: pytest.LogCaptureFixture, text: str) -> logging.LogRecord:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for r in caplog.records:
            if text in r.getMessage():
                return r
        time.sleep(0.02)
    raise AssertionError(f"no log record with {text!r}: {[r.getMessage() for r in caplog.records]}")


def test_a_reset_connection_is_a_debug_line_not_a_traceback(server: QuietHTTPServer, caplog: pytest.LogCaptureFixture,
                                                            capfd: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="stream.http_server")
    c = socket.create_connection(server.server_address[:2])
    c.sendall(b"GET / HTTP/1.1\r\nHost: x")  # a request line read, then the headers never end
    time.sleep(0.1)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # RST, as from a killed process with unread data
    r = wait_for_record(caplog, "test server: client")
    assert r.levelno == logging.DEBUG and "went away" in r.getMessage()
    assert "Traceback" not in capfd.readouterr().err


def test_a_failing_handler_is_logged_with_its_traceback(server: QuietHTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="stream.http_server")
    host, port = server.server_address[:2]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{host}:{port}/", timeout=5)
    r = wait_for_record(caplog, "test server: error serving")
    assert r.levelno == logging.ERROR and r.exc_info is not None and "handler bug" in str(r.exc_info[1])
