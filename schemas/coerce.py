"""Attribute value coercion shared by the GenAI and OpenInference parsers.

Everything here is defensive: odd input (wrong types, invalid JSON) yields ``None`` or an empty
list, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

Attrs = Mapping[str, Any]

# ---- value helpers ------------------------------------------------------------------------------


def as_str(value: Any) -> str | None:
    """A non-empty string from a str/int/float attribute; None for anything else."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def as_int(value: Any) -> int | None:
    """An int from an int, integral float or numeric string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                return as_int(float(text))
            except ValueError:
                return None
    return None


def loads(value: Any) -> Any:
    """Decode a JSON string; pass through already-decoded lists/dicts; None on failure."""
    if isinstance(value, (list, dict)):
        return value
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, str):
        text = value.strip()
        if not text or text[0] not in "[{\"":
            return None
        try:
            return orjson.loads(text)  # ~2.5x faster than json on message lists
        except orjson.JSONDecodeError:  # NaN, integers past 64 bits, lone surrogates: json's rules
            try:
                return json.loads(text)
            except ValueError:
                return None
    return None


_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)  # json.dumps builds one per call


def as_text(value: Any) -> str | None:
    """Text as-is; other JSON-able values serialized (tool arguments, tool results)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return _ENCODER.encode(value)  # = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def str_list(value: Any) -> list[str]:
    """A list of strings from a list attribute, a JSON array string or a single string."""
    if isinstance(value, str):
        decoded = loads(value) if value.startswith("[") else None
        if decoded is None:
            return [value] if value else []
        value = decoded
    if isinstance(value, (list, tuple)):
        return [s for v in value if (s := as_str(v))]
    return []


# ---- attribute lookups (schemas.normalize runs them per span) ----------------------------------
# The common value types (str, int) and absent keys are answered inline; as_str / as_int only see
# the rest (same results).


def first_str(attrs: Attrs, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if key in attrs:
            value = attrs[key]
            if type(value) is str:
                if value:
                    return value
            elif (value := as_str(value)) is not None:
                return value
    return None


def get_str(attrs: Attrs, key: str) -> str | None:
    """``as_str(attrs.get(key))``."""
    value = attrs.get(key)
    if type(value) is str:
        return value or None
    return None if value is None else as_str(value)


def first_count(attrs: Attrs, keys: tuple[str, ...]) -> int:
    for key in keys:
        if key in attrs:
            value = attrs[key]
            if type(value) is not int:
                value = as_int(value)
            if value is not None and value >= 0:
                return value
    return 0
