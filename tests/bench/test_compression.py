"""bench/compression.py measures aiokafka's real codecs on real worker output: every codec gives
back what it was given, and shrinks it."""

from __future__ import annotations

from aiokafka import codec

from bench.compression import CODECS, main
from bench.judge import envelopes

DECODE = {"gzip (aiokafka's level 9)": codec.gzip_decode, "snappy": codec.snappy_decode,
          "lz4": codec.lz4_decode, "zstd": codec.zstd_decode}  # fmt: skip


def test_every_codec_round_trips_a_to_judge_envelope() -> None:
    (_, value), = envelopes(1)
    assert set(DECODE) == set(CODECS)
    for name, encode in CODECS.items():
        packed = encode(value)
        assert len(packed) < len(value) and DECODE[name](packed) == value, name


def test_main_reports_every_codec_for_both_inputs() -> None:
    out = main(["--envelopes", "3", "--messages", "5"])
    assert set(out) == {"to_judge envelopes", "per-trace OTLP requests"}
    for per_codec in out.values():
        assert set(per_codec) == set(CODECS)
        assert all(m["ratio"] > 1 and m["us_per_message"] > 0 and m["ms_per_mb"] > 0 for m in per_codec.values())
