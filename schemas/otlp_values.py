"""Python values -> OTLP ``AnyValue`` / ``KeyValue`` (the inverse of the decoder's attribute walk).

Used where the project writes OTLP itself: test factories and the benchmark's input generator.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def any_value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        av = AnyValue()
        av.array_value.values.extend(any_value(x) for x in v)
        return av
    if isinstance(v, dict):
        av = AnyValue()
        av.kvlist_value.values.extend(key_values(v))
        return av
    return AnyValue(string_value=str(v))


def key_values(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]
