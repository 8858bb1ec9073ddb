"""The standard library's threading HTTP server as tracejudge's servers use it (the store server,
the dashboard, the demo's simulated provider, and the tests' local servers): daemon threads, and a
client that goes away mid-request — a killed worker, a keep-alive connection reset — logged at
DEBUG instead of socketserver's traceback on stderr. Any other error is logged with its traceback."""

from __future__ import annotations

import logging
import ssl
import sys
from http.server import ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    label = "http server"  # names the server in log lines

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("%s: client %s went away: %r", self.label, client_address, exc)
        elif isinstance(exc, ssl.SSLError):  # a client that does not trust the certificate, or speaks plain HTTP
            log.warning("%s: TLS with client %s failed: %s", self.label, client_address, exc)
        else:
            log.exception("%s: error serving %s", self.label, client_address)
