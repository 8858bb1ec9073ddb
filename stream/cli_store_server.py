"""``tracejudge store-server``: one embedded ClickHouse (chDB) store shared by several workers.

See :mod:`stream.store_server`. Point every worker (and the CLI) at the printed DSN with
``TRACEJUDGE_CLICKHOUSE_DSN``. Registered on the shared typer app by the import at the end of
:mod:`stream.cli`.
"""

from __future__ import annotations

import signal
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
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (no authentication: keep it on localhost or a private network)"),
    port: int = typer.Option(8124, "--port", help="port to serve on (0: any free port)"),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG logs every request"),
    config_file: Path | None = typer.Option(
        None, "--config-file", exists=True, dir_okay=False, readable=True,
        help="ClickHouse configuration the engine reads (e.g. remote_servers, macros)",
    ),
) -> None:
    """Serve one embedded ClickHouse store over ClickHouse's HTTP interface, for several workers on one host."""
    from stream.store import StoreLockedError
    from stream.store_server import StoreServer

    _logging(log_level)
    try:
        server = StoreServer(data_dir, host, port, config_file)
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
    err.print(f"store server: data {escape(str(data_dir.resolve()))}; set TRACEJUDGE_CLICKHOUSE_DSN={server.dsn}", soft_wrap=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
