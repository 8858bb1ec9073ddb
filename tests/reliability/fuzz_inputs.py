"""Input generators for the decoder fuzz tests (:mod:`tests.reliability.test_fuzz_decoders`):
protobufs written at the wire level (so fields can be absent, out of range, of the wrong wire type,
unknown, or nested past any sane depth) and OTLP/JSON documents damaged structurally."""

from __future__ import annotations

import base64
import copy
import json
import random
import re
import struct
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from schemas.otlp_json import to_otlp_json
from tests.factories import T0, genai_trace, otlp_json, proto, request

MAX_NS = 2**63 - 1
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "otlp"
HEX = frozenset("0123456789abcdef")


def corpus() -> list[bytes]:
    rng = random.Random(8)
    values = [p.read_bytes() for p in sorted(FIXTURES.iterdir()) if p.suffix in (".pb", ".json")]
    for n in (1, 3, 8):
        spans = genai_trace(rng, n)
        values += [proto(spans), otlp_json(spans)]
    rare = with_rare_fields(request(genai_trace(rng, 3)))
    return values + [rare.SerializeToString(), to_otlp_json(rare)]


def with_rare_fields(req: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """Fields the GenAI fixtures lack: links, scope attributes, bytes and empty attribute values."""
    scope_spans = req.resource_spans[0].scope_spans[0]
    scope_spans.scope.attributes.add(key="scope.k").value.string_value = "v"
    first, second = scope_spans.spans[0], scope_spans.spans[1]
    link = second.links.add(trace_id=first.trace_id, span_id=first.span_id, trace_state="k=v", flags=1)
    link.attributes.add(key="link.k").value.int_value = 3
    second.links.add(trace_id=bytes(16), span_id=b"\x01" * 8)
    second.attributes.add(key="blob").value.bytes_value = b"\x00\x01\xfe\xff"
    second.attributes.add(key="empty").value.SetInParent()  # an empty AnyValue: {"value": {}}
    second.attributes.add(key="unset")  # no value at all: json_format writes {"key": "unset"}
    return req


CORPUS = corpus()


# ---- 2. structurally generated protobufs, written at the wire level -------------------------
def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 / int32 -> ten-byte two's complement, as protobuf does
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def f_len(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def f_varint(field: int, n: int) -> bytes:
    return varint(field << 3) + varint(n)


def f_fixed64(field: int, n: int) -> bytes:
    return varint(field << 3 | 1) + (n & (1 << 64) - 1).to_bytes(8, "little")


def f_double(field: int, x: float) -> bytes:
    return varint(field << 3 | 1) + struct.pack("<d", x)


def nested(depth: int, container: int, core: bytes) -> bytes:
    """An AnyValue nesting ``depth`` arrays (container 5) or kvlists (6) around ``core``, built
    inside-out without quadratic copying."""
    prefixes, length = [], len(core)
    for _ in range(depth):
        inner = varint(1 << 3 | 2) + varint(length)  # ArrayValue.values / KeyValueList.values
        if container == 6:
            kv = f_len(1, b"k")  # KeyValue{key: "k", value: ...}
            inner = varint(1 << 3 | 2) + varint(len(kv) + len(varint(2 << 3 | 2)) + len(varint(length)) + length) + kv
            inner += varint(2 << 3 | 2) + varint(length)
        outer = varint(container << 3 | 2) + varint(len(inner) + length)
        prefixes.append(outer + inner)
        length += len(outer) + len(inner)
    return b"".join(reversed(prefixes)) + core


I64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 1, -1, 2**31, -(2**31), 2**63 - 1, -(2**63)]))
TIMES = st.one_of(
    st.integers(T0, T0 + 10**13),
    st.integers(T0 - 10**17, T0 + 10**17),  # several years around T0: many partition days
    st.sampled_from([0, 1, T0, MAX_NS - 1, MAX_NS, MAX_NS + 1, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)
DURATIONS = st.one_of(st.integers(0, 10**10), st.integers(0, 10**13), st.integers(-(10**9), -1),
                      st.sampled_from([0, 2**63, 2**64 - 1]))


D10 = st.integers(0, 9)


def ident(n: int) -> st.SearchStrategy[bytes]:
    good = st.integers(1, 2 ** (8 * n) - 1).map(lambda i: i.to_bytes(n, "big"))  # non-zero
    pick_one = lambda c, g, b: g if c < 8 else bytes(n) if c == 8 else b  # noqa: E731 - 80 % valid
    return st.builds(pick_one, D10, good, st.binary(max_size=2 * n + 1))


GENAI_KEYS = [
    "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system", "gen_ai.request.model",
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.total_tokens",
    "gen_ai.usage.prompt_tokens", "llm.token_count.prompt", "gen_ai.input.messages",
    "gen_ai.output.messages", "gen_ai.system_instructions", "gen_ai.prompt", "gen_ai.completion",
    "gen_ai.prompt.0.content", "gen_ai.prompt.0.role", "gen_ai.completion.0.tool_calls.0.name",
    "gen_ai.response.finish_reasons", "gen_ai.tool.name", "gen_ai.tool.call.arguments",
    "openinference.span.kind", "llm.input_messages.0.message.content", "llm.invocation_parameters",
    "llm.model_name", "output.value", "traceloop.span.kind", "traceloop.entity.input",
    "traceloop.entity.output", "error.type", "service.name", "exception.type", "body",
]  # fmt: skip
ODD_TEXT = [
    "", " 12 ", "1e30", "-5", "NaN", "inf", "99999999999999999999999999", "0x10", "9" * 5000,
    "[" * 3000, "{" * 3000, '{"args"', '"quoted', '[{"type":', "[{}]", "null", "true",
    '[{"role":"user","parts":[{"type":"text","content":"hi"}]}]', '{"message": "x"}',
    '[{"role":"assistant","tool_calls":[{"function":{"name":7}}]}]', '{"model": {"x": 1}}',
    "<class '", "<class ''>", "\u0000\u2028\uffff", "LLM", "TOOL", "agent", "tool",
]  # fmt: skip
TEXT = st.one_of(st.text(max_size=40), st.sampled_from(ODD_TEXT))
KEY = st.one_of(st.sampled_from(GENAI_KEYS), st.text(max_size=12))

UNKNOWN = st.one_of(  # unknown fields, and known field numbers with the wrong wire type
    st.builds(f_varint, st.integers(1, 40), I64),
    st.builds(f_len, st.integers(1, 40), st.binary(max_size=16)),
    st.builds(f_fixed64, st.integers(1, 40), I64),
    st.builds(lambda f, b: varint(f << 3 | 5) + b, st.integers(1, 40), st.binary(min_size=4, max_size=4)),
)
WEIRD_SCALAR = st.one_of(
    st.builds(lambda b: f_len(1, b), st.binary(max_size=8)),  # a string field with (likely) invalid UTF-8
    st.builds(lambda n: f_len(1, b"x" * n), st.sampled_from([4095, 4096, 4097, 20_000])),  # around the limit
    st.just(b""),  # an empty AnyValue
    UNKNOWN,
)
SCALAR = st.one_of(  # mostly well-typed values (so that spans decode), one branch in eight weird
    st.builds(lambda s: f_len(1, s.encode()), TEXT),
    st.builds(lambda b: f_varint(2, b), st.integers(0, 3)),
    st.builds(lambda n: f_varint(3, n), I64),
    st.builds(lambda x: f_double(4, x), st.floats()),
    st.builds(lambda b: f_len(7, b), st.binary(max_size=16)),
    st.builds(lambda s: f_len(1, s.encode()), TEXT),
    st.builds(lambda n: f_varint(3, n), I64),
    WEIRD_SCALAR,
)


def _kv(key: str, value: bytes) -> bytes:
    return f_len(1, key.encode()) + f_len(2, value)


ANY_VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.builds(lambda vs: f_len(5, b"".join(f_len(1, v) for v in vs)), st.lists(inner, max_size=4)),
        st.builds(lambda kvs: f_len(6, b"".join(f_len(1, _kv(k, v)) for k, v in kvs)),
                  st.lists(st.tuples(KEY, inner), max_size=4)),  # fmt: skip
        st.builds(nested, st.integers(1, 30), st.sampled_from([5, 6]), inner),
    ),
    max_leaves=6,
)
def attrs(field: int) -> st.SearchStrategy[bytes]:
    return st.lists(st.builds(lambda k, v: f_len(field, _kv(k, v)), KEY, ANY_VALUE), max_size=4).map(b"".join)


ATTRS, EVENT_ATTRS, RESOURCE_ATTRS = attrs(9), attrs(3), attrs(1)
LINK_ATTRS, SCOPE_ATTRS = attrs(4), attrs(3)  # Span.Link.attributes, InstrumentationScope.attributes


D5, D20, ONE_TWO, ZERO_ONE = st.integers(0, 4), st.integers(0, 19), st.integers(1, 2), st.integers(0, 1)
EVENT_NAMES = st.sampled_from(["exception", "gen_ai.user.message", "gen_ai.choice", "gen_ai.content.prompt", "e"])
PARENT = st.one_of(st.just(b""), st.builds(lambda b: f_len(4, b), ident(8)))
ORDER = st.randoms(use_true_random=False)
TRACE_ID, SPAN_ID = ident(16), ident(8)


@st.composite
def span_bytes(draw: st.DrawFn) -> bytes:
    start = draw(TIMES)
    events = b"".join(
        f_len(11, f_fixed64(1, draw(TIMES)) + f_len(2, draw(EVENT_NAMES).encode()) + draw(EVENT_ATTRS))
        for _ in range(draw(ZERO_ONE))
    )
    links = b"".join(  # Span.Link: trace_id, span_id, trace_state, attributes (the decoder keeps no link)
        f_len(13, f_len(1, draw(TRACE_ID)) + f_len(2, draw(SPAN_ID)) + f_len(3, draw(TEXT).encode()) + draw(LINK_ATTRS))
        for _ in range(draw(ZERO_ONE))
    )
    parts = [
        f_len(1, draw(TRACE_ID)), f_len(2, draw(SPAN_ID)), draw(PARENT), f_len(5, draw(TEXT).encode()),
        f_varint(6, draw(I64)), f_fixed64(7, start), f_fixed64(8, start + draw(DURATIONS)), draw(ATTRS),
        events, links, f_len(15, f_varint(3, draw(I64)) + f_len(2, draw(TEXT).encode())),
    ]  # fmt: skip
    draw(ORDER).shuffle(parts)  # field order is free in protobuf
    if draw(D5) == 0:
        parts.append(draw(UNKNOWN))
    return b"".join(parts)


SPANS = st.lists(span_bytes(), min_size=1, max_size=2)


def one_span_request(span: bytes) -> bytes:
    return f_len(1, f_len(2, f_len(2, span)))  # ResourceSpans{ScopeSpans{Span}}


@st.composite
def request_bytes(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A request and its spans (each is also fed alone: one bad span rejects a whole request)."""
    if draw(D20) == 0:
        return b"", []  # an empty request
    out, spans = [], []
    for _ in range(draw(ONE_TWO)):
        scopes = b""
        for _ in range(draw(ONE_TWO)):
            batch = draw(SPANS)
            spans += batch
            scope = f_len(1, draw(TEXT).encode()) + draw(SCOPE_ATTRS)
            scopes += f_len(2, f_len(1, scope) + b"".join(f_len(2, s) for s in batch))
        if draw(D5) == 0:
            scopes += draw(UNKNOWN)
        out.append(f_len(1, f_len(1, draw(RESOURCE_ATTRS)) + scopes))
    return b"".join(out), spans


# ---- 3. OTLP/JSON documents with structural damage ------------------------------------------
JSON_DOCS = [json.loads(v) for v in CORPUS if v[:1] == b"{"]
ID_KEYS = ("traceId", "spanId", "parentSpanId")
DEEP = "\u0000deep:"  # placeholder string, replaced after json.dumps by a deep nest (no recursion)


def paths(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append((node, k))
        paths(v, out)
    return out


def id_variant(value: Any, how: int) -> Any:
    is_hex = isinstance(value, str) and len(value) % 2 == 0 and set(value.lower()) <= HEX
    raw = bytes.fromhex(value) if is_hex else b"\x01" * 8
    return [value.upper() if isinstance(value, str) else value, base64.b64encode(raw).decode(), "0x" + raw.hex(),
            raw.hex()[:-1], raw.hex() + "00", "", int.from_bytes(raw, "big"), raw.hex() + "zz", None,
            base64.urlsafe_b64encode(raw).decode().rstrip("=")][how % 10]  # fmt: skip


JSON_KEYS = st.sampled_from(["stringValue", "intValue", "arrayValue", "kvlistValue", "values", "key", "value",
                             "bytesValue", "doubleValue", "boolValue", "x"])  # fmt: skip


def json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(inner, max_size=3), st.dictionaries(JSON_KEYS, inner, max_size=3))


JSON_WEIRD = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
        st.sampled_from(["", "0", "-1", "1e30", "18446744073709551616", "NaN", "Infinity", "0x1f", "AAAA",
                         "SPAN_KIND_SERVER", "STATUS_CODE_ERROR", "BOGUS_ENUM", " 7 ", "\ud7ff\ue000"]),
        st.text(max_size=20), st.integers(0, 200_000).map(lambda n: f"{DEEP}{n}"),
    ),  # fmt: skip
    json_containers,
    max_leaves=8,
)
JSON_OP = st.tuples(st.integers(0, 2**20), st.integers(0, 8), JSON_WEIRD, st.integers(0, 9))


def damage(doc: Any, ops: list[tuple[int, int, Any, int]]) -> Any:
    doc = json.loads(json.dumps(doc))
    for where, kind, weird, how in ops:
        found = paths(doc, [])
        if not found:
            break
        node, key = found[where % len(found)]
        value = node[key]
        if kind == 0 or kind == 1:
            node[key] = copy.deepcopy(weird)  # hypothesis may hand out one object twice
        elif kind == 2 and isinstance(node, dict):
            del node[key]
        elif kind == 3:
            target = found[(where * 7 + 1) % len(found)]
            if isinstance(target[0], dict) and target[1] in ID_KEYS:
                target[0][target[1]] = id_variant(target[0][target[1]], how)
        elif kind == 4:  # numbers as strings and back, floats for ints
            if isinstance(value, (int, float)):
                node[key] = str(value)
            elif isinstance(value, str) and value.isdigit():
                node[key] = float(value)
        elif kind == 5 and isinstance(node, dict):  # snake_case / unknown key names
            node[key.replace("Id", "_id").replace("Spans", "_spans") if how % 2 else key + "X"] = node.pop(key)
        elif kind == 6:
            node[key] = [value]  # wrap in a list
        elif kind == 7 and isinstance(value, (dict, list)) and value:
            node[key] = json.loads(json.dumps(value)) if how % 2 else {"values": value}
        elif kind == 8 and isinstance(node, dict):  # one more key: unknown, an extension, a snake_case twin; or null
            extra = ["x-vendor", "[vendor.ext]", re.sub("([A-Z])", lambda m: "_" + m[1].lower(), key), key][how % 4]
            node[extra] = None if how >= 5 else copy.deepcopy(weird)
    return doc


def to_text(doc: Any, prefix: str) -> bytes:
    text = json.dumps(doc, ensure_ascii=False)
    while DEEP in text:  # expand the placeholders: up to 200k levels of nesting
        i = text.index(DEEP)
        j = text.index('"', i)
        n = int(text[i + len(DEEP) : j])
        text = text[: i - 1] + "[" * n + "]" * n + text[j + 1 :]
    return (prefix + text).encode("utf-8", "surrogatepass")


