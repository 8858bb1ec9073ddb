"""One embedded ClickHouse (chDB) engine served over ClickHouse's HTTP interface.

chDB allows one engine per data directory and process, so with the embedded store each worker
would keep its own data, and a Kafka partition that moves to another worker would not find the
spans its previous owner stored. ``tracejudge store-server`` hosts the engine once and speaks the
part of ClickHouse's HTTP interface that clickhouse-connect's HTTP client uses, so several workers
(and the CLI) share it through the ordinary ``http://host:port`` DSN — the same code path as
against a ClickHouse server. It is meant for tests, the demo and single-host multi-worker
deployments; production uses a real ClickHouse server (``docker-compose.yml``).

What it speaks:

* the statement in the ``query`` URL argument and/or the body (``text/plain``, or
  ``multipart/form-data`` fields when the client form-encodes large bind parameters), optionally
  compressed (``Content-Encoding``: lz4 frames, zstd, gzip, deflate), chunked or not;
* server-side parameters ``param_<name>`` (``{name:Type}`` in the SQL), the ``database``
  argument, settings as URL arguments (HTTP-transport ones are dropped);
* ``INSERT INTO t (cols) FORMAT F`` followed by data (the client's Native inserts), written with
  the engine's own ``INSERT ... FROM INFILE`` (as clickhouse-connect's chDB backend does), so
  ``insert_deduplication_token`` and every other insert setting apply as in the embedded mode.
  A plain body's data is copied to that file as it arrives, through one reused buffer (a
  compressed one is decoded in memory first);
* ``readonly``: such requests run on a second handle of the same engine that is itself in
  ``readonly = 2`` mode, so the engine refuses writes (error 164) while other settings still apply;
* errors as ClickHouse sends them: an HTTP error status, ``X-ClickHouse-Exception-Code`` and a
  ``Code: N. DB::Exception: ...`` body, so the client raises its usual ``DatabaseError``;
* ``GET /ping`` and ``GET /`` (``Ok.``);
* optionally HTTPS and a password (``--tls-cert`` / ``--tls-key``, ``TRACEJUDGE_STORE_PASSWORD``),
  asked as ClickHouse asks it (Basic authorization, ``X-ClickHouse-User`` / ``-Key`` headers or
  ``user`` / ``password`` URL arguments; a refusal is error 516, HTTP 401), for a store shared
  over a network, and to test the client's TLS and password settings end to end.

The engine is driven through clickhouse-connect's chDB backend (its raw ``execute_command`` /
``execute_raw_insert`` operations); every engine call holds one lock. Results are returned
whole, not streamed. An empty result in ``Native`` is an empty body (chDB emits no header block),
as in the embedded mode.
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import logging
import re
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from clickhouse_connect.driver._backend.chdb_backend import _quote_sql_string, _settings_clause
from clickhouse_connect.driver._backend.models import QueryRuntime
from clickhouse_connect.driver.exceptions import Error as ClickHouseClientError

from stream.http_body import BAD_ARGUMENTS, RequestError, body_stream, decompress, is_plain
from stream.http_server import QuietHTTPServer
from stream.store import connect

log = logging.getLogger(__name__)

# URL arguments that belong to the HTTP interface, not to the query's settings.
_TRANSPORT_ARGS = frozenset({
    "query", "database", "default_format", "user", "password", "query_id", "session_id", "session_timeout",
    "session_check", "quota_key", "compress", "decompress", "buffer_size", "wait_end_of_query", "role",
    "client_protocol_version", "enable_http_compression", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
})  # fmt: skip
_INSERT_WITH_DATA = re.compile(r"^\s*INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<fmt>\w+)\s*;?\s*$", re.I | re.S)
_MAX_STATEMENT_LINE = 1 << 20  # the INSERT statement heading a data body is on its first line

# ClickHouse error codes used for requests the engine never saw, and the HTTP status of some codes
UNKNOWN_TABLE, UNKNOWN_DATABASE, SYNTAX_ERROR, READONLY = 60, 81, 62, 164
AUTHENTICATION_FAILED = 516
_STATUS = {SYNTAX_ERROR: 400, BAD_ARGUMENTS: 400, UNKNOWN_TABLE: 404, UNKNOWN_DATABASE: 404, READONLY: 403,
           AUTHENTICATION_FAILED: 401}  # fmt: skip


@dataclass(frozen=True)
class InFile:
    """An insert's data in a file: a plain body, copied there as it arrived (``_Handler._post_plain``)."""

    path: str


@dataclass
class StoreRequest:
    """One HTTP request, decoded: the statement, its data (inserts), parameters and settings."""

    sql: str | bytes
    data: bytes | memoryview | InFile | None = None
    params: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    database: str = "default"


@dataclass
class StoreResult:
    body: bytes
    fmt: str | None  # the result set's format (None: the statement has no result set)
    summary: dict[str, Any]


def parse_request(url: str, headers: Any, body: bytes, infile: InFile | None = None) -> StoreRequest:
    """Build a :class:`StoreRequest` from the URL, the headers and the (raw) body. With ``infile``,
    ``body`` is at most the statement line and the insert's data is in that file."""
    args = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    body = decompress(body, headers.get("Content-Encoding", ""))
    content_type = headers.get("Content-Type", "")
    if content_type.startswith("multipart/form-data"):  # large bind parameters: fields query, param_*
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name is not None and part.get_filename() is None:
                args[str(name)] = part.get_payload(decode=True).decode("utf-8")
        body = b""
    query = args.pop("query", "")
    req = StoreRequest(sql="", database=args.pop("database", "") or "default")
    for key, value in args.items():
        if key.startswith("param_"):
            req.params[key] = value
        elif key not in _TRANSPORT_ARGS:
            req.settings[key] = value
    insert = _INSERT_WITH_DATA.match(query) if query else None
    if insert:  # statement in the URL, data in the body
        req.sql, req.data = query, (body if infile is None else infile)
    elif not query and body.lstrip()[:6].upper() == b"INSERT":
        line_end = body.find(b"\n", 0, _MAX_STATEMENT_LINE)
        head = body[: line_end if line_end >= 0 else len(body)].decode("utf-8", "replace")
        if _INSERT_WITH_DATA.match(head) and line_end >= 0:
            req.sql, req.data = head, (memoryview(body)[line_end + 1 :] if infile is None else infile)  # a view: no copy
    if req.data is None:  # a query or command: ClickHouse runs the URL query followed by the body
        text = query + ("\n" if query and body else "")
        req.sql = _text(text.encode() + body)
    if not req.sql.strip():
        raise RequestError("Empty query", SYNTAX_ERROR)
    return req


def _text(sql: bytes) -> str | bytes:
    try:
        return sql.decode("utf-8")
    except UnicodeDecodeError:  # binary literals bound into the statement: hand the bytes on
        return sql


class Engine:
    """The one chDB engine of a data directory, behind one lock."""

    def __init__(self, data_dir: Path, config_file: Path | None = None) -> None:
        dsn = f"chdb://{Path(data_dir).resolve()}"
        if config_file is not None:  # the engine's own ClickHouse configuration (e.g. remote_servers)
            dsn += "?" + urlencode({"config_file": str(Path(config_file).resolve())})
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self._rw = connect(dsn)  # StoreLockedError if another process holds the directory
        self._ro = connect(dsn)  # a second handle on the same engine
        self._ro.command("SET readonly = 2")  # no writes; settings may still change per query
        version, tz = self._rw.command("SELECT version(), timezone()")  # type: ignore[misc]
        self.version, self.timezone = str(version), str(tz)
        # settings a handle already has (clickhouse-connect's session defaults): HTTP clients send
        # them with every request, and applying one costs a snapshot, a SET and a restore
        self._session = {id(c): self._changed(c) for c in (self._rw, self._ro)}

    @staticmethod
    def _changed(client: Any) -> dict[str, str]:
        return dict(client.query("SELECT name, value FROM system.settings WHERE changed").result_rows)

    def run(self, req: StoreRequest) -> StoreResult:
        settings = dict(req.settings)
        readonly = settings.pop("readonly", "0")
        client = self._ro if readonly not in ("", "0") else self._rw
        session = self._session[id(client)]
        settings = {k: v for k, v in settings.items() if session.get(k) != v}
        backend = client._backend  # noqa: SLF001 - clickhouse-connect's chDB backend: its raw operations
        runtime = QueryRuntime(database=req.database, settings=settings)
        with self.lock:
            if req.data is not None:
                m = _INSERT_WITH_DATA.match(req.sql if isinstance(req.sql, str) else req.sql.decode("utf-8", "replace"))
                assert m is not None
                if isinstance(req.data, InFile):
                    summary = _insert_from_file(backend, m["target"], req.data.path, m["fmt"], runtime)
                else:
                    summary = backend.execute_raw_insert(m["target"], None, req.data, m["fmt"], None, runtime, None)
                return StoreResult(b"", None, summary)
            done = backend.execute_command(req.sql, req.params, None, None, runtime, None)
        return StoreResult(done.body, done.result_format, done.summary)

    def close(self) -> None:
        with self.lock:
            self._ro.close()
            self._rw.close()


def _insert_from_file(backend: Any, target: str, path: str, fmt: str, runtime: QueryRuntime) -> dict[str, Any]:
    """What clickhouse-connect's chDB backend (1.12) runs for ``execute_raw_insert`` once it has
    copied the data into a file of its own, run on the file the body was spooled to."""
    settings = backend._engine_settings(runtime.settings)  # noqa: SLF001
    clause = f" SETTINGS {_settings_clause(settings)}" if settings else ""
    sql = f"INSERT INTO {target} FROM INFILE {_quote_sql_string(path)}{clause} FORMAT {fmt}"
    return backend._insert_summary(backend._run(sql, "TabSeparated", database=runtime.database))  # noqa: SLF001


_COPY_BUFFER = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server: StoreServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.address_string(), *args)

    def _read_body(self) -> bytes:
        """The whole body in memory (compressed or form bodies, which are decoded as a whole)."""
        out = io.BytesIO()
        self._copy(body_stream(self.rfile, self.headers), out)
        return out.getvalue()

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        if parts.path == "/ping" or (parts.path == "/" and "query=" not in parts.query):
            self._reply(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
            return
        if self._authenticated():
            self._execute(b"")

    def do_POST(self) -> None:  # noqa: N802
        if not self._authenticated():
            return
        try:
            if is_plain(self.headers):
                self._post_plain()
                return
            body = self._read_body()
        except (ValueError, OSError) as exc:
            self.close_connection = True
            self._error(RequestError(f"Cannot read the request body: {exc}"))
            return
        self._execute(body)

    def _post_plain(self) -> None:
        """A body that is neither compressed nor a form. An insert's data (the statement in the URL
        or on the body's first line, as clickhouse-connect sends it) goes to a file through one
        reused buffer; reading tens of MB into new bytes objects and joining its chunks cost the
        server more CPU than the copy itself (each new buffer is memory faulted in page by page)."""
        body = body_stream(self.rfile, self.headers)
        query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True)).get("query", "")
        if query:
            head, insert = b"", _INSERT_WITH_DATA.match(query) is not None
        else:
            head = body.readline(_MAX_STATEMENT_LINE)
            insert = head.endswith(b"\n") and _INSERT_WITH_DATA.match(head.decode("utf-8", "replace")) is not None
        if not insert:
            self._execute(head + body.read())
            return
        with tempfile.NamedTemporaryFile(prefix="insert-", suffix=".data") as spool:
            self._copy(body, spool.file)
            spool.file.flush()
            self._execute(head, InFile(spool.name))

    def _copy(self, body: io.BufferedReader, sink: Any) -> None:
        buf = getattr(self, "_copy_buffer", None)
        if buf is None:  # one per connection (a handler serves one connection)
            buf = self._copy_buffer = memoryview(bytearray(_COPY_BUFFER))
        while got := body.readinto(buf):
            sink.write(buf[:got])

    def _execute(self, body: bytes, infile: InFile | None = None) -> None:
        engine = self.server.engine
        try:
            req = parse_request(self.path, self.headers, body, infile)
            result = engine.run(req)
        except (RequestError, ClickHouseClientError) as exc:
            self._error(exc)
            return
        except Exception as exc:  # the engine's own failure: still answer like ClickHouse
            log.exception("store server: request failed")
            self._error(RequestError(f"{type(exc).__name__}: {exc}", code=1001))
            return
        headers = {"Content-Type": "application/octet-stream", "X-ClickHouse-Timezone": engine.timezone,
                   "X-ClickHouse-Summary": json.dumps({k: str(v) for k, v in result.summary.items()})}  # fmt: skip
        if result.fmt:
            headers["X-ClickHouse-Format"] = result.fmt
        self._reply(200, result.body, headers)

    def _authenticated(self) -> bool:
        """With a password set, the request names its user and password as ClickHouse takes them
        (Basic authorization, ``X-ClickHouse-User`` / ``-Key`` headers, or ``user`` / ``password``
        URL arguments); otherwise it is refused as ClickHouse refuses it (516, HTTP 401) and the
        connection closed without reading its body."""
        expected = self.server.credentials
        if expected is None:
            return True
        user, password = self.headers.get("X-ClickHouse-User"), self.headers.get("X-ClickHouse-Key")
        basic = self.headers.get("Authorization", "")
        if basic[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(basic[6:], validate=True).decode("utf-8").partition(":")
            except ValueError:
                user = password = None
        if user is None:
            args = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
            user, password = args.get("user"), args.get("password")
        given = f"{user or 'default'}:{password or ''}".encode()
        if hmac.compare_digest(given, expected):
            return True
        self.close_connection = True
        self._error(RequestError(f"{user or 'default'}: Authentication failed: password is incorrect, or there is no "
                                 "user with such name.", code=AUTHENTICATION_FAILED))  # fmt: skip
        return False

    def _error(self, exc: Exception) -> None:
        code = getattr(exc, "code", None) or 1001  # 1001 = STD_EXCEPTION
        message = str(exc).strip()
        if not message.startswith("Code: "):
            message = f"Code: {code}. DB::Exception: {message}"
        body = f"{message} (version {self.server.engine.version})\n".encode()
        self._reply(_STATUS.get(code, 500), body, {"Content-Type": "text/plain; charset=UTF-8",
                                                   "X-ClickHouse-Exception-Code": str(code)})  # fmt: skip


class StoreServer(QuietHTTPServer):
    """``StoreServer(data_dir, host, port)``; ``.dsn`` is what clients use; ``serve_forever()``.

    With ``tls`` (a server-side ``ssl.SSLContext``) it speaks HTTPS, the handshake in each
    connection's own thread; with ``password`` every request but ``/ping`` must give ``user``
    (``default`` unless set) and that password, as a ClickHouse server with a password asks."""

    label = "store server"  # a client that goes away mid-request is a killed worker: logged at DEBUG

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 8124, config_file: Path | None = None,
                 tls: ssl.SSLContext | None = None, user: str = "default", password: str | None = None) -> None:  # fmt: skip
        self.tls = tls
        self.credentials = f"{user}:{password}".encode() if password is not None else None
        self.engine = Engine(data_dir, config_file)
        try:
            super().__init__((host, port), _Handler)
        except OSError:
            self.engine.close()
            raise
        if tls is not None:  # no handshake in the accepting thread: a slow client would stall accept()
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    @property
    def dsn(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.tls is not None else 'http'}://{host}:{port}"

    def server_close(self) -> None:
        super().server_close()
        self.engine.close()
