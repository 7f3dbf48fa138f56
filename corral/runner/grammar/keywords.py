"""The JSON Schema keywords the converter knows, and checked reads of their values."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

from corral.runner.grammar.errors import SchemaError
from corral.runner.grammar.limits import MAX_REPEAT

# Keywords that raise SchemaError, and all keywords that constrain documents (the rest are
# annotations or unknown, and are ignored).
UNSUPPORTED: Final = (
    "not", "if", "dependentSchemas", "dependentRequired", "dependencies", "patternProperties",
    "propertyNames", "contains", "unevaluatedItems", "$dynamicRef", "$recursiveRef",
)  # fmt: skip
KEYWORDS: Final = frozenset({
    "type", "enum", "const", "properties", "required", "additionalProperties", "items",
    "prefixItems", "additionalItems", "minItems", "maxItems", "minLength", "maxLength", "pattern",
    "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf",
    "allOf", "$ref", "nullable", *UNSUPPORTED,
})  # fmt: skip
TYPES: Final = ("object", "array", "string", "number", "integer", "boolean", "null")
TYPE_HINTS: Final = (
    ("object", ("properties", "required", "additionalProperties")),
    ("array", ("items", "prefixItems", "additionalItems", "minItems", "maxItems")),
    ("string", ("minLength", "maxLength", "pattern")),
    ("number", ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")),
)
LOWER_BOUNDS: Final = frozenset({"minimum", "minLength", "minItems", "exclusiveMinimum"})
UPPER_BOUNDS: Final = frozenset({"maximum", "maxLength", "maxItems", "exclusiveMaximum"})
SUB_SCHEMAS: Final = frozenset({"items", "additionalProperties", "additionalItems"})


def as_schema(schema: object) -> dict[str, Any]:
    if schema is True:
        return {}
    if schema is False:
        raise SchemaError("schema `false` matches nothing")
    if not isinstance(schema, dict):
        raise SchemaError(f"a schema must be an object or a boolean, not {type(schema).__name__}")
    for key in schema:
        if not isinstance(key, str):
            raise SchemaError(f"schema keys must be strings, not {type(key).__name__}")
    for key in UNSUPPORTED:
        if key in schema and not (key == "propertyNames" and _any_key(schema[key])):
            raise SchemaError(f"the {key!r} keyword is not supported")
    return schema


def _any_key(names: object) -> bool:
    """Whether a ``propertyNames`` schema only says what every key already is: a string
    (``true``, ``{}``, ``{"type": "string"}``, as zod writes records). Such a schema
    constrains nothing and is accepted; any other is not supported."""
    if names is True:
        return True
    if not isinstance(names, dict):
        return False
    return all(key not in KEYWORDS or (key == "type" and names[key] == "string") for key in names)


def constraints(schema: dict[str, Any], *skip: str) -> bool:
    return any(key in KEYWORDS and key not in skip for key in schema)


def schema_list(schema: dict[str, Any], key: str) -> list[Any]:
    value = schema[key]
    if not isinstance(value, list) or not value:
        raise SchemaError(f"{key!r} must be a non-empty list of schemas")
    return value


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite(value: object, key: str) -> float:
    if not is_number(value):
        raise SchemaError(f"{key!r} must be a number")
    assert isinstance(value, int | float)
    if isinstance(value, float) and not math.isfinite(value):
        raise SchemaError(f"{key!r} must be finite")
    return value


def _count(schema: dict[str, Any], key: str) -> int | None:
    value = schema.get(key)
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SchemaError(f"{key!r} must be a non-negative integer")
    return value


def bounds(schema: dict[str, Any], key: str) -> tuple[int, int | None]:
    """``min<key>`` and ``max<key>`` as repetition bounds (maximum lowered to MAX_REPEAT)."""
    low = _count(schema, f"min{key}") or 0
    high = _count(schema, f"max{key}")
    if high is not None and high < low:
        raise SchemaError(f"max{key} is less than min{key}")
    if low > MAX_REPEAT:
        raise SchemaError(f"min{key} above {MAX_REPEAT} is not supported")
    return low, None if high is None else min(high, MAX_REPEAT)


def json_type_ok(value: object, type_name: str) -> bool:
    checks: dict[str, Callable[[object], bool]] = {
        "null": lambda v: v is None,
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: (
            is_number(v) and (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))
        ),
        "number": is_number,
        "string": lambda v: isinstance(v, str),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    return checks[type_name](value)
