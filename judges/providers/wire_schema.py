"""The output schema as a provider's structured-output mode takes it.

Both APIs compile the schema into constrained decoding and accept only a subset of JSON Schema:
Anthropic refuses numeric, string-length and array-size bounds with HTTP 400 ("For 'integer' type,
property 'minimum' is not supported"), and OpenAI's strict mode has refused several of them too.
Those bounds are left out of what is sent; :func:`judges.rubric_judge.parse_output` checks them on
every answer all the same (score in [0, 1], explanation and evidence lengths), so nothing the
rubric asks goes unchecked, and the rubric, its hash and the verdict rows are unchanged.
"""

from __future__ import annotations

from typing import Any

#: bounds constrained decoding does not take (checked in code instead)
UNSUPPORTED = frozenset({
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties",
})  # fmt: skip

_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")  # name -> schema
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SCHEMAS = ("items", "additionalProperties", "not", "contains")


def strict_subset(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without :data:`UNSUPPORTED` keywords, in it and in every schema nested in it (a
    property merely *named* ``minimum`` stays)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in UNSUPPORTED:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            value = {name: strict_subset(s) if isinstance(s, dict) else s for name, s in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            value = [strict_subset(s) if isinstance(s, dict) else s for s in value]
        elif key in _SCHEMAS and isinstance(value, dict):
            value = strict_subset(value)
        out[key] = value
    return out
