"""Coverage-guided fuzzing of the OTLP decoders with atheris (libFuzzer) — optional, not a test.

    .venv/bin/pip install atheris          # a manylinux wheel for CPython 3.11 (3.0.0)
    .venv/bin/python -m tests.reliability.atheris_decoders -runs=200000 [-max_total_time=600] [corpus_dir]

Same guarantee as ``test_fuzz_decoders.py``: an input either decodes to valid spans that map to
storage rows, or raises ``DecodeError`` with a known reason; anything else is a crash that
libFuzzer reports (and saves as ``crash-<sha1>``). The first byte of an input picks the encoding
(auto / otlp_proto / otlp_json), the rest is the Kafka value. Without a corpus directory the
captured fixtures and factory traces seed a temporary one.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["schemas", "stream.rows"]):
    from schemas.decode import DecodeError, decode_request, parse_message
    from stream.rows import span_row
    from tests.reliability.fuzz_inputs import CORPUS
    from tests.reliability.test_fuzz_decoders import KNOWN_REASONS, LIMITS, span_problem

ENCODINGS = ("auto", "otlp_proto", "otlp_json")


def one_input(data: bytes) -> None:
    if not data:
        return
    encoding, value = ENCODINGS[data[0] % 3], data[1:]
    try:
        spans = decode_request(parse_message(value, encoding, LIMITS), LIMITS)  # type: ignore[arg-type]
    except DecodeError as exc:
        if exc.reason not in KNOWN_REASONS:
            raise AssertionError(f"unknown reason {exc.reason!r}") from exc
        return
    for s in spans:
        problem = span_problem(s)
        if problem:
            raise AssertionError(f"invalid span: {problem}")
        span_row(s, "fuzz", 0, 0, 0, False)


def main(argv: list[str]) -> None:
    args = list(argv)
    if not any(not a.startswith("-") for a in args[1:]):  # no corpus directory given: seed one
        seeds = Path(tempfile.mkdtemp(prefix="tracejudge-atheris-"))
        for i, value in enumerate(CORPUS):
            (seeds / f"seed-{i}").write_bytes(b"\x00" + value)
        args.append(str(seeds))
    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
