"""Scenario 8a: fuzz the OTLP decoders (fault matrix #13, first half).

Every input goes through exactly what the worker runs on a Kafka value: ``decode`` (``auto``
sniffing and the explicit encodings). The guarantee: an input either
decodes to valid spans — well-formed ids and times, rows the real ClickHouse store accepts — or
raises :class:`DecodeError` with a known reason. Any other exception, an unknown reason, a
decoded span the store refuses, or an input that takes more than ``SLOW_S`` is a failure. So is
OTLP/JSON that ``decode`` reads straight into spans (``schemas/otlp_json_spans.py``) into other
spans than the reference path (``json_format``, then ``decode_request``) gives.

Three generators, all hypothesis-driven, plus fixed deep-nesting cases:

* byte mutations (flips, overwrites, truncation, insertion, deletion, splices, duplication) of
  valid messages: the captured fixtures (``tests/fixtures/otlp``) and factory traces, protobuf
  and JSON;
* structurally generated protobufs written at the wire level: extreme/negative varints, ids of
  every length, out-of-range enums and times, missing fields, unknown fields and wrong wire
  types, nested ``AnyValue`` arrays/kvlists, invalid UTF-8, GenAI attributes with odd values;
  whatever decodes is also re-encoded as OTLP/JSON and must decode to the same rows;
* OTLP/JSON documents with structural damage: wrong types, numbers as strings, ids in
  upper-case hex / base64 / odd lengths, enum names, deep nesting, NaN/Infinity.

Inputs are counted by the test itself (not by hypothesis' ``max_examples``).
"""

from __future__ import annotations

import gc
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.decode import DecodeError, Encoding, Limits, decode, decode_request, parse_message
from schemas.model import Span
from schemas.otlp_json import to_otlp_json
from stream.rows import SPAN_COLUMNS, span_row
from stream.store import ClickHouseStore
from tests.factories import T0, genai_trace, otlp_json
from tests.reliability.fuzz_inputs import (
    CORPUS, HEX, JSON_DOCS, JSON_OP, MAX_NS, _kv, damage, f_fixed64, f_len, nested, one_span_request,
    request_bytes, to_text,
)
from tests.reliability.support import SIZES, pick

# Every reason schemas/decode.py may give (README, "Bad input"); anything else is a failure.
KNOWN_REASONS = frozenset({
    "undecodable", "empty_message", "message_too_large", "no_spans", "invalid_trace_id",
    "invalid_span_id", "invalid_parent_span_id", "missing_start_time", "span_end_before_start",
    "span_time_out_of_range", "attribute_too_large", "attribute_too_deep",
})  # fmt: skip
LIMITS = Limits(max_message_bytes=256 * 1024, max_attribute_bytes=4096)  # small: the limits get hit
SLOW_S = 2.0  # an input taking longer than this counts as a hang


class Tally:
    """Feeds inputs to the decoder and keeps the figures; stores what decodes in ClickHouse."""

    def __init__(self, store: ClickHouseStore, limits: Limits = LIMITS) -> None:
        self.store = store
        self.limits = limits
        self.inputs = self.decoded = self.spans = self.straight = 0  # straight: OTLP/JSON read straight into spans
        self.rejected: Counter[str] = Counter()
        self.failures: list[str] = []
        self.slowest = 0.0
        self._rows: list[tuple[tuple[Any, ...], bytes]] = []

    def feed(self, value: bytes, encoding: Encoding = "auto") -> list[Span] | None:
        self.inputs += 1
        started = time.perf_counter()
        try:
            spans, request = decode(value, encoding, self.limits)
        except DecodeError as exc:
            self._time(started, value, encoding)
            self.rejected[exc.reason] += 1
            if exc.reason not in KNOWN_REASONS:
                self._fail(f"unknown reason {exc.reason!r}", value)
            return None
        except Exception as exc:  # noqa: BLE001 - exactly what the test looks for
            self._fail(f"crash {exc!r}", value)
            return None
        self._time(started, value, encoding)
        self.decoded += 1
        self.spans += len(spans)
        if request is None:  # read straight into spans: the reference path must give the same
            try:
                want: Any = decode_request(parse_message(value, encoding, self.limits), self.limits)
            except DecodeError as exc:
                want = exc.reason
            if isinstance(want, str) or [s.model_dump() for s in want] != [s.model_dump() for s in spans]:
                self._fail(f"OTLP/JSON read straight into spans differs from the reference path ({want!r:.80})", value)
            self.straight += 1
        for s in spans:
            problem = span_problem(s)
            if problem:
                self._fail(f"invalid span: {problem}", value)
            try:
                row = span_row(s, "fuzz", 0, self.inputs, 0, False)
            except Exception as exc:  # noqa: BLE001 - the worker maps every decoded span to a row
                self._fail(f"row mapping crash {exc!r}", value)
            self._rows.append((row, value))
        if len(self._rows) >= 3000:
            self.flush()
        return spans

    def flush(self) -> None:
        """Insert the decoded spans into the real store; a refused row is a failure."""
        rows, self._rows = self._rows, []
        if not rows:
            return
        try:
            self.store.insert("spans", [r for r, _ in rows], SPAN_COLUMNS)
        except Exception:  # noqa: BLE001 - find the rows the store refuses, one by one
            for row, value in rows:
                try:
                    self.store.insert("spans", [row], SPAN_COLUMNS)
                except Exception as exc:  # noqa: BLE001
                    self._fail(f"decoded but unstorable: {exc!r}"[:400], value, stop=False)

    def _time(self, started: float, value: bytes, encoding: Encoding) -> None:
        took = time.perf_counter() - started
        if took > SLOW_S:  # a GC pause or a busy machine, or a slow input? time it again
            gc.disable()
            again = time.perf_counter()
            try:
                decode(value, encoding, self.limits)
            except DecodeError:
                pass
            finally:
                gc.enable()
            took = min(took, time.perf_counter() - again)
            if took > SLOW_S:
                self._fail(f"took {took:.1f}s (twice)", value)
        self.slowest = max(self.slowest, took)

    def _fail(self, what: str, value: bytes, stop: bool = True) -> None:
        self.failures.append(f"{what} on {value[:120]!r}… ({len(value)} bytes)")
        if stop:  # inside the example: hypothesis shrinks it to a minimal input
            raise AssertionError(self.failures[-1])

    def figures(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "decoded": self.decoded, "json_straight": self.straight, "spans": self.spans,
                "rejected": sum(self.rejected.values()), "by_reason": dict(self.rejected.most_common()),
                "crashes": len(self.failures), "slowest_ms": round(self.slowest * 1000, 1)}  # fmt: skip

    def check(self, min_inputs: int) -> None:
        self.flush()
        assert not self.failures, self.failures[:5]
        assert self.inputs == self.decoded + sum(self.rejected.values())
        assert self.inputs >= min_inputs
        assert self.decoded > 0 and len(self.rejected) >= 3  # both outcomes were exercised


def span_problem(s: Span) -> str | None:
    if len(s.trace_id) != 32 or not set(s.trace_id) <= HEX or set(s.trace_id) == {"0"}:
        return f"trace_id {s.trace_id!r}"
    if len(s.span_id) != 16 or not set(s.span_id) <= HEX or set(s.span_id) == {"0"}:
        return f"span_id {s.span_id!r}"
    if s.parent_span_id is not None and (len(s.parent_span_id) != 16 or not set(s.parent_span_id) <= HEX):
        return f"parent_span_id {s.parent_span_id!r}"
    if not 0 < s.start_ns <= s.end_ns <= MAX_NS:
        return f"times {s.start_ns}..{s.end_ns}"
    if not isinstance(s.attributes, dict) or not isinstance(s.resource_attributes, dict):
        return "attributes not a dict"
    return None


HYPO = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))


# ---- 1. byte mutations of valid messages ---------------------------------------------------
def mutate(value: bytes, ops: list[tuple[int, int, int, bytes]]) -> list[bytes]:
    """Apply ``ops`` one after the other; returns every intermediate value."""
    out, buf = [], bytearray(value)
    for kind, a, b, blob in ops:
        n = max(len(buf), 1)
        i = a % n
        if kind == 0:  # flip a bit
            if buf:
                buf[i] ^= 1 << (b % 8)
        elif kind == 1:  # overwrite a byte (0x00, 0xff, 0x7f, 0x80 ... via blob)
            if buf:
                buf[i] = blob[0] if blob else 0
        elif kind == 2:  # truncate
            del buf[i:]
        elif kind == 3:  # insert bytes
            buf[i:i] = blob
        elif kind == 4:  # delete a range
            del buf[i : i + 1 + b % 64]
        elif kind == 5:  # splice in a slice of another corpus message
            other = CORPUS[b % len(CORPUS)]
            k = (a * 31) % max(len(other), 1)
            buf[i:i] = other[k : k + 1 + len(blob) * 8]
        else:  # duplicate a range
            buf[i:i] = buf[i : i + 1 + b % 256]
        out.append(bytes(buf))
    return out


MUTATION = st.tuples(st.integers(0, 6), st.integers(0, 2**20), st.integers(0, 2**20), st.binary(max_size=12))


@pytest.mark.timeout(1200)  # the long version runs 1-5 min; over pytest's 300 s on a slow host
@pytest.mark.parametrize("size", SIZES)
def test_fuzz_mutated_messages(size: str, store: ClickHouseStore, figures: Callable[..., None]) -> None:
    tally = Tally(store)

    @settings(max_examples=pick(size, 500, 15_000), **HYPO)
    @given(st.integers(0, len(CORPUS) - 1), st.lists(MUTATION, min_size=1, max_size=8),
           st.sampled_from(["auto", "otlp_proto", "otlp_json"]))  # fmt: skip
    def run(index: int, ops: list[tuple[int, int, int, bytes]], encoding: Encoding) -> None:
        for value in mutate(CORPUS[index], ops):
            tally.feed(value, "auto")
            if encoding != "auto":
                tally.feed(value, encoding)

    started = time.monotonic()
    run()
    tally.check(min_inputs=pick(size, 2_000, 100_000))
    figures(scenario="8a fuzz: byte mutations of valid OTLP", guarantee="crashes = 0",
            **tally.figures(), seconds=round(time.monotonic() - started, 1))  # fmt: skip


# ---- 2. structurally generated protobufs (strategies in fuzz_inputs.py) ----------------------
def rows(spans: list[Span]) -> list[str]:
    return [repr(span_row(s, "t", 0, 0, 0, False)) for s in spans]  # repr: nan == nan


@pytest.mark.timeout(1200)  # the long version runs 1-5 min; over pytest's 300 s on a slow host
@pytest.mark.parametrize("size", SIZES)
def test_fuzz_structured_protobufs(size: str, store: ClickHouseStore, figures: Callable[..., None]) -> None:
    tally = Tally(store)
    mismatches: list[bytes] = []

    @settings(max_examples=pick(size, 250, 9_500), **HYPO)
    @given(request_bytes(), st.randoms(use_true_random=False))
    def run(generated: tuple[bytes, list[bytes]], rnd: random.Random) -> None:
        request, spans = generated
        tally.feed(request, "otlp_proto")
        for _ in range(6):  # and byte mutations of it (cheap; generation is the slow part)
            ops = [(rnd.randrange(7), rnd.randrange(2**20), rnd.randrange(2**20), rnd.randbytes(rnd.randrange(4)))
                   for _ in range(rnd.randrange(1, 4))]  # fmt: skip
            tally.feed(mutate(request, ops)[-1], "auto")
        for value in [request] + [one_span_request(s) for s in spans]:
            decoded = tally.feed(value, "auto")
            if decoded is None:
                continue
            as_json = to_otlp_json(parse_message(value, "otlp_proto", LIMITS))  # (repaired) request
            from_json = tally.feed(as_json, "otlp_json")
            if from_json is None or rows(from_json) != rows(decoded):
                mismatches.append(value)
                raise AssertionError(f"protobuf and its OTLP/JSON decode differently: {value[:300]!r}")

    started = time.monotonic()
    run()
    tally.check(min_inputs=pick(size, 2_000, 100_000))
    assert not mismatches
    figures(scenario="8a fuzz: generated weird-but-valid protobufs (+ their JSON)", guarantee="crashes = 0",
            **tally.figures(), json_mismatches=len(mismatches), seconds=round(time.monotonic() - started, 1))  # fmt: skip


# ---- 3. OTLP/JSON documents with structural damage (fuzz_inputs.py) ------------------------
@pytest.mark.timeout(1200)  # the long version runs 1-5 min; over pytest's 300 s on a slow host
@pytest.mark.parametrize("size", SIZES)
def test_fuzz_damaged_json(size: str, store: ClickHouseStore, figures: Callable[..., None]) -> None:
    tally = Tally(store)

    @settings(max_examples=pick(size, 600, 25_000), **HYPO)
    @given(st.integers(0, len(JSON_DOCS) - 1), st.lists(JSON_OP, min_size=1, max_size=4),
           st.sampled_from(["", " ", "\r\n\t", "\n", "\ufeff"]))  # fmt: skip
    def run(index: int, ops: list[tuple[int, int, Any, int]], prefix: str) -> None:
        value = to_text(damage(JSON_DOCS[index], ops), prefix)
        tally.feed(value, "auto")
        tally.feed(value, "otlp_json")
        for k in range(1, len(ops) + 1):  # and every prefix of the damage sequence
            tally.feed(to_text(damage(JSON_DOCS[index], ops[:k]), ""), "auto")

    started = time.monotonic()
    run()
    tally.check(min_inputs=pick(size, 2_000, 100_000))
    figures(scenario="8a fuzz: damaged OTLP/JSON documents", guarantee="crashes = 0",
            **tally.figures(), seconds=round(time.monotonic() - started, 1))  # fmt: skip


# ---- 4. deep nesting, fixed cases --------------------------------------------------------------
@pytest.mark.parametrize("depth", [1, 16, 17, 18, 40, 100, 1_000, 10_000, 200_000])
def test_deep_nesting_is_rejected_quickly_never_crashes(depth: int, store: ClickHouseStore) -> None:
    tally = Tally(store, Limits())  # default limits: 32 MiB messages
    span = f_len(1, b"\x01" * 16) + f_len(2, b"\x02" * 8) + f_fixed64(7, T0) + f_fixed64(8, T0 + 1)
    for container in (5, 6):  # arrays, kvlists: protobuf
        tally.feed(one_span_request(span + f_len(9, _kv("deep", nested(depth, container, f_len(1, b"leaf"))))))
    doc = json.loads(otlp_json(genai_trace(random.Random(1), 1)))
    attrs = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    attrs.append({"key": "deep", "value": {"stringValue": "PLACEHOLDER"}})
    text = json.dumps(doc)
    for open_, close in (('{"arrayValue":{"values":[', "]}}"), ('{"kvlistValue":{"values":[{"key":"k","value":', "}]}}")):
        deep = open_ * depth + '{"stringValue":"leaf"}' + close * depth
        tally.feed(text.replace('{"stringValue": "PLACEHOLDER"}', deep).encode(), "auto")
    tally.feed(b"[" * depth + b"]" * depth, "auto")  # not even an object
    tally.feed(b'{"resourceSpans":' + b"[" * depth + b"]" * depth + b"}", "otlp_json")
    tally.flush()
    assert not tally.failures, tally.failures
    assert tally.inputs == 6
    if depth <= 17:  # 17 nested containers: the innermost at depth 16, the deepest allowed
        assert tally.decoded == 4  # both encodings, both container kinds
    else:
        assert tally.decoded == 0 and set(tally.rejected) <= {"attribute_too_deep", "undecodable"}
    assert tally.slowest < SLOW_S


# ---- 5. fixed cases the fuzzers found -----------------------------------------------------------
def test_json_numbers_out_of_range_are_rejected_with_a_reason(store: ClickHouseStore) -> None:
    """Found by test_fuzz_damaged_json: ``"kind": Infinity`` made json_format raise OverflowError
    (not a ValueError), which escaped the decoder (the worker dead-lettered it as internal_error)."""
    tally = Tally(store)
    for field in ("kind", "startTimeUnixNano", "droppedAttributesCount", "intValue", "code"):
        for number in ("Infinity", "-Infinity", "NaN", "1e400", "-1e400", "18446744073709551616"):
            doc = json.loads(otlp_json(genai_trace(random.Random(2), 1)))
            span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
            target = {"intValue": span["attributes"][0]["value"], "code": span.setdefault("status", {})}.get(field, span)
            target[field] = "PLACEHOLDER"
            before = tally.decoded
            tally.feed(json.dumps(doc).replace('"PLACEHOLDER"', number).encode())
            # rejected as undecodable — or, for an enum, NaN read as 0 (unspecified / unset)
            assert tally.decoded == before or (field in ("kind", "code") and number == "NaN"), (field, number)
    tally.flush()
    assert not tally.failures
    assert tally.inputs == 30 and tally.rejected == {"undecodable": 28} and tally.decoded == 2
