"""A TLS and SASL (PLAIN, SCRAM-SHA-256/512) front for a tansu broker, for tests of the worker against a secured cluster.

tansu (the tests' broker) has no SASL users to configure from here, and its own TLS did not
complete a handshake with aiokafka. :class:`KafkaGateway` listens on the port the broker
advertises (``LocalBroker(advertised_port=...)``), so every client connection after bootstrap goes
through it; it terminates TLS with a certificate made by ``openssl`` and, with ``users``, answers
the SASL exchange itself (the ``mechanisms`` it is given: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)
the way an Apache Kafka broker does (``ApiVersions`` lists
``SaslHandshake`` and ``SaslAuthenticate``; a wrong password is ``SASL_AUTHENTICATION_FAILED`` and
the connection is closed; any other request before authenticating closes it), then forwards the
connection's bytes to tansu unchanged. It counts what it saw, so a test can tell the worker really
authenticated.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import shutil
import ssl
import struct
import subprocess
import threading
from collections import Counter
from pathlib import Path

from aiokafka.protocol.admin import (
    ApiVersionResponse_v0,
    ApiVersionResponse_v1,
    ApiVersionResponse_v2,
    SaslAuthenticateResponse_v0,
    SaslAuthenticateResponse_v1,
    SaslHandShakeResponse_v1,
)

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
SASL_AUTHENTICATION_FAILED = 58
_API_VERSIONS_RESPONSES = {0: ApiVersionResponse_v0, 1: ApiVersionResponse_v1, 2: ApiVersionResponse_v2}


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1 / localhost, self-signed (it is its own CA), by openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed")
    cert, key = directory / "broker.pem", directory / "broker.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


class KafkaGateway:
    def __init__(self, port: int, upstream_port: int, *, certificate: tuple[Path, Path] | None = None,
                 users: dict[str, str] | None = None, mechanisms: tuple[str, ...] = ("PLAIN",)) -> None:  # fmt: skip
        self.port, self.upstream_port, self.users, self.mechanisms = port, upstream_port, users, mechanisms
        self.tls: ssl.SSLContext | None = None
        if certificate is not None:
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.load_cert_chain(str(certificate[0]), str(certificate[1]))
        # connections, mechanism:<asked>, authenticated:<user>, refused:<user>, unauthenticated
        self.seen: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def __enter__(self) -> KafkaGateway:
        self._thread.start()
        start = asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.tls)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.seen["connections"] += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        versions_asked: dict[int, int] = {}  # correlation id -> ApiVersions request version
        try:
            if self.users is not None and not await self._authenticate(reader, writer, up_reader, up_writer,
                                                                       versions_asked):  # fmt: skip
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
                            versions_asked: dict[int, int]) -> bool:  # fmt: skip
        """The SASL exchange, request by request, until the client authenticated (True) or not."""
        exchange: Plain | Scram | None = None  # the mechanism the handshake chose
        while True:
            body = await _frame(reader)
            api_key, version, correlation = struct.unpack(">hhi", body[:8])
            if api_key == API_VERSIONS:  # forwarded; the answer gets the SASL APIs added
                up_writer.write(struct.pack(">i", len(body)) + body)
                reply = await _frame(up_reader)
                writer.write(_frame_bytes(reply[:4] + _with_sasl(reply[4:], version)))
            elif api_key == SASL_HANDSHAKE:
                mechanism = _string(body, _after_header(body))[0]
                supported = mechanism in self.mechanisms
                self.seen["mechanism:" + mechanism] += 1
                answer = SaslHandShakeResponse_v1(error_code=0 if supported else 33, enabled_mechanisms=list(self.mechanisms))
                writer.write(_frame_bytes(struct.pack(">i", correlation) + answer.encode()))
                if not supported:
                    return False
                exchange = Plain(self.users or {}) if mechanism == "PLAIN" else Scram(self.users or {}, mechanism)
            elif api_key == SASL_AUTHENTICATE and exchange is not None:
                at = _after_header(body)
                (size,) = struct.unpack(">i", body[at : at + 4])
                reply, done = exchange.step(body[at + 4 : at + 4 + size])
                ok = reply is not None
                if done or not ok:
                    self.seen[("authenticated:" if ok else "refused:") + exchange.user] += 1
                fields = (0, None, reply) if ok else (SASL_AUTHENTICATION_FAILED, f"authentication failed for {exchange.user}", b"")
                answer = (SaslAuthenticateResponse_v1(*fields, 0) if version >= 1 else SaslAuthenticateResponse_v0(*fields))
                writer.write(_frame_bytes(struct.pack(">i", correlation) + answer.encode()))
                await writer.drain()
                if done or not ok:
                    return ok
            else:  # a request before authenticating: a broker with SASL listeners closes the connection
                self.seen["unauthenticated"] += 1
                return False
            await writer.drain()


class Plain:
    """SASL/PLAIN: one message, ``authzid NUL user NUL password``."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users, self.user = users, ""

    def step(self, message: bytes) -> tuple[bytes | None, bool]:
        """(reply, or None to refuse; whether the exchange is over)."""
        _authz, self.user, password = message.decode().split("\0")
        return (b"" if self.users.get(self.user) == password else None), True


class Scram:
    """SCRAM-SHA-256 / -512 (RFC 5802, RFC 7677) as a Kafka broker runs it: client-first,
    server-first (nonce, salt, iterations), client-final with its proof checked against the
    password, server-final with the server's signature (which the client checks in turn)."""

    ITERATIONS = 4096

    def __init__(self, users: dict[str, str], mechanism: str) -> None:
        self.users, self.user = users, ""
        self.hash = "sha256" if mechanism == "SCRAM-SHA-256" else "sha512"
        self.first_bare = self.server_first = ""

    def step(self, message: bytes) -> tuple[bytes | None, bool]:
        text = message.decode()
        if not self.server_first:  # client-first: "n,,n=<user>,r=<client nonce>"
            self.first_bare = text.split(",", 2)[2]
            fields = dict(f.split("=", 1) for f in self.first_bare.split(","))
            self.user = fields["n"].replace("=2C", ",").replace("=3D", "=")
            self.salt = os.urandom(16)
            nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
            self.server_first = f"r={nonce},s={base64.b64encode(self.salt).decode()},i={self.ITERATIONS}"
            return self.server_first.encode(), False
        without_proof, _, proof = text.rpartition(",p=")  # client-final
        password = self.users.get(self.user)
        if password is None or not without_proof.startswith("c=biws,r=" + self.server_first[2:].split(",")[0]):
            return None, True
        salted = hashlib.pbkdf2_hmac(self.hash, password.encode(), self.salt, self.ITERATIONS)
        auth = f"{self.first_bare},{self.server_first},{without_proof}".encode()
        stored = hashlib.new(self.hash, _hmac(self.hash, salted, b"Client Key")).digest()
        signature = _hmac(self.hash, stored, auth)
        client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=False))
        if not hmac.compare_digest(hashlib.new(self.hash, client_key).digest(), stored):
            return None, True
        server_signature = _hmac(self.hash, _hmac(self.hash, salted, b"Server Key"), auth)
        return b"v=" + base64.b64encode(server_signature), True


def _hmac(name: str, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, name).digest()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def _frame_bytes(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def _after_header(body: bytes) -> int:
    """Offset of a (non-flexible, header v1) request's body: after key, version, correlation id, client id."""
    (n,) = struct.unpack(">h", body[8:10])
    return 10 + max(n, 0)


def _string(body: bytes, at: int) -> tuple[str, int]:
    (n,) = struct.unpack(">h", body[at : at + 2])
    return body[at + 2 : at + 2 + n].decode(), at + 2 + n


def _with_sasl(payload: bytes, version: int) -> bytes:
    """An ApiVersions response (v0-v2) that also lists SaslHandshake v0-1 and SaslAuthenticate v0-1."""
    cls = _API_VERSIONS_RESPONSES[version]
    response = cls.decode(payload)
    apis = [tuple(a) for a in response.api_versions if a[0] not in (SASL_HANDSHAKE, SASL_AUTHENTICATE)]
    apis += [(SASL_HANDSHAKE, 0, 1), (SASL_AUTHENTICATE, 0, 1)]
    fields = [response.error_code, apis] + ([response.throttle_time_ms] if version >= 1 else [])
    return cls(*fields).encode()
