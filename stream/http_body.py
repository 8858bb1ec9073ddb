"""HTTP request bodies for ``tracejudge store-server``: the body as a stream, and its content encodings.

:func:`body_stream` reads a body of ``Content-Length`` bytes, or in chunked transfer encoding, as
one stream (a truncated body raises ``ValueError``), so the server can copy an insert's data
where it goes without holding the whole body in memory; :func:`decompress` undoes a
``Content-Encoding`` for the bodies that must be decoded as a whole.
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import Any


BAD_ARGUMENTS = 36  # ClickHouse's error code


class RequestError(Exception):
    """A malformed request: answered like a ClickHouse exception, with ``code``."""

    def __init__(self, message: str, code: int = BAD_ARGUMENTS) -> None:
        super().__init__(message)
        self.code = code


def is_plain(headers: Any) -> bool:
    """Whether a body is sent as is: no ``Content-Encoding``, not a form."""
    encoding = headers.get("Content-Encoding", "").strip().lower()
    return encoding in ("", "identity") and not headers.get("Content-Type", "").startswith("multipart/")


def body_stream(rfile: Any, headers: Any) -> io.BufferedReader:
    """The body of the request whose ``headers`` were just read from ``rfile``, as a stream."""
    return io.BufferedReader(_Body(rfile, headers), 1 << 16)


class _Body(io.RawIOBase):
    """A request's body as a stream: ``Content-Length`` bytes, or chunked transfer encoding undone."""

    def __init__(self, rfile: Any, headers: Any) -> None:
        self._rfile = rfile
        self._chunked = headers.get("Transfer-Encoding", "").lower() == "chunked"
        self._left = 0 if self._chunked else int(headers.get("Content-Length") or 0)
        self._chunks = 0
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._eof:
            return 0
        if not self._left:
            if not self._chunked or not self._next_chunk():
                self._eof = True
                return 0
        got = self._rfile.readinto(memoryview(b)[: min(len(b), self._left)])
        if not got:
            raise ValueError(f"the body ended {self._left} bytes early")
        self._left -= got
        return got

    def _next_chunk(self) -> bool:
        if self._chunks:
            self._rfile.readline()  # the CRLF after the last chunk's data
        self._chunks += 1
        size = int(self._rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size:
            self._left = size
            return True
        while self._rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return False


def decompress(body: bytes, encoding: str) -> bytes:
    """Undo a request's ``Content-Encoding`` (the client compresses each insert block separately)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "lz4":  # a concatenation of LZ4 frames, one per block
        import lz4.frame

        out, rest = bytearray(), body
        while rest:
            d = lz4.frame.LZ4FrameDecompressor()
            out += d.decompress(rest)
            if not d.eof:
                raise RequestError("truncated lz4 frame in the request body")
            rest = d.unused_data
        return bytes(out)
    if encoding == "zstd":
        from clickhouse_connect.driver.compression import _zstd_decompress

        return _zstd_decompress(body)  # handles concatenated frames
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise RequestError(f"Unknown Content-Encoding {encoding!r}")
