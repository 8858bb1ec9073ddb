"""The monitoring dashboard: ``/dashboard`` on the worker's web server, or ``tracejudge dashboard``.

* :mod:`.queries`, :mod:`.trace_data` — what is shown, read with parameterized queries;
* :mod:`.svg`, :mod:`.html`, :mod:`.pages` — server-side charts and pages, escaped by construction;
* :mod:`.server` — the request handler, its mount on the worker and the standalone server;
* ``static/`` — the stylesheet (package data; nothing is loaded from elsewhere at run time).
"""

from stream.dashboard.server import Dashboard, add_dashboard, make_server

__all__ = ["Dashboard", "add_dashboard", "make_server"]
