"""JSON from a client, parsed with bounds: every failure is a ``BadRequestError`` (400).

Python's ``json`` accepts two things the rest of the server cannot take, so they are
refused here, at parse time, with a clear message:

- nesting deeper than ``MAX_JSON_DEPTH`` levels: the parser itself stops near 1000 levels
  with ``RecursionError``, and any code that walks the value later would too;
- a lone UTF-16 surrogate in a string or key (``"\\ud800"``, or its invalid UTF-8 encoding,
  which ``json`` lets through): no UTF-8 text can carry it, so it would fail wherever the
  string is encoded (the reply, a file name, the runner's request).

The cheap tests come first (a body with few brackets cannot nest deeply; most bodies hold no
escape that could be a surrogate); only then is the parsed value walked, without recursion.
"""

from __future__ import annotations

import json
import re
from typing import Any

from corral.errors import BadRequestError

__all__ = ["MAX_JSON_DEPTH", "check_json_text", "json_error_text", "load_json"]

#: deepest nesting of arrays and objects a body may have (a JSON schema in ``format`` or a
#: tool's parameters is a few levels deep)
MAX_JSON_DEPTH = 128

_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'[]{}"'))
_SURROGATE = re.compile("[\ud800-\udfff]")


def load_json(body: bytes | str) -> Any:
    """``json.loads`` for untrusted text; ``BadRequestError`` for anything it cannot use."""
    try:
        data = json.loads(body)
    except RecursionError as exc:
        raise BadRequestError(_too_deep()) from exc
    except ValueError as exc:
        raise BadRequestError(json_error_text(exc)) from exc
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    deep = raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH
    if deep or _MAYBE_SURROGATE.search(raw):
        _check_value(data)
    return data


def check_json_text(body: bytes) -> None:
    """``load_json``'s depth and surrogate checks on the raw bytes of a body, without
    parsing it (the route parses it later, its own way): for a guard in front of every
    route. Text that is not valid JSON is left for the route's parser to refuse."""
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and _too_deep_text(body):
        raise BadRequestError(_too_deep())
    if _MAYBE_SURROGATE.search(body):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return
        _check_value(data)


def _too_deep_text(body: bytes) -> bool:
    """Whether arrays and objects nest past ``MAX_JSON_DEPTH`` in ``body``, brackets inside
    strings not counted. Bytes operations in C do the bulk, at memory speed: escaped
    backslashes and quotes out, then everything but quotes and brackets, then what lies
    between quotes; Python only walks the brackets left (one per array or object)."""
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = body.translate(None, _NOT_STRUCTURE)
    depth = 0
    for bracket in b"".join(structure.split(b'"')[::2]):
        if bracket in b"[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        else:
            depth -= 1
    return False


def json_error_text(exc: ValueError) -> str:
    """The parser's complaint in the words Ollama's clients know (Go's decoder)."""
    message = str(exc)
    if "Expecting value: line 1 column 1" in message:
        return "invalid character looking for beginning of value"
    if isinstance(exc, json.JSONDecodeError) and exc.pos >= len(exc.doc.rstrip()):
        return "unexpected EOF"
    return f"invalid JSON: {message}"


def _too_deep() -> str:
    return f"invalid JSON: nesting deeper than {MAX_JSON_DEPTH} levels"


def _check_value(data: Any) -> None:
    """Walk a parsed value: its depth, and every string and key."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            found = _SURROGATE.search(value)
            if found is not None:
                raise BadRequestError(
                    f"invalid JSON: lone surrogate {ord(found.group()):#06x} in a string"
                    " (not valid Unicode text)"
                )
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise BadRequestError(_too_deep())
            if isinstance(value, dict):
                stack.extend((key, depth) for key in value)
                stack.extend((item, depth + 1) for item in value.values())
            else:
                stack.extend((item, depth + 1) for item in value)
