"""judges/providers/wire_schema.py: the bounds constrained decoding refuses are left out of what
is sent; everything else, property names included, stays."""

from __future__ import annotations

import json

from judges.providers.wire_schema import UNSUPPORTED, strict_subset
from judges.rubric import default_output_schema


def test_the_default_output_schema_goes_without_bounds() -> None:
    schema = default_output_schema(["pass", "fail"])
    sent = strict_subset(schema)
    assert not any(f'"{k}"' in json.dumps(sent) for k in UNSUPPORTED)
    assert sent["properties"]["score"] == {"type": "number"}
    assert sent["properties"]["label"] == {"type": "string", "enum": ["pass", "fail"]}
    assert sent["required"] == schema["required"] and sent["additionalProperties"] is False
    assert schema["properties"]["score"]["maximum"] == 1  # the rubric's own schema is not changed


def test_nested_schemas_lose_bounds_and_properties_keep_their_names() -> None:
    schema = {
        "type": "object",
        "properties": {"minimum": {"type": "integer", "minimum": 0},  # a property named like a keyword
                       "list": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 9}},
                       "either": {"anyOf": [{"type": "number", "exclusiveMaximum": 5}, {"type": "null"}]}},
        "$defs": {"x": {"type": "string", "minLength": 1}},
        "additionalProperties": False,
    }  # fmt: skip
    assert strict_subset(schema) == {
        "type": "object",
        "properties": {"minimum": {"type": "integer"},
                       "list": {"type": "array", "items": {"type": "string"}},
                       "either": {"anyOf": [{"type": "number"}, {"type": "null"}]}},
        "$defs": {"x": {"type": "string"}},
        "additionalProperties": False,
    }  # fmt: skip
