"""The two ways the fault scenarios reach ClickHouse, and how each one is broken.

* ``embedded`` — the worker's own chDB engine; faults are injected at the clickhouse-connect client
  through the control file (``stream/faults.py``, ``TRACEJUDGE_FAULTS_FILE``);
* ``server`` — a real ``tracejudge store-server`` process (chDB behind ClickHouse's HTTP interface),
  reached through :class:`~tests.reliability.tcp_proxy.TcpProxy`: the network path itself is cut,
  or replies are lost, and the worker's client sees real socket errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stream.faults import write_faults
from tests.reliability.tcp_proxy import TcpProxy
from stream.demo.store_server_process import StoreServerProcess

MODES = ["embedded", "server"]


class Faults:
    """What a scenario needs: worker settings, down / up, lose N insert replies, faults counted."""

    settings: dict[str, Any]

    def down(self) -> None: ...

    def up(self) -> None: ...

    def lose_insert_replies(self, n: int) -> None: ...

    def injected(self, worker: Any) -> dict[str, int]: ...


class FileFaults(Faults):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.settings = {"faults_file": path}

    def down(self) -> None:
        write_faults(self.path, clickhouse="down")

    def up(self) -> None:
        write_faults(self.path, clickhouse="up")

    def lose_insert_replies(self, n: int) -> None:
        write_faults(self.path, ambiguous_inserts=n)

    def injected(self, worker: Any) -> dict[str, int]:
        f = worker.status()["faults"]
        return {"down_errors": f["down_errors"], "ambiguous_inserts": f["ambiguous_inserts"]}


class ProxyFaults(Faults):
    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.settings = {"clickhouse_dsn": proxy.url()}

    def down(self) -> None:
        self.proxy.cut()

    def up(self) -> None:
        self.proxy.restore()

    def lose_insert_replies(self, n: int) -> None:
        self.proxy.lose_replies(n, match=b"INSERT")  # the statement is in the request line's URL

    def injected(self, worker: Any) -> dict[str, int]:
        s = self.proxy.stats
        return {"down_errors": s["reset_at_accept"] + s["reset_live"], "ambiguous_inserts": s["replies_lost"]}


@contextmanager
def store_server(data_dir: Path) -> Iterator[str]:
    """A ``tracejudge store-server`` process on a free port; yields its DSN."""
    server = StoreServerProcess(data_dir)
    try:
        yield server.dsn
    finally:
        server.stop()


@contextmanager
def faults_for(mode: str, tmp_path: Path) -> Iterator[Faults]:
    if mode == "embedded":
        yield FileFaults(tmp_path / "faults.json")
        return
    with store_server(tmp_path / "store-server") as dsn:
        u = urlsplit(dsn)
        with TcpProxy((u.hostname or "127.0.0.1", u.port or 8123)) as proxy:
            yield ProxyFaults(proxy)
