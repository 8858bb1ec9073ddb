"""``tracejudge store-server``: one embedded ClickHouse (chDB) store shared by several workers.

See :mod:`stream.store_server`. Point every worker (and the CLI) at the printed DSN with
``TRACEJUDGE_CLICKHOUSE_DSN``. Registered on the shared typer app by the import at the end of
:mod:`stream.cli`.
"""

from __future__ import annotations

import os
import signal
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from stream.cli import _logging, app, err


@app.command("store-server")
def store_server(
    data_dir: Path = typer.Option(..., "--data-dir", help="chDB data directory (created if missing; one server per directory)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (off localhost, set a password and TLS)"),
    port: int = typer.Option(8124, "--port", help="port to serve on (0: any free port)"),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG logs every request"),
    config_file: Path | None = typer.Option(
        None, "--config-file", exists=True, dir_okay=False, readable=True,
        help="ClickHouse configuration the engine reads (e.g. remote_servers, macros)",
    ),
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", exists=True, dir_okay=False, readable=True,
        help="serve HTTPS with this PEM certificate (chain); clients trust its CA (DSN ?ca_cert=...)",
    ),
    tls_key: Path | None = typer.Option(
        None, "--tls-key", exists=True, dir_okay=False, readable=True, help="the certificate's PEM private key",
    ),
    user: str = typer.Option("default", "--user", help="the user name asked with the password"),
) -> None:
    """Serve one embedded ClickHouse store over ClickHouse's HTTP interface, for several workers on one host.

    With TRACEJUDGE_STORE_PASSWORD set (the environment only: a command line is visible to every user of the host),
    every request but /ping must give --user and that password."""
    from stream.store import StoreLockedError
    from stream.store_server import StoreServer

    _logging(log_level)
    password = os.environ.get("TRACEJUDGE_STORE_PASSWORD") or None
    if tls_key is not None and tls_cert is None:
        err.print("[red]--tls-key needs --tls-cert[/red]")
        raise typer.Exit(2)
    try:
        tls = None
        if tls_cert is not None:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(tls_cert, tls_key)
        server = StoreServer(data_dir, host, port, config_file, tls=tls, user=user, password=password)
    except StoreLockedError:
        err.print(f"[red]cannot start the store server: {escape(str(data_dir))} is held by another process "
                  "(a worker or another store server; one embedded engine per directory)[/red]", soft_wrap=True)  # fmt: skip
        raise typer.Exit(1) from None
    except Exception as exc:  # a port in use, an unreadable directory
        err.print(f"[red]cannot start the store server: {escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()  # shutdown() waits for serve_forever

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # the DSN alone on stdout (scripts read it); the rest goes to stderr
    sys.stdout.write(server.dsn + "\n")
    sys.stdout.flush()
    ask = f" (with user:password@ after {'https' if tls else 'http'}://)" if password else ""
    err.print(f"store server: data {escape(str(data_dir.resolve()))}; set TRACEJUDGE_CLICKHOUSE_DSN={server.dsn}{ask}",
              soft_wrap=True)  # fmt: skip
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
