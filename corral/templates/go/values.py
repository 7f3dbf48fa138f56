"""Go's view of Python values: truth, printing, types, field lookup and range iteration."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from corral.templates.go import limits


class EvalError(Exception):
    """An execution error; ``render`` prefixes the line of the action being executed."""


def truth(value: Any) -> bool:
    """Go's truth: false, 0, nil and empty strings, lists and maps are false."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | tuple | Mapping):
        return len(value) > 0
    return True


def text_of(value: Any) -> str:
    """How a value prints: Go's ``%v`` for scalars, JSON for maps and lists (as Ollama's types)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError as exc:  # Python refuses to print ints of more than 4300 digits
            raise EvalError(f"cannot print integer: {exc}") from exc
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, Mapping | list | tuple):
        return to_json(value)
    return str(value)


def format_float(value: float) -> str:
    """Go's ``%v`` for float64: shortest digits, exponent form below 1e-4 and from 1e6."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    leading = len(all_digits) - len(all_digits.lstrip("0"))
    digits = all_digits[leading:].rstrip("0")
    point = len(whole) + int(exponent or 0) - leading
    power = point - 1
    if power < -4 or power >= 6:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mant}e{'-' if power < 0 else '+'}{abs(power):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError, RecursionError) as exc:
        raise EvalError(f"cannot encode value as JSON: {exc}") from exc


def go_type(value: Any) -> str:
    """Go's name for the type, as ``printf`` and error messages show it."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    if isinstance(value, list | tuple):
        return "[]interface {}"
    return type(value).__name__


def kind(value: Any) -> str:
    """The comparison class: ints and floats are one kind, unlike Go (see the package docs)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, list | tuple):
        return "list"
    return "other"


def field(value: Any, name: str) -> Any:
    """Look up one field; private attributes and methods stay out of a template's reach."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value.get(name)
    if isinstance(value, str | int | float | list | tuple | bytes | set | frozenset):
        raise EvalError(f"can't evaluate field {name} in type {go_type(value)}")
    if name.startswith("_"):
        raise EvalError(f"can't evaluate private field {name}")
    attribute = getattr(value, name, None)
    if callable(attribute):
        raise EvalError(f"can't call method {name}: method calls are not supported")
    return attribute


def iteration(value: Any, variables: int) -> Iterable[tuple[Any, Any]]:
    """(key, element) pairs a range walks; nil ranges over nothing, as in Go."""
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return enumerate(value)
    if isinstance(value, Mapping):
        try:
            keys = sorted(value)
        except TypeError:
            keys = sorted(value, key=lambda key: (type(key).__name__, repr(key)))
        return [(key, value[key]) for key in keys]
    if isinstance(value, int) and not isinstance(value, bool):
        if variables > 1:
            raise EvalError(f"can't use {value} to iterate over more than one variable")
        return ((number, number) for number in range(value))
    raise EvalError(f"range can't iterate over {text_of(value)[:40]}")


def join_limited(parts: Sequence[str]) -> str:
    if sum(len(part) for part in parts) > limits.MAX_OUTPUT_CHARS:
        raise EvalError(f"result larger than {limits.MAX_OUTPUT_CHARS} characters")
    return "".join(parts)
