"""stream/http_body.py: a request body as a stream, by ``Content-Length`` or chunked."""

from __future__ import annotations

import io

import pytest

from stream.http_body import body_stream, is_plain


def _chunked(parts: list[bytes], trailer: bytes = b"") -> bytes:
    return b"".join(b"%x;ext=1\r\n" % len(p) + p + b"\r\n" for p in parts) + b"0\r\n" + trailer + b"\r\n"


def test_a_content_length_body_is_read_to_its_length_and_no_further() -> None:
    rfile = io.BufferedReader(io.BytesIO(b"INSERT INTO t FORMAT TSV\na\t1\nNEXT REQUEST"))
    body = body_stream(rfile, {"Content-Length": "29"})
    assert body.readline(100) == b"INSERT INTO t FORMAT TSV\n"
    assert body.read() == b"a\t1\n"
    assert rfile.read() == b"NEXT REQUEST"  # the next request on the connection is left alone


@pytest.mark.parametrize("cuts", [[10], [1, 2, 3], [24, 25], list(range(1, 40))])
def test_a_chunked_body_split_anywhere_reads_back_whole(cuts: list[int]) -> None:
    data = b"INSERT INTO t FORMAT TSV\n" + b"".join(b"row %d\n" % i for i in range(50))
    parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    rfile = io.BufferedReader(io.BytesIO(_chunked(parts, b"X-Trailer: 1\r\n") + b"NEXT"))
    body = body_stream(rfile, {"Transfer-Encoding": "chunked"})
    assert body.readline(1 << 20) == b"INSERT INTO t FORMAT TSV\n"
    buf, out = bytearray(7), b""
    while got := body.readinto(buf):
        out += buf[:got]
    assert out == data[25:]
    assert rfile.read() == b"NEXT"


@pytest.mark.parametrize("raw, headers", [
    (b"only 10 by", {"Content-Length": "50"}),
    (b"20\r\nshort", {"Transfer-Encoding": "chunked"}),
])  # fmt: skip
def test_a_body_that_ends_early_raises(raw: bytes, headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="ended .* bytes early"):
        body_stream(io.BufferedReader(io.BytesIO(raw)), headers).read()


def test_malformed_lengths_raise_value_error() -> None:
    with pytest.raises(ValueError):
        body_stream(io.BufferedReader(io.BytesIO(b"zz\r\n")), {"Transfer-Encoding": "chunked"}).read()
    with pytest.raises(ValueError):
        body_stream(io.BufferedReader(io.BytesIO(b"")), {"Content-Length": "ten"}).read()


def test_an_empty_body_is_empty() -> None:
    assert body_stream(io.BufferedReader(io.BytesIO(b"rest")), {}).read() == b""
    assert body_stream(io.BufferedReader(io.BytesIO(b"0\r\n\r\n")), {"Transfer-Encoding": "chunked"}).read() == b""


def test_only_bodies_without_encoding_or_form_are_plain() -> None:
    assert is_plain({}) and is_plain({"Content-Encoding": "identity", "Content-Type": "text/plain"})
    assert not is_plain({"Content-Encoding": "lz4"})
    assert not is_plain({"Content-Type": "multipart/form-data; boundary=x"})
