"""GBNF text: expressions, literals and classes, and the fixed rules for JSON values."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

JSON_GRAMMAR: Final = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9]{1,4})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
"""
"""``format: "json"``: any JSON object. Whitespace is bounded so that a small model cannot wander
into endless newlines, which unbounded ``ws`` rules invite."""

HEX = "[0-9a-fA-F]"

# Rule bodies for JSON building blocks, and which of them each one uses. `char` is one JSON
# string character that decodes to exactly one code point: a raw character (no controls, no
# surrogates) or an escape; a \u escape is a non-surrogate or a whole surrogate pair.
PRIMITIVES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "value": (
        "object | array | string | number | boolean | null",
        ("object", "array", "string", "number", "boolean", "null"),
    ),
    "object": (
        '"{" ws ( string ":" ws value ( "," ws string ":" ws value )* )? "}" ws',
        ("string", "value", "ws"),
    ),
    "array": ('"[" ws ( value ( "," ws value )* )? "]" ws', ("value", "ws")),
    "string": ('"\\"" char* "\\"" ws', ("char", "ws")),
    "char": (
        r'[^"\\\x00-\x1F\uD800-\uDFFF] | "\\" ( ["\\/bfnrt] | "u" ( [0-9a-cA-CeEfF] '
        + HEX
        + "{3} | [dD] [0-7] "
        + HEX
        + "{2} | [dD] [89abAB] "
        + HEX
        + '{2} "\\\\u" [dD] [c-fC-F] '
        + HEX
        + "{2} ) )",
        (),
    ),
    "number": (
        '"-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,2} )? ws',
        ("ws",),
    ),
    "integer": ('"-"? ( "0" | [1-9] [0-9]{0,15} ) ws', ("ws",)),
    "boolean": ('( "true" | "false" ) ws', ("ws",)),
    "null": ('"null" ws', ("ws",)),
    "ws": ('| " " | "\\n" [ \\t]{0,20}', ()),
    "fmt-date": (
        '[1-9] [0-9]{3} "-" ( ( "0" [13578] | "1" [02] ) "-" fmt-d31 | ( "0" [469] | "11" ) "-" '
        'fmt-d30 | "02" "-" fmt-d28 ) | fmt-leap-year "-02-29"',
        ("fmt-d28", "fmt-d30", "fmt-d31", "fmt-leap-year"),
    ),
    "fmt-leap-year": (
        '[1-9] [0-9] ( [02468] [48] | [2468] "0" | [13579] [26] ) '
        '| ( [2468] [048] | [13579] [26] ) "00"',
        (),
    ),
    "fmt-d28": ('"0" [1-9] | "1" [0-9] | "2" [0-8]', ()),
    "fmt-d30": ('fmt-d28 | "29" | "30"', ("fmt-d28",)),
    "fmt-d31": ('fmt-d30 | "31"', ("fmt-d30",)),
    "fmt-time": (
        '( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? '
        '( "Z" | [-+] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )',
        (),
    ),
    "fmt-date-time": ('fmt-date "T" fmt-time', ("fmt-date", "fmt-time")),
    "fmt-uuid": (
        f'{HEX}{{8}} "-" {HEX}{{4}} "-" {HEX}{{4}} "-" {HEX}{{4}} "-" {HEX}{{12}}',
        (),
    ),
}
FORMATS: Final = {
    "date": "fmt-date",
    "time": "fmt-time",
    "date-time": "fmt-date-time",
    "uuid": "fmt-uuid",
}

FRACTION: Final = '( "." [0-9]{1,16} )?'
ZERO_FRACTION: Final = '( "." "0"{1,16} )?'
QUOTE: Final = '"\\""'
EMPTY_OBJECT: Final = '"{" ws "}" ws'

RE_NAME = re.compile(r"[A-Za-z0-9-]+")
RE_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')
RE_CLASS = re.compile(r"\[(?:[^\]\\]|\\.)*\]")


def _is_group(expr: str) -> bool:
    """Whether ``expr`` is one parenthesised group, ``( ... )``."""
    if not expr.startswith("("):
        return False
    depth, i = 0, 0
    while i < len(expr):
        ch = expr[i]
        if ch in '"[':
            close = '"' if ch == '"' else "]"
            i += 1
            while expr[i] != close:
                i += 2 if expr[i] == "\\" else 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i == len(expr) - 1
        i += 1
    return False


def _is_atom(expr: str) -> bool:
    return bool(
        RE_NAME.fullmatch(expr)
        or RE_LITERAL.fullmatch(expr)
        or RE_CLASS.fullmatch(expr)
        or _is_group(expr)
    )


def alt(exprs: Sequence[str]) -> str:
    """Alternatives as one sequence-safe expression (an empty one matches nothing written)."""
    unique = list(dict.fromkeys(exprs))
    if len(unique) == 1:
        return unique[0]
    return "( " + " | ".join(unique) + " )"


def _postfix(expr: str, suffix: str) -> str:
    if not suffix or not expr:
        return expr
    return (expr if _is_atom(expr) else f"( {expr} )") + suffix


def repeat(expr: str, low: int, high: int | None) -> str:
    """``expr`` repeated ``low`` to ``high`` times (``None``: no upper bound)."""
    if high is not None and high <= 0:
        return ""
    if high is None:
        suffix = "*" if low == 0 else "+" if low == 1 else f"{{{low},}}"
    elif low == high:
        suffix = "" if low == 1 else f"{{{low}}}"
    elif low == 0 and high == 1:
        suffix = "?"
    else:
        suffix = f"{{{low},{high}}}"
    return _postfix(expr, suffix) if suffix else expr


def seq(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def gbnf_literal(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02X}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _class_char(code: int) -> str:
    if code < 0x80:
        ch = chr(code)
        if ch.isalnum() or ch in " !#$%&'()*+,./:;<=>?@_`{|}~":
            return ch
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


def gbnf_class(ranges: Sequence[tuple[int, int]], negated: bool = False) -> str:
    parts = []
    for low, high in ranges:
        if low == high:
            parts.append(_class_char(low))
        else:
            parts.append(f"{_class_char(low)}-{_class_char(high)}")
    return "[" + ("^" if negated else "") + "".join(parts) + "]"


_JSON_SHORT_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def json_char(ch: str) -> str:
    """One character as ``json.dumps(..., ensure_ascii=False)`` writes it in a string."""
    short = _JSON_SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    code = ord(ch)
    if code < 0x20 or 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return ch


def json_string(text: str) -> str:
    return '"' + "".join(json_char(ch) for ch in text) + '"'


def rule_base(text: str) -> str:
    base = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40].strip("-")
    return base or "def"
