"""OTLP/JSON read straight into spans gives exactly what the reference path gives (json_format into
a protobuf request, then decode_request), or steps aside for it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.decode import DecodeError, Limits, decode, decode_request, parse_message
from schemas.otlp_json_spans import _EXTENSION, _KNOWN, KINDS, decode_otlp_json
from tests.factories import genai_trace, otlp_json, proto
from tests.reliability.fuzz_inputs import JSON_DOCS, JSON_OP, damage, to_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "otlp"
LIMITS = Limits()


def reference(value: bytes, limits: Limits = LIMITS) -> list[dict[str, Any]] | str:
    """The reference path's spans (as dicts, every field), or its dead-letter reason."""
    try:
        return [s.model_dump() for s in decode_request(parse_message(value, "otlp_json", limits), limits)]
    except DecodeError as exc:
        return exc.reason


def fast(value: bytes, limits: Limits = LIMITS) -> list[dict[str, Any]] | None:
    spans = decode_otlp_json(value, limits)
    return None if spans is None else [s.model_dump() for s in spans]


def one_span_doc(seed: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    doc = json.loads(otlp_json(genai_trace(random.Random(seed), 3)))
    return doc, doc["resourceSpans"][0]["scopeSpans"][0]["spans"][1]


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_captured_instrumentation_decodes_straight_to_the_reference_spans(name: str) -> None:
    value = (FIXTURES / name).read_bytes()
    got = fast(value)
    assert got is not None and got == reference(value)
    spans, request = decode(value)
    assert request is None and [s.model_dump() for s in spans] == got  # the worker's path took it


def test_factory_traces_and_the_collector_shape_of_every_field() -> None:
    rng = random.Random(5)
    for n in (1, 2, 7, 20):
        value = otlp_json(genai_trace(rng, n))
        assert fast(value) == reference(value) and fast(value) is not None
    doc, span = one_span_doc()
    # what the Collector's marshaler writes besides: flags, schema URLs, counts, events, status
    doc["resourceSpans"][0]["schemaUrl"] = "https://opentelemetry.io/schemas/1.26.0"
    doc["resourceSpans"][0]["scopeSpans"][0]["schemaUrl"] = ""
    span.update(flags=257, traceState="k=v", droppedAttributesCount=2, droppedEventsCount=0, droppedLinksCount=1,
                kind=3, status={"code": 2, "message": "boom"}, startTimeUnixNano=int(span["startTimeUnixNano"]),
                events=[{"timeUnixNano": span["endTimeUnixNano"], "name": "exception", "droppedAttributesCount": 0,
                         "attributes": [{"key": "exception.type", "value": {"stringValue": "KeyError"}}]}])  # fmt: skip
    span["attributes"] += [
        {"key": "n", "value": {"intValue": "-9223372036854775808"}}, {"key": "m", "value": {"intValue": 7}},
        {"key": "b", "value": {"boolValue": False}}, {"key": "d", "value": {"doubleValue": 0.25}},
        {"key": "d2", "value": {"doubleValue": 3}}, {"key": "e", "value": {"stringValue": ""}},
        {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "x"}, {"intValue": "2"}]}}},
        {"key": "a0", "value": {"arrayValue": {}}},
        {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": True}}]}}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "twice: the last one counts"}},
    ]  # fmt: skip
    span["traceId"] = span["traceId"].upper()
    got = fast(dumps(doc))
    assert got is not None and got == reference(dumps(doc))
    assert got[1]["trace_id"] == span["traceId"].lower() and got[1]["attributes"]["d2"] == 3.0


@pytest.mark.parametrize("limit,policy", [(64, "truncate"), (64, "dead_letter"), (1 << 20, "truncate")])
def test_long_strings_are_cut_or_refused_as_the_reference_does(limit: int, policy: Any) -> None:
    limits = Limits(max_attribute_bytes=limit, oversize_attribute_policy=policy)
    doc, span = one_span_doc(2)
    span["attributes"].append({"key": "long", "value": {"stringValue": "é" * 100}})
    span["events"] = [{"timeUnixNano": "5", "name": "e", "attributes": [
        {"key": "long.event", "value": {"arrayValue": {"values": [{"stringValue": "x" * 200}]}}}]}]  # fmt: skip
    doc["resourceSpans"][0]["resource"]["attributes"].append({"key": "r", "value": {"stringValue": "y" * 300}})
    value = dumps(doc)
    want = reference(value, limits)
    if policy == "dead_letter" and limit == 64:
        assert want == "attribute_too_large" and fast(value, limits) is None  # the reference path says why
    else:
        assert fast(value, limits) == want
        if limit == 64:
            assert {"long", "long.event", "resource.r"} <= set(want[1]["truncated_attributes"])


def _unknown_keys_everywhere(doc: dict[str, Any], span: dict[str, Any]) -> None:
    """A key no OTLP field has (a newer producer's field, a vendor's) in every kind of object:
    json_format skips it (ignore_unknown_fields), whatever its value."""
    rs = doc["resourceSpans"][0]
    span["links"] = [{"spanId": span["spanId"], "vendor.link": 1}]
    span["events"] = [{"timeUnixNano": "5", "name": "e", "newField": [None]}]
    span["attributes"] += [{"key": "k", "value": {"stringValue": "v", "vendor": None}, "newField": {}},
                           {"key": "kv", "value": {"kvlistValue": {"values": [], "x": 2}}}]  # fmt: skip
    rs["resource"]["entityRefs"] = [{"type": "host", "idKeys": [], "annotations": "?"}]
    for i, o in enumerate([doc, rs, rs["resource"], rs["scopeSpans"][0], rs["scopeSpans"][0]["scope"], span,
                           span["status"] if "status" in span else span.setdefault("status", {})]):  # fmt: skip
        o[f"x-vendor-{i}"] = {"anything": [1, None, "[a.b]"]}


READ_AND_DROPPED = {  # what the decoder does not keep: checked as json_format checks it, then dropped
    "links": lambda d, s: s.__setitem__("links", [
        {"traceId": s["traceId"], "spanId": s["spanId"], "traceState": "k=v", "droppedAttributesCount": 1, "flags": 257,
         "attributes": [{"key": "link.k", "value": {"intValue": "3"}},
                        {"key": "huge", "value": {"stringValue": "x" * 5000}}]},  # no limit applies: not kept
        {"traceId": "", "spanId": ""}, {}]),
    "scope attributes": lambda d, s: d["resourceSpans"][0]["scopeSpans"][0]["scope"].update(
        attributes=[{"key": "a", "value": {"stringValue": "b"}}, {"key": "e"}], droppedAttributesCount=0),
    "entity references": lambda d, s: d["resourceSpans"][0]["resource"].update(entityRefs=[
        {"schemaUrl": "https://opentelemetry.io/schemas/1.36.0", "type": "k8s.pod", "idKeys": ["k8s.pod.uid"],
         "descriptionKeys": ["k8s.pod.name"]}, {"type": "service"}, {}]),
    "unknown keys": lambda d, s: [o.__setitem__("x-vendor", {"anything": [1, None, "[a.b]"]}) for o in (
        d, d["resourceSpans"][0], d["resourceSpans"][0]["resource"], d["resourceSpans"][0]["scopeSpans"][0], s,
        *s["attributes"], *[kv["value"] for kv in s["attributes"]])],
    "null members of absent fields": lambda d, s: (
        s.update(traceState=None, links=None, flags=None, droppedLinksCount=None),
        d["resourceSpans"][0].update(schemaUrl=None),
        d["resourceSpans"][0]["scopeSpans"][0]["scope"].update(attributes=None, droppedAttributesCount=None),
        d["resourceSpans"][0]["resource"].update(entityRefs=None, droppedAttributesCount=None)),
}
READ_AND_KEPT = {  # rarer attribute values, as the reference path keeps them
    "bytes value": lambda d, s: s["attributes"].append({"key": "b", "value": {"bytesValue": "AAE="}}),
    "bytes, URL-safe and unpadded": lambda d, s: s["attributes"].append({"key": "b", "value": {"bytesValue": "-_8"}}),
    "bytes with a stray character": lambda d, s: s["attributes"].append({"key": "b", "value": {"bytesValue": "AA!E="}}),
    "long bytes": lambda d, s: s["attributes"].append({"key": "b", "value": {"bytesValue": "AAAA" * 2000}}),
    "empty value": lambda d, s: s["attributes"].append({"key": "e", "value": {}}),
    "key without a value": lambda d, s: s["attributes"].append({"key": "e"}),
    "empty values nested": lambda d, s: s["attributes"].append({"key": "e", "value": {"arrayValue": {"values": [
        {}, {"kvlistValue": {"values": [{"key": "k"}, {"key": "j", "value": {}}]}}]}}}),
    "unknown keys everywhere": _unknown_keys_everywhere,
    "null name": lambda d, s: s.__setitem__("name", None),
    "null parent": lambda d, s: s.__setitem__("parentSpanId", None),
    "null status": lambda d, s: s.__setitem__("status", None),
    "null value": lambda d, s: s["attributes"].append({"key": "n", "value": None}),
    "null oneof member beside one": lambda d, s: s["attributes"].extend([
        {"key": "i", "value": {"intValue": "5", "stringValue": None}},
        {"key": "j", "value": {"boolValue": None, "doubleValue": 0.5}}]),
    "null array values": lambda d, s: s["attributes"].append({"key": "a", "value": {"arrayValue": {"values": None}}}),
    "unknown key in a value": lambda d, s: s["attributes"].append({"key": "u", "value": {"intValue": 1, "unit": "s"}}),
    "unknown member alone": lambda d, s: s["attributes"].append({"key": "u", "value": {"decimalValue": "1.5"}}),
}  # fmt: skip


@pytest.mark.parametrize("limits", [Limits(max_attribute_bytes=4096, oversize_attribute_policy="dead_letter"),
                                    Limits(max_attribute_bytes=4096), LIMITS])  # fmt: skip
@pytest.mark.parametrize("case", list(READ_AND_DROPPED) + list(READ_AND_KEPT))
def test_rarer_forms_decode_straight_to_the_reference_spans(case: str, limits: Limits) -> None:
    doc, span = one_span_doc(3)
    (READ_AND_DROPPED | READ_AND_KEPT)[case](doc, span)
    value = dumps(doc)
    got, want = fast(value, limits), reference(value, limits)
    if case == "long bytes" and limits.oversize_attribute_policy == "dead_letter":
        assert want == "attribute_too_large" and got is None  # the reference path says why
        return
    assert got is not None and got == want
    if case == "long bytes":
        assert len(got[1]["attributes"]["b"]) == min(6000, limits.max_attribute_bytes)
        assert ("b" in got[1]["truncated_attributes"]) == (limits.max_attribute_bytes < 6000)
    if case in READ_AND_DROPPED:
        doc, span = one_span_doc(3)
        assert got == fast(dumps(doc), limits)  # the same spans as without them


UNUSUAL = {
    "snake_case key": lambda d, s: s.__setitem__("span_id", s.pop("spanId")),
    "enum by name": lambda d, s: s.__setitem__("kind", "SPAN_KIND_CLIENT"),
    "extension key": lambda d, s: s.__setitem__("[vendor.ext]", {"anything": [1]}),
    "extension key in a value": lambda d, s: s["attributes"].append({"key": "x", "value": {"[a]": 1}}),
    "snake_case twin, null": lambda d, s: s.__setitem__("trace_id", None),
    "snake_case value member": lambda d, s: s["attributes"].append({"key": "x", "value": {"string_value": "a"}}),
    "null in a list": lambda d, s: s["attributes"].append(None),
    "null array element": lambda d, s: s["attributes"].append({"key": "a", "value": {"arrayValue": {"values": [
        {"stringValue": "a"}, None]}}}),
    "null key": lambda d, s: s["attributes"].append({"key": None, "value": {"stringValue": "a"}}),
    "null trace id": lambda d, s: s.__setitem__("traceId", None),
    "entity reference id key a number": lambda d, s: d["resourceSpans"][0]["resource"].__setitem__(
        "entityRefs", [{"type": "host", "idKeys": [1]}]),
    "entity reference type a list": lambda d, s: d["resourceSpans"][0]["resource"].__setitem__(
        "entityRefs", [{"type": ["host"]}]),
    "float int": lambda d, s: s["attributes"].append({"key": "i", "value": {"intValue": 2.0}}),
    "int64 overflow": lambda d, s: s["attributes"].append({"key": "i", "value": {"intValue": str(2**63)}}),
    "time as float": lambda d, s: s.__setitem__("startTimeUnixNano", float(s["startTimeUnixNano"])),
    "zero start": lambda d, s: s.__setitem__("startTimeUnixNano", "0"),
    "end before start": lambda d, s: s.__setitem__("endTimeUnixNano", "1"),
    "zero span id": lambda d, s: s.__setitem__("spanId", "0" * 16),
    "base64 id": lambda d, s: s.__setitem__("traceId", "AAAAAAAAAAAAAAAAAAAAAQ=="),
    "short parent": lambda d, s: s.__setitem__("parentSpanId", "abcd"),
    "too deep": lambda d, s: s["attributes"].append({"key": "deep", "value": json.loads(
        '{"arrayValue":{"values":[' * 18 + '{"stringValue":"x"}' + "]}}" * 18)}),
    "two oneof members": lambda d, s: s["attributes"].append({"key": "t", "value": {"stringValue": "a", "intValue": 1}}),
    "no spans": lambda d, s: d["resourceSpans"][0]["scopeSpans"][0].__setitem__("spans", []),
    "bytes not base64": lambda d, s: s["attributes"].append({"key": "b", "value": {"bytesValue": "A"}}),
    "bytes as a number": lambda d, s: s["attributes"].append({"key": "b", "value": {"bytesValue": 7}}),
    "link id of odd length": lambda d, s: s.__setitem__("links", [{"traceId": "abc", "spanId": s["spanId"]}]),
    "link id not hex": lambda d, s: s.__setitem__("links", [{"spanId": "zz" * 8}]),
    "link count negative": lambda d, s: s.__setitem__("links", [{"droppedAttributesCount": -1}]),
    "link snake_case key": lambda d, s: s.__setitem__("links", [{"span_id": "x"}]),
    "link not an object": lambda d, s: s.__setitem__("links", ["x"]),
    "link value two members": lambda d, s: s.__setitem__("links", [{"attributes": [
        {"key": "t", "value": {"stringValue": "a", "intValue": 1}}]}]),
    "scope attribute without key": lambda d, s: d["resourceSpans"][0]["scopeSpans"][0]["scope"].__setitem__(
        "attributes", [{"value": {"stringValue": "b"}}]),
}  # fmt: skip


def test_keys_read_are_names_json_format_knows_and_extensions_are_spotted_alike() -> None:
    for keys in KINDS:
        assert keys <= _KNOWN[keys]  # a typo here would skip a real field as unknown
    assert _EXTENSION.pattern == json_format._VALID_EXTENSION_NAME.pattern


@pytest.mark.parametrize("case", list(UNUSUAL))
def test_anything_unusual_is_left_to_the_reference_path(case: str) -> None:
    doc, span = one_span_doc(3)
    UNUSUAL[case](doc, span)
    value = dumps(doc)
    assert fast(value) is None
    want = reference(value)
    try:
        spans, request = decode(value, "otlp_json")
        assert request is not None and [s.model_dump() for s in spans] == want
    except DecodeError as exc:
        assert exc.reason == want


@pytest.mark.parametrize("value", [b"\xef\xbb\xbf" + otlp_json(genai_trace(random.Random(4), 2)),
                                   b'{"resourceSpans":[{"resource":{"attributes":[{"key":"s","value":{"stringValue":"\\ud800"}}]}}]}',
                                   b'{"resourceSpans":[]', b"{}", b'{"resourceSpans":[]}'])  # fmt: skip
def test_json_orjson_refuses_or_without_spans_goes_the_reference_way(value: bytes) -> None:
    assert decode_otlp_json(value, LIMITS) is None
    try:
        spans, request = decode(value, "otlp_json")
        assert request is not None and [s.model_dump() for s in spans] == reference(value)
    except DecodeError as exc:
        assert exc.reason == reference(value)


def test_protobuf_input_keeps_its_request() -> None:
    value = proto(genai_trace(random.Random(6), 3))
    spans, request = decode(value)
    assert request is not None and len(spans) == 3


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.integers(0, len(JSON_DOCS) - 1), st.lists(JSON_OP, min_size=1, max_size=4))
def test_fuzzed_documents_decode_to_the_reference_spans_or_step_aside(index: int, ops: list[Any]) -> None:
    """The fault suite's damaged OTLP/JSON documents (wrong types, numbers as strings, odd ids,
    renamed keys, deep nesting, NaN): never different spans, never spans the reference refuses."""
    value = to_text(damage(JSON_DOCS[index], ops), "")
    got, want = fast(value, LIMITS), reference(value, LIMITS)
    assert got is None or got == want, (value[:300], want if isinstance(want, str) else "spans")
