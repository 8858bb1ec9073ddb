"""A TCP proxy the fault tests control, between a client (a worker) and a server (the store server).

Modes:

* **pass** — bytes flow both ways untouched;
* **cut** — the server is unreachable: every live connection is reset (RST) at once and every new
  connection is accepted and reset immediately (the client sees "connection reset" / "remote end
  closed", as when a server or a link dies); :meth:`TcpProxy.restore` goes back to pass;
* **reply lost** — :meth:`TcpProxy.lose_replies` arms a count: the request is forwarded, the server
  executes it and starts to answer, and instead of relaying the answer the proxy resets the
  client's connection. The server did the work; the client never heard. ``match`` limits this to
  requests whose first bytes contain it (e.g. ``b"INSERT"``: clickhouse-connect puts the statement
  in the URL of the request line).

One thread accepts; one thread per connection moves bytes with a selector (0.1 s ticks, so a cut
reaches idle connections quickly). Counters are in :attr:`TcpProxy.stats`.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from typing import Any

HEAD_BYTES = 8192  # how much of each request is kept for ``match``


def _reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (linger on, timeout 0)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class TcpProxy:
    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = upstream
        self._listener = socket.create_server((host, port), reuse_port=False)
        self._listener.settimeout(0.2)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._cut = False
        self._generation = 0  # bumped by cut(): connections of an older generation reset themselves
        self._lose = 0
        self._match: bytes | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.stats = {"connections": 0, "reset_at_accept": 0, "reset_live": 0, "replies_lost": 0,
                      "bytes_up": 0, "bytes_down": 0}  # fmt: skip

    # ---- control ---------------------------------------------------------------------------
    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://{self.address[0]}:{self.address[1]}"

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            self._generation += 1

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def lose_replies(self, n: int, match: bytes | None = None) -> None:
        """Lose the replies to the next ``n`` requests (containing ``match``, if given)."""
        with self._lock:
            self._lose, self._match = n, match

    @property
    def replies_to_lose(self) -> int:
        return self._lose

    # ---- life cycle --------------------------------------------------------------------------
    def start(self) -> TcpProxy:
        t = threading.Thread(target=self._accept_loop, name="tcp-proxy-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in list(self._threads):
            t.join(5)
        self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- data path ---------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                cut, generation = self._cut, self._generation
                self.stats["connections"] += 1
                if cut:
                    self.stats["reset_at_accept"] += 1
            if cut:
                _reset(client)
                continue
            t = threading.Thread(target=self._serve, args=(client, generation), name="tcp-proxy-conn", daemon=True)
            t.start()
            self._threads = [x for x in self._threads if x.is_alive()] + [t]

    def _take_lost_reply(self, head: bytes) -> bool:
        with self._lock:
            if self._lose > 0 and (self._match is None or self._match in head):
                self._lose -= 1
                self.stats["replies_lost"] += 1
                return True
        return False

    def _serve(self, client: socket.socket, generation: int) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        head = bytearray()  # the start of the request in progress
        responding = False
        sel = selectors.DefaultSelector()  # epoll: select() cannot watch descriptors past 1023
        sel.register(client, selectors.EVENT_READ)
        sel.register(upstream, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                readable = [key.fileobj for key, _ in sel.select(0.1)]
                if self._generation != generation:  # cut since this connection opened: nothing more passes
                    with self._lock:
                        self.stats["reset_live"] += 1
                    _reset(client)
                    _reset(upstream)
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if responding:  # a new request on a kept-alive connection
                            responding = False
                            head.clear()
                        if len(head) < HEAD_BYTES:
                            head += data[: HEAD_BYTES - len(head)]
                        upstream.sendall(data)
                        self.stats["bytes_up"] += len(data)
                    else:
                        if not responding:
                            responding = True
                            if self._take_lost_reply(bytes(head)):
                                _reset(client)  # the server answered; the client never hears it
                                _reset(upstream)
                                return
                        client.sendall(data)
                        self.stats["bytes_down"] += len(data)
        except OSError:
            _reset(client)
        finally:
            sel.close()
            client.close()
            upstream.close()
