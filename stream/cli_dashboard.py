"""``tracejudge dashboard``: the monitoring dashboard, served standalone against the store.

With a ClickHouse server DSN (or an embedded store no worker holds) it opens the store and serves
the page itself. While a worker holds the embedded store, the worker already serves the same page
at ``/dashboard`` on its web port: the command prints that URL instead.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from stream.cli import ConfigOpt, _logging, _settings, app, console, err
from stream.config import Settings


def _budget(settings: Settings) -> Any:
    """The budget of the configured judging file (None without one, or if it cannot be read)."""
    if settings.judging_file is None:
        return None
    from judges.config import JudgingConfigError, load_judging_config

    try:
        return load_judging_config(settings.judging_file).budget
    except JudgingConfigError as exc:
        err.print(f"[yellow]budget burn not shown: {escape(str(exc))}[/yellow]")
        return None


@app.command()
def dashboard(
    port: int = typer.Option(6067, "--port", help="port to serve on (0: any free port)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Serve the monitoring dashboard (pass rates with CIs, volumes, gates, signals, spend, failing traces)."""
    from stream.dashboard import Dashboard, make_server
    from stream.store import ClickHouseStore, StoreLockedError
    from stream.worker import read_worker_file

    settings = _settings(config)
    _logging(settings.log_level)
    info = read_worker_file(settings) if settings.embedded else None
    if info is not None:
        console.print(f"a worker (pid {info['pid']}) holds the embedded store and serves the dashboard:",
                      markup=False, soft_wrap=True)  # fmt: skip
        console.print(f"{info['url']}/dashboard", markup=False, soft_wrap=True)
        raise typer.Exit(0)
    try:
        store = ClickHouseStore.from_settings(settings)
    except StoreLockedError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from None
    try:
        if settings.embedded:  # our own data directory: make sure the tables exist (empty → "no data yet")
            store.migrate()
        server = make_server(Dashboard(store, _budget(settings)), host, port)
    except Exception:
        store.close()
        raise
    console.print(f"tracejudge dashboard: http://{host}:{server.server_port}/dashboard  (Ctrl-C stops)",
                  markup=False, soft_wrap=True)  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        store.close()
