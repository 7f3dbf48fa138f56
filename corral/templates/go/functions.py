"""The functions a template may call, Go's builtins and Ollama's, with their arities."""

from __future__ import annotations

import datetime
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from corral.templates.go import limits
from corral.templates.go.printf import sprintf
from corral.templates.go.values import (
    EvalError,
    go_type,
    join_limited,
    kind,
    text_of,
    to_json,
    truth,
)


@dataclass(frozen=True, slots=True)
class Func:
    call: Callable[[list[Any]], Any]
    min_args: int
    max_args: int | None
    builds: bool = False
    """Whether the result is new (a string or list), so it counts against the build budget."""


def _fn_and(args: list[Any]) -> Any:
    return next((arg for arg in args if not truth(arg)), args[-1])


def _fn_or(args: list[Any]) -> Any:
    return next((arg for arg in args if truth(arg)), args[-1])


def _fn_not(args: list[Any]) -> bool:
    return not truth(args[0])


def _fn_eq(args: list[Any]) -> bool:
    """Go's eq: true if the first argument equals any other; nil equals only nil."""
    first, first_kind = args[0], kind(args[0])
    for other in args[1:]:
        other_kind = kind(other)
        if first_kind == "nil" or other_kind == "nil":
            equal = first_kind == other_kind
        elif first_kind != other_kind:
            raise EvalError("incompatible types for comparison")
        elif first_kind in ("map", "list"):
            raise EvalError(f"non-comparable type {go_type(first)}")
        else:
            equal = bool(first == other)
        if equal:
            return True
    return False


def _less(left: Any, right: Any) -> bool:
    left_kind, right_kind = kind(left), kind(right)
    if {left_kind, right_kind} - {"number", "string"}:
        raise EvalError("invalid type for comparison")
    if left_kind != right_kind:
        raise EvalError("incompatible types for comparison")
    return bool(left < right)


def _fn_ne(args: list[Any]) -> bool:
    return not _fn_eq(args)


def _fn_lt(args: list[Any]) -> bool:
    return _less(args[0], args[1])


def _fn_le(args: list[Any]) -> bool:
    return _less(args[0], args[1]) or _fn_eq(args)


def _fn_gt(args: list[Any]) -> bool:
    return not _fn_le(args)


def _fn_ge(args: list[Any]) -> bool:
    return not _less(args[0], args[1])


def _fn_len(args: list[Any]) -> int:
    value = args[0]
    if isinstance(value, str | list | tuple | Mapping):
        return len(value)
    raise EvalError(f"len of type {go_type(value)}")


def _int_index(key: Any) -> int:
    if isinstance(key, bool) or not isinstance(key, int):
        raise EvalError(f"cannot index slice/array with type {go_type(key)}")
    return key


def _index_one(item: Any, key: Any) -> Any:
    if item is None:
        raise EvalError("index of untyped nil")
    if isinstance(item, Mapping):
        if isinstance(key, list | dict | set):
            raise EvalError(f"cannot index map with type {go_type(key)}")
        return item.get(key)
    if isinstance(item, str | list | tuple):
        position = _int_index(key)
        if not 0 <= position < len(item):
            raise EvalError(f"index out of range: {position}")
        return ord(item[position]) if isinstance(item, str) else item[position]
    raise EvalError(f"can't index item of type {go_type(item)}")


def _fn_index(args: list[Any]) -> Any:
    item = args[0]
    for key in args[1:]:
        item = _index_one(item, key)
    return item


def _fn_slice(args: list[Any]) -> Any:
    item, keys = args[0], args[1:]
    if item is None:
        raise EvalError("slice of untyped nil")
    if not isinstance(item, str | list | tuple):
        raise EvalError(f"can't slice item of type {go_type(item)}")
    if len(keys) > 2:
        raise EvalError(f"too many slice indexes: {len(keys)}")
    bounds = [_int_index(key) for key in keys]
    start = bounds[0] if bounds else 0
    end = bounds[1] if len(bounds) > 1 else len(item)
    if not 0 <= start <= len(item) or not 0 <= end <= len(item):
        raise EvalError(f"index out of range: {start if start > len(item) else end}")
    if start > end:
        raise EvalError(f"invalid slice index: {start} > {end}")
    result = item[start:end]
    return list(result) if isinstance(result, tuple) else result


def _fn_print(args: list[Any]) -> str:
    """Go's Sprint: a space goes between operands only when neither is a string."""
    parts: list[str] = []
    previous_string = False
    for position, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if position and not is_string and not previous_string:
            parts.append(" ")
        parts.append(text_of(arg))
        previous_string = is_string
    return join_limited(parts)


def _fn_println(args: list[Any]) -> str:
    parts = [text_of(arg) for arg in args]
    return join_limited([" ".join(parts), "\n"]) if parts else "\n"


def _escape_input(args: list[Any]) -> str:
    text = args[0] if len(args) == 1 and isinstance(args[0], str) else _fn_print(args)
    if len(text) > limits.MAX_OUTPUT_CHARS:
        raise EvalError(f"argument larger than {limits.MAX_OUTPUT_CHARS} characters")
    return text


_HTML_ESCAPES: Final = str.maketrans(
    {"&": "&amp;", "'": "&#39;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "\0": "\ufffd"}
)
_JS_ESCAPES: Final = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
}


def _fn_html(args: list[Any]) -> str:
    return _escape_input(args).translate(_HTML_ESCAPES)


def _js_char(char: str) -> str:
    escaped = _JS_ESCAPES.get(char)
    if escaped is not None:
        return escaped
    code = ord(char)
    if code < 0x20 or (code >= 0x80 and not char.isprintable()):
        return f"\\u{code:04X}"
    return char


def _fn_js(args: list[Any]) -> str:
    return "".join(_js_char(char) for char in _escape_input(args))


def _fn_urlquery(args: list[Any]) -> str:
    return urllib.parse.quote_plus(_escape_input(args), safe="")


def _fn_json(args: list[Any]) -> str:
    return to_json(args[0])


def _fn_current_date(args: list[Any]) -> str:
    return datetime.date.today().isoformat()


def _fn_yesterday_date(args: list[Any]) -> str:
    return (datetime.date.today() - datetime.timedelta(days=1)).isoformat()


_TYPESCRIPT_TYPES: Final = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "array": "any[]",
    "object": "Record<string, any>",
    "null": "null",
}


def _fn_typescript_type(args: list[Any]) -> str:
    """Ollama's mapping of a tool property's JSON-schema type to a TypeScript type."""
    value = args[0]
    if isinstance(value, Mapping):
        value = value.get("type")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        return "any"
    names = [
        _TYPESCRIPT_TYPES.get(item, "any") if isinstance(item, str) else "any" for item in value
    ]
    return " | ".join(names)


FUNCTIONS: Final[Mapping[str, Func]] = {
    "and": Func(_fn_and, 1, None),
    "or": Func(_fn_or, 1, None),
    "not": Func(_fn_not, 1, 1),
    "eq": Func(_fn_eq, 2, None),
    "ne": Func(_fn_ne, 2, 2),
    "lt": Func(_fn_lt, 2, 2),
    "le": Func(_fn_le, 2, 2),
    "gt": Func(_fn_gt, 2, 2),
    "ge": Func(_fn_ge, 2, 2),
    "len": Func(_fn_len, 1, 1),
    "index": Func(_fn_index, 1, None),
    "slice": Func(_fn_slice, 1, None, builds=True),
    "print": Func(_fn_print, 0, None, builds=True),
    "println": Func(_fn_println, 0, None, builds=True),
    "printf": Func(sprintf, 1, None, builds=True),
    "html": Func(_fn_html, 0, None, builds=True),
    "js": Func(_fn_js, 0, None, builds=True),
    "urlquery": Func(_fn_urlquery, 0, None, builds=True),
    "json": Func(_fn_json, 1, 1, builds=True),
    "currentDate": Func(_fn_current_date, 0, None),
    "yesterdayDate": Func(_fn_yesterday_date, 0, None),
    "toTypeScriptType": Func(_fn_typescript_type, 1, 1),
}


def check_arity(name: str, func: Func, count: int) -> None:
    low, high = func.min_args, func.max_args
    if low <= count and (high is None or count <= high):
        return
    want = str(low) if low == high else f"at least {low}" if high is None else f"{low} to {high}"
    raise EvalError(f"wrong number of args for {name}: want {want} got {count}")
