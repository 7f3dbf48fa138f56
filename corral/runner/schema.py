"""JSON Schema → GBNF grammar, for Ollama's ``format: {<JSON schema>}``.

``schema_to_grammar(schema)`` returns GBNF text whose ``root`` rule matches a subset of the JSON
texts that validate against ``schema``, so whatever llama.cpp's grammar sampler lets a model
write parses as JSON and validates (up to the keywords listed under "not enforced"). The grammar
need not allow *every* valid text: properties come in the schema's order, numbers have bounded
digits, and strings from ``enum`` / ``const``, property names and ``pattern`` characters have one
spelling, the one ``json.dumps(..., ensure_ascii=False)`` writes (free strings take any escape).

Supported
    * ``type``: a name or a list of names (``object``, ``array``, ``string``, ``number``,
      ``integer``, ``boolean``, ``null``); without ``type`` the kind is inferred from the keywords
      present (``properties`` → object, ``items`` → array, ...), and ``{}`` / ``true`` is any
      JSON value. OpenAPI's ``nullable: true`` adds ``null``.
    * objects: ``properties`` are written in the schema's order; ``required`` ones always,
      optional ones may be left out. Only the listed properties are written (as if
      ``additionalProperties`` were ``false``); a required name that is not listed gets the
      ``additionalProperties`` schema. An object without properties is any JSON object, or its
      values follow ``additionalProperties`` when that is a schema.
    * arrays: ``items``, ``prefixItems`` (or the older list form of ``items`` with
      ``additionalItems``), ``minItems``, ``maxItems``.
    * strings: ``minLength`` / ``maxLength`` (in code points), ``format`` ``date``, ``time``,
      ``date-time`` and ``uuid`` (other formats are annotations and are not enforced), and
      ``pattern`` for a regex subset: literals, ``.``, classes ``[...]`` with ranges and negation,
      ``\\d \\w \\s`` (ASCII) and their negations, groups ``(...)``, ``(?:...)``, named groups,
      ``|``, quantifiers ``? * + {n} {n,} {n,m}`` (lazy forms too), ``^`` / ``$`` at the ends.
      Without anchors a pattern may match anywhere in the string, as JSON Schema says; every
      string allowed also matches in ECMAScript and in Python's ``re``.
    * numbers: integers without leading zeros; ``minimum``, ``maximum``, ``exclusiveMinimum``
      and ``exclusiveMaximum`` (draft 4 booleans too) are exact for ``integer``; for ``number``
      they allow the integers in range and the decimals ``I.fff`` whose whole interval
      ``[I, I+1)`` is in range. Unbounded numbers have at most 16 integer digits, 16 fraction
      digits and a 2-digit exponent, so a model cannot loop on digits.
    * ``enum`` and ``const`` with any JSON values, ``anyOf`` / ``oneOf`` as alternatives,
      ``allOf`` (merged), ``$ref`` to ``#``, ``#/$defs/...``, ``#/definitions/...`` or any other
      local JSON pointer; each referenced schema becomes one named rule, so recursion works.
    * whitespace between tokens is bounded (``ws ::= | " " | "\\n" [ \\t]{0,20}``).

Not enforced (the grammar allows documents that these would reject): ``uniqueItems``,
``multipleOf``, ``minProperties``, ``maxProperties``, the exclusivity of ``oneOf``, and
keywords next to ``enum`` / ``const`` (the listed values are written as given).
Repetition bounds above 4096 are lowered to 4096 (``maxLength``, ``maxItems``, ``{n,m}``).

``SchemaError`` (a ``ValueError``) is raised, and nothing else, for: a schema that is not an
object or boolean, malformed keyword values, an unknown ``type``, ``$ref`` that is not a local
JSON pointer or points nowhere, a ``$ref`` cycle that passes through no object or array,
unsatisfiable parts (``false``, empty ``enum``, ``minLength`` > ``maxLength``, ...),
``not`` / ``if`` / ``dependentSchemas`` / ``dependentRequired`` / ``dependencies`` /
``patternProperties`` / ``propertyNames`` / ``contains`` / ``unevaluatedItems`` /
``$dynamicRef``, a ``pattern`` outside the subset (or combined with length bounds), conflicting
``allOf`` parts, and hostile sizes: nesting deeper than 64, more than 100,000 schema nodes
visited, 10,000 rules or 1,000,000 characters of grammar, minimums above 4096 repetitions.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import unquote

__all__ = ["MAX_DEPTH", "MAX_REPEAT", "MAX_RULES", "SchemaError", "schema_to_grammar"]

MAX_DEPTH: Final = 64
MAX_RULES: Final = 10_000
MAX_STEPS: Final = 100_000
MAX_GRAMMAR_CHARS: Final = 1_000_000
MAX_REPEAT: Final = 4096
MAX_PREFIX_ITEMS: Final = 256
MAX_PATTERN_CHARS: Final = 2000
MAX_ALTERNATIVES: Final = 1000
_INT_DIGITS: Final = 16
_BOUND_LIMIT: Final = 10**18


class SchemaError(ValueError):
    """The JSON schema cannot be turned into a grammar; the message says why."""


def schema_to_grammar(schema: dict[str, Any], *, prefix: str = "", suffix: str = "") -> str:
    """GBNF text with a ``root`` rule for JSON documents that validate against ``schema``,
    between the literal texts ``prefix`` and ``suffix`` (a tool call's tags) when given."""
    if not isinstance(schema, dict):
        raise SchemaError(f"a JSON schema must be an object, not {type(schema).__name__}")
    if not prefix and not suffix:
        return _Converter(schema).run()
    text = _Converter(schema, root_name="doc").run()
    parts = [_gbnf_literal(prefix)] if prefix else []
    parts.append("doc")
    if suffix:
        parts.append(_gbnf_literal(suffix))
    return f"root ::= {' '.join(parts)}\n{text}"


# ---- GBNF text --------------------------------------------------------------------------------

_HEX = "[0-9a-fA-F]"

# Rule bodies for JSON building blocks, and which of them each one uses. `char` is one JSON
# string character that decodes to exactly one code point: a raw character (no controls, no
# surrogates) or an escape; a \u escape is a non-surrogate or a whole surrogate pair.
_PRIMITIVES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
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
        + _HEX
        + "{3} | [dD] [0-7] "
        + _HEX
        + "{2} | [dD] [89abAB] "
        + _HEX
        + '{2} "\\\\u" [dD] [c-fC-F] '
        + _HEX
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
        f'{_HEX}{{8}} "-" {_HEX}{{4}} "-" {_HEX}{{4}} "-" {_HEX}{{4}} "-" {_HEX}{{12}}',
        (),
    ),
}
_FORMATS: Final = {
    "date": "fmt-date",
    "time": "fmt-time",
    "date-time": "fmt-date-time",
    "uuid": "fmt-uuid",
}

_FRACTION: Final = '( "." [0-9]{1,16} )?'
_ZERO_FRACTION: Final = '( "." "0"{1,16} )?'
_QUOTE: Final = '"\\""'
_EMPTY_OBJECT: Final = '"{" ws "}" ws'

_RE_NAME = re.compile(r"[A-Za-z0-9-]+")
_RE_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')
_RE_CLASS = re.compile(r"\[(?:[^\]\\]|\\.)*\]")


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
        _RE_NAME.fullmatch(expr)
        or _RE_LITERAL.fullmatch(expr)
        or _RE_CLASS.fullmatch(expr)
        or _is_group(expr)
    )


def _alt(exprs: Sequence[str]) -> str:
    """Alternatives as one sequence-safe expression (an empty one matches nothing written)."""
    unique = list(dict.fromkeys(exprs))
    if len(unique) == 1:
        return unique[0]
    return "( " + " | ".join(unique) + " )"


def _postfix(expr: str, suffix: str) -> str:
    if not suffix or not expr:
        return expr
    return (expr if _is_atom(expr) else f"( {expr} )") + suffix


def _repeat(expr: str, low: int, high: int | None) -> str:
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


def _seq(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def _gbnf_literal(text: str) -> str:
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


def _class(ranges: Sequence[tuple[int, int]], negated: bool = False) -> str:
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


def _json_char(ch: str) -> str:
    """One character as ``json.dumps(..., ensure_ascii=False)`` writes it in a string."""
    short = _JSON_SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    code = ord(ch)
    if code < 0x20 or 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return ch


def _json_string(text: str) -> str:
    return '"' + "".join(_json_char(ch) for ch in text) + '"'


# ---- code point sets (for regex classes) ------------------------------------------------------

_Ranges = list[tuple[int, int]]
_MAX_CODE: Final = 0x10FFFF
_SURROGATES: Final = (0xD800, 0xDFFF)


def _normalize(ranges: Sequence[tuple[int, int]]) -> _Ranges:
    out: _Ranges = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def _complement(ranges: Sequence[tuple[int, int]], low: int = 0, high: int = _MAX_CODE) -> _Ranges:
    out: _Ranges = []
    start = low
    for a, b in _normalize(ranges):
        if b < start or a > high:
            continue
        if a > start:
            out.append((start, a - 1))
        start = max(start, b + 1)
    if start <= high:
        out.append((start, high))
    return out


def _subtract(ranges: Sequence[tuple[int, int]], minus: Sequence[tuple[int, int]]) -> _Ranges:
    return _complement([*_complement(ranges), *minus])


_DIGIT: Final = [(0x30, 0x39)]
_WORD: Final = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE: Final = [(0x09, 0x0D), (0x20, 0x20)]
_ASCII: Final = (0, 0x7F)
_DOT: Final = _complement([(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)])
_CONTROLS: Final = (0x00, 0x1F)
# Characters a JSON string cannot hold raw.
_SPECIAL: Final = [_CONTROLS, (0x22, 0x22), (0x5C, 0x5C), _SURROGATES]


def _set_expr(ranges: Sequence[tuple[int, int]]) -> str:
    """Sequence-safe GBNF for one JSON string character whose decoded value is in ``ranges``."""
    chars = _subtract(ranges, [_SURROGATES])
    if not chars:
        raise SchemaError("pattern has a character class that matches nothing")
    raw = _subtract(chars, _SPECIAL)
    alts: list[str] = []
    if raw:
        outside = _complement([*raw, *_SPECIAL])
        negative = _normalize([*_SPECIAL, *outside])
        alts.append(_class(raw) if len(raw) <= len(negative) else _class(negative, negated=True))
    controls = _subtract(chars, _complement([_CONTROLS]))
    if controls == [_CONTROLS]:  # all of them: the short escapes, else \u00XX
        alts.append('"\\\\" [bfnrt]')
        alts.append('"\\\\u00" ( "0" [0-7bBeEfF] | "1" ' + _HEX + " )")
    else:
        for low, high in controls:
            alts.extend(_gbnf_literal(_json_char(chr(code))) for code in range(low, high + 1))
    for code in (0x22, 0x5C):
        if any(low <= code <= high for low, high in chars):
            alts.append(_gbnf_literal(_json_char(chr(code))))
    return _alt(alts)


# ---- regular expressions (pattern) -----------------------------------------------------------

# A regex node: ("set", ranges) | ("seq", [nodes]) | ("alt", [nodes])
#             | ("rep", node, low, high | None) | ("bol",) | ("eol",)
_Node = tuple[Any, ...]


class _RegexParser:
    """ECMA-262 regex subset, read so that every match also matches in Python's ``re``."""

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN_CHARS:
            raise SchemaError(f"pattern is longer than {MAX_PATTERN_CHARS} characters")
        self.text = pattern
        self.pos = 0
        self.depth = 0

    def error(self, why: str) -> SchemaError:
        return SchemaError(f"pattern {_show(self.text)} at {self.pos}: {why}")

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    def parse(self) -> _Node:
        node = self.alternation()
        if self.pos < len(self.text):
            raise self.error("unbalanced ')'")
        return node

    def alternation(self) -> _Node:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.sequence())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def sequence(self) -> _Node:
        items: list[_Node] = []
        while self.pos < len(self.text) and self.peek() not in "|)":
            items.append(self.quantified())
        return ("seq", items)

    def quantifier(self) -> tuple[int, int | None] | None:
        ch = self.peek()
        if ch == "*":
            self.pos += 1
            return 0, None
        if ch == "+":
            self.pos += 1
            return 1, None
        if ch == "?":
            self.pos += 1
            return 0, 1
        if ch == "{":
            match = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.text, self.pos)
            if match is None:
                return None
            if len(match.group(1)) > 6 or len(match.group(3) or "") > 6:
                raise self.error("repetition count too large")
            self.pos = match.end()
            low = int(match.group(1))
            if match.group(2) is None:
                return low, low
            high = int(match.group(3)) if match.group(3) else None
            if high is not None and high < low:
                raise self.error("repetition range out of order")
            return low, high
        return None

    def quantified(self) -> _Node:
        atom = self.atom()
        bounds = self.quantifier()
        if bounds is None:
            return atom
        if atom[0] in ("bol", "eol"):
            raise self.error("cannot repeat an anchor")
        if self.peek() == "?":  # lazy: same language
            self.pos += 1
        if self.quantifier() is not None:
            raise self.error("nothing to repeat")
        return ("rep", atom, bounds[0], bounds[1])

    def atom(self) -> _Node:
        ch = self.peek()
        if ch == "(":
            return self.group()
        if ch == "[":
            return ("set", self.char_class())
        if ch == ".":
            self.pos += 1
            return ("set", list(_DOT))
        if ch == "^":
            self.pos += 1
            return ("bol",)
        if ch == "$":
            self.pos += 1
            return ("eol",)
        if ch in "*+?" or (ch == "{" and self.quantifier() is not None):
            raise self.error("nothing to repeat")
        if ch == "{":  # a literal in ECMAScript, but Python reads "{,n}" as a quantifier
            raise self.error("a literal '{' must be escaped")
        if ch == "\\":
            ranges, _ = self.escape(in_class=False)
            return ("set", ranges)
        self.pos += 1
        return ("set", [(ord(ch), ord(ch))])

    def group(self) -> _Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error("groups nest too deeply")
        self.pos += 1
        if self.peek() == "?":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            else:
                match = re.compile(r"\?P?<[A-Za-z_][A-Za-z0-9_]*>").match(self.text, self.pos)
                if match is None:
                    raise self.error("lookarounds, flags and other (?...) groups are unsupported")
                self.pos = match.end()
        node = self.alternation()
        if self.peek() != ")":
            raise self.error("missing ')'")
        self.pos += 1
        self.depth -= 1
        return node

    def escape(self, in_class: bool) -> tuple[_Ranges, bool]:
        """The set of an escape after ``\\``; the flag says it is a shorthand class."""
        self.pos += 1
        ch = self.peek()
        if not ch:
            raise self.error("pattern ends with '\\'")
        self.pos += 1
        shorthand = {"d": _DIGIT, "w": _WORD, "s": _SPACE}
        if ch in shorthand:
            return list(shorthand[ch]), True
        if ch.lower() in shorthand:  # \D \W \S: complement within ASCII (engines differ beyond)
            return _complement(shorthand[ch.lower()], *_ASCII), True
        simple = {"n": 0x0A, "r": 0x0D, "t": 0x09, "f": 0x0C, "v": 0x0B}
        if ch in simple:
            return [(simple[ch], simple[ch])], False
        if ch == "b" and in_class:
            return [(0x08, 0x08)], False
        if ch == "0" and not self.peek().isdigit():
            return [(0, 0)], False
        if ch in "xu":
            size = 2 if ch == "x" else 4
            digits = self.text[self.pos : self.pos + size]
            if len(digits) != size or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise self.error(f"bad \\{ch} escape")
            self.pos += size
            code = int(digits, 16)
            return [(code, code)], False
        if ch.isascii() and ch.isalnum():
            raise self.error(f"escape \\{ch} is unsupported")
        return [(ord(ch), ord(ch))], False

    def class_atom(self) -> tuple[_Ranges, bool]:
        if self.peek() == "\\":
            return self.escape(in_class=True)
        ch = self.peek()
        self.pos += 1
        return [(ord(ch), ord(ch))], False

    def char_class(self) -> _Ranges:
        self.pos += 1
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        ranges: _Ranges = []
        ascii_only = False
        while True:
            if self.pos >= len(self.text):
                raise self.error("missing ']'")
            if self.peek() == "]":
                self.pos += 1
                break
            first, first_short = self.class_atom()
            ascii_only = ascii_only or first_short
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                last, last_short = self.class_atom()
                if first_short or last_short:
                    raise self.error("a class shorthand cannot bound a range")
                if last[0][0] < first[0][0]:
                    raise self.error("character range out of order")
                ranges.append((first[0][0], last[0][0]))
            else:
                ranges.extend(first)
        if not ranges:
            raise self.error("empty character class")
        if negated:
            return _complement(ranges, *_ASCII) if ascii_only else _complement(ranges)
        return _normalize(ranges)


def _nullable(node: _Node) -> bool:
    kind = node[0]
    if kind == "set":
        return False
    if kind == "seq":
        return all(_nullable(item) for item in node[1])
    if kind == "alt":
        return any(_nullable(item) for item in node[1])
    if kind == "rep":
        return bool(node[2] == 0 or _nullable(node[1]))
    return True


def _regex_expr(node: _Node) -> str:
    kind = node[0]
    if kind == "set":
        return _set_expr(node[1])
    if kind == "seq":
        return _seq(*(_regex_expr(item) for item in node[1]))
    if kind == "alt":
        return _alt([_regex_expr(item) for item in node[1]])
    if kind == "rep":
        inner, low, high = node[1], int(node[2]), node[3]
        if low > MAX_REPEAT:
            raise SchemaError(f"pattern repeats more than {MAX_REPEAT} times")
        if high is None and _nullable(inner):
            raise SchemaError("pattern repeats something that can be empty without bound")
        return _repeat(_regex_expr(inner), low, None if high is None else min(high, MAX_REPEAT))
    raise SchemaError("pattern anchors ^ and $ are only supported at its ends")


def _pattern_expr(pattern: str) -> str:
    """GBNF for the characters of a JSON string (between the quotes) that ``pattern`` finds."""
    tree = _RegexParser(pattern).parse()
    branches = tree[1] if tree[0] == "alt" else [tree]
    alts = []
    for branch in branches:
        items = list(branch[1])
        anchored_start = bool(items) and items[0][0] == "bol"
        if anchored_start:
            items = items[1:]
        anchored_end = bool(items) and items[-1][0] == "eol"
        if anchored_end:
            items = items[:-1]
        alts.append(
            _seq(
                "" if anchored_start else "char*",
                _regex_expr(("seq", items)),
                "" if anchored_end else "char*",
            )
        )
    return _alt(alts)


# ---- numbers ----------------------------------------------------------------------------------


def _same_length_range(low: str, high: str) -> list[str]:
    """Alternatives matching the digit strings of one length from ``low`` to ``high``."""
    if low == high:
        return [_gbnf_literal(low)]
    rest = len(low) - 1
    tail = f" [0-9]{{{rest}}}" if rest > 1 else " [0-9]" if rest == 1 else ""
    if low[0] == high[0]:
        return [_seq(_gbnf_literal(low[0]), _alt(_same_length_range(low[1:], high[1:])))]
    alts: list[str] = []
    first, last = int(low[0]), int(high[0])
    if low[1:] != "0" * rest:
        alts.append(_seq(_gbnf_literal(low[0]), _alt(_same_length_range(low[1:], "9" * rest))))
        first += 1
    middle_last = last if high[1:] == "9" * rest else last - 1
    if first <= middle_last:
        digits = str(first) if first == middle_last else f"{first}-{middle_last}"
        alts.append(f"[{digits}]{tail}")
    if high[1:] != "9" * rest:
        alts.append(_seq(_gbnf_literal(high[0]), _alt(_same_length_range("0" * rest, high[1:]))))
    return alts


def _uint_range(low: int, high: int | None) -> str:
    """Non-negative integers from ``low`` to ``high``, without leading zeros."""
    if high is None:
        high = 10 ** max(_INT_DIGITS, len(str(low))) - 1
    alts: list[str] = []
    full: list[int] = []

    def flush() -> None:
        if full:
            repeat = _repeat("[0-9]", full[0] - 1, full[-1] - 1)
            alts.append(_seq("[1-9]", repeat))
            full.clear()

    for length in range(len(str(low)), len(str(high)) + 1):
        floor = 10 ** (length - 1) if length > 1 else 0
        low_d, high_d = max(low, floor), min(high, 10**length - 1)
        if length > 1 and low_d == floor and high_d == 10**length - 1:
            full.append(length)
            continue
        flush()
        alts.extend(_same_length_range(str(low_d), str(high_d)))
    flush()
    return _alt(alts)


def _int_at_least(bound: float, exclusive: bool) -> int:
    floor = math.floor(bound)
    return floor + 1 if exclusive or floor < bound else floor


def _int_at_most(bound: float, exclusive: bool) -> int:
    ceil = math.ceil(bound)
    return ceil - 1 if exclusive or ceil > bound else ceil


def _magnitudes(
    low: float, low_x: bool, high: float | None, high_x: bool, fraction: bool
) -> list[str]:
    """Alternatives for unsigned numbers in the interval from ``low`` (>= 0) to ``high``."""
    first = _int_at_least(low, low_x)
    last = None if high is None else _int_at_most(high, high_x)
    if last is not None and last < first and not fraction:
        return []
    if not fraction:
        return [_uint_range(first, last)]
    alts: list[str] = []
    if high is None:
        return [_seq(_uint_range(first, None), _FRACTION)]
    # I.fff lies in [I, I+1): fine when I >= low (> low if exclusive) and I + 1 <= high
    last_with_fraction = math.floor(high) - 1
    if first <= last_with_fraction:
        alts.append(_seq(_uint_range(first, last_with_fraction), _FRACTION))
    start = max(first, last_with_fraction + 1)
    if last is not None and start <= last:
        alts.append(_seq(_uint_range(start, last), _ZERO_FRACTION))
    return alts


# ---- the converter ----------------------------------------------------------------------------

# Keywords that raise SchemaError, and all keywords that constrain documents (the rest are
# annotations or unknown, and are ignored).
_UNSUPPORTED: Final = (
    "not", "if", "dependentSchemas", "dependentRequired", "dependencies", "patternProperties",
    "propertyNames", "contains", "unevaluatedItems", "$dynamicRef", "$recursiveRef",
)  # fmt: skip
_KEYWORDS: Final = frozenset({
    "type", "enum", "const", "properties", "required", "additionalProperties", "items",
    "prefixItems", "additionalItems", "minItems", "maxItems", "minLength", "maxLength", "pattern",
    "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf",
    "allOf", "$ref", "nullable", *_UNSUPPORTED,
})  # fmt: skip
_TYPES: Final = ("object", "array", "string", "number", "integer", "boolean", "null")
_TYPE_HINTS: Final = (
    ("object", ("properties", "required", "additionalProperties")),
    ("array", ("items", "prefixItems", "additionalItems", "minItems", "maxItems")),
    ("string", ("minLength", "maxLength", "pattern")),
    ("number", ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")),
)
_LOWER_BOUNDS: Final = frozenset({"minimum", "minLength", "minItems", "exclusiveMinimum"})
_UPPER_BOUNDS: Final = frozenset({"maximum", "maxLength", "maxItems", "exclusiveMaximum"})
_SUB_SCHEMAS: Final = frozenset({"items", "additionalProperties", "additionalItems"})


def _as_schema(schema: object) -> dict[str, Any]:
    if schema is True:
        return {}
    if schema is False:
        raise SchemaError("schema `false` matches nothing")
    if not isinstance(schema, dict):
        raise SchemaError(f"a schema must be an object or a boolean, not {type(schema).__name__}")
    for key in schema:
        if not isinstance(key, str):
            raise SchemaError(f"schema keys must be strings, not {type(key).__name__}")
    for key in _UNSUPPORTED:
        if key in schema:
            raise SchemaError(f"the {key!r} keyword is not supported")
    return schema


def _constraints(schema: dict[str, Any], *skip: str) -> bool:
    return any(key in _KEYWORDS and key not in skip for key in schema)


def _schema_list(schema: dict[str, Any], key: str) -> list[Any]:
    value = schema[key]
    if not isinstance(value, list) or not value:
        raise SchemaError(f"{key!r} must be a non-empty list of schemas")
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value: object, key: str) -> float:
    if not _is_number(value):
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


def _bounds(schema: dict[str, Any], key: str) -> tuple[int, int | None]:
    """``min<key>`` and ``max<key>`` as repetition bounds (maximum lowered to MAX_REPEAT)."""
    low = _count(schema, f"min{key}") or 0
    high = _count(schema, f"max{key}")
    if high is not None and high < low:
        raise SchemaError(f"max{key} is less than min{key}")
    if low > MAX_REPEAT:
        raise SchemaError(f"min{key} above {MAX_REPEAT} is not supported")
    return low, None if high is None else min(high, MAX_REPEAT)


def _json_type_ok(value: object, type_name: str) -> bool:
    checks: dict[str, Callable[[object], bool]] = {
        "null": lambda v: v is None,
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: (
            _is_number(v) and (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))
        ),
        "number": _is_number,
        "string": lambda v: isinstance(v, str),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    return checks[type_name](value)


def _show(value: object) -> str:
    """A short, safe rendering of a schema value for error messages."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    return f"a {type(value).__name__}"


def _rule_base(text: str) -> str:
    base = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40].strip("-")
    return base or "def"


class _Converter:
    def __init__(self, root: dict[str, Any], *, root_name: str = "root") -> None:
        self._root = root
        self._root_name = root_name
        self._rules: dict[str, str] = {}
        self._taken: set[str] = {"root", root_name, *_PRIMITIVES}
        self._refs: dict[str, str] = {"[]": root_name}
        self._steps = 0

    # -- bookkeeping --

    def run(self) -> str:
        body = self._convert(self._root, 0, frozenset({"[]"}))
        lines = [f"{self._root_name} ::= {body}"]
        lines.extend(f"{name} ::= {rule}" for name, rule in self._rules.items())
        text = "\n".join(lines) + "\n"
        if len(text) > MAX_GRAMMAR_CHARS:
            raise SchemaError(f"the grammar would exceed {MAX_GRAMMAR_CHARS} characters")
        return text

    def _tick(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise SchemaError(f"schema nests deeper than {MAX_DEPTH} levels")
        self._steps += 1
        if self._steps > MAX_STEPS:
            raise SchemaError("schema is too large")

    def _fresh(self, base: str) -> str:
        if len(self._rules) >= MAX_RULES:
            raise SchemaError(f"the grammar would need more than {MAX_RULES} rules")
        name, n = base, 1
        while name in self._taken:
            n += 1
            name = f"{base}-{n}"
        self._taken.add(name)
        self._rules[name] = ""
        return name

    def _rule(self, base: str, body: str) -> str:
        name = self._fresh(base)
        self._rules[name] = body
        return name

    def _named(self, expr: str, base: str) -> str:
        """``expr`` itself when it is a name, literal or class, else a new rule for it (so that
        using it twice does not copy it: nested copies would grow exponentially)."""
        simple = (
            _RE_NAME.fullmatch(expr) or _RE_LITERAL.fullmatch(expr) or _RE_CLASS.fullmatch(expr)
        )
        return expr if simple else self._rule(base, expr)

    def _prim(self, name: str) -> str:
        pending = [name]
        while pending:
            current = pending.pop()
            if current not in self._rules:
                body, uses = _PRIMITIVES[current]
                self._rules[current] = body
                pending.extend(uses)
        return name

    # -- references --

    def _pointer(self, ref: object) -> list[str]:
        if not isinstance(ref, str):
            raise SchemaError("$ref must be a string")
        if ref == "#":
            return []
        if not ref.startswith("#/"):
            raise SchemaError(f"$ref {_show(ref)} is not supported: only local '#/...' pointers")
        return [unquote(part).replace("~1", "/").replace("~0", "~") for part in ref[2:].split("/")]

    def _resolve(self, ref: object) -> Any:
        node: Any = self._root
        for part in self._pointer(ref):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and re.fullmatch(r"0|[1-9][0-9]{0,8}", part):
                if int(part) >= len(node):
                    raise SchemaError(f"unknown $ref {_show(ref)}")
                node = node[int(part)]
            else:
                raise SchemaError(f"unknown $ref {_show(ref)}")
        if not isinstance(node, dict | bool):
            raise SchemaError(f"$ref {_show(ref)} does not point at a schema")
        return node

    def _ref(self, ref: object, depth: int, head: frozenset[str]) -> str:
        key = json.dumps(self._pointer(ref))
        if key in head:
            raise SchemaError(
                f"$ref {_show(ref)} refers back to itself outside any object or array"
            )
        name = self._refs.get(key)
        if name is not None:
            return name
        target = self._resolve(ref)
        assert isinstance(ref, str)
        name = self._fresh(_rule_base(ref.rsplit("/", 1)[-1]))
        self._refs[key] = name
        self._rules[name] = self._convert(target, depth + 1, head | {key})
        return name

    # -- allOf merging --

    def _flatten(self, schema: object, depth: int) -> dict[str, Any]:
        """``schema`` with its ``$ref`` and ``allOf`` merged in."""
        self._tick(depth)
        node = _as_schema(schema)
        if "$ref" not in node and "allOf" not in node:
            return node
        merged = {key: value for key, value in node.items() if key not in ("$ref", "allOf")}
        parts: list[Any] = []
        if "$ref" in node:
            parts.append(self._resolve(node["$ref"]))
        if "allOf" in node:
            parts.extend(_schema_list(node, "allOf"))
        for part in parts:
            merged = self._merge(merged, part, depth + 1)
        return merged

    def _merge(self, first: object, second: object, depth: int) -> dict[str, Any]:
        a = self._flatten(first, depth + 1)
        b = self._flatten(second, depth + 1)
        out = dict(a)
        for key, value in b.items():
            out[key] = self._merge_key(key, out[key], value, depth) if key in out else value
        return out

    def _merge_key(self, key: str, a: Any, b: Any, depth: int) -> Any:
        if key == "format" or key not in _KEYWORDS:  # annotations: keep the first
            return a
        if key == "properties":
            if not isinstance(a, dict) or not isinstance(b, dict):
                raise SchemaError("'properties' must be an object")
            both = dict(a)
            for name, sub in b.items():
                both[name] = {"allOf": [both[name], sub]} if name in both else sub
            return both
        if key == "required":
            if not isinstance(a, list) or not isinstance(b, list):
                raise SchemaError("'required' must be a list")
            return list(dict.fromkeys([*a, *b]))
        if key == "type":
            left, right = self._type_list(a), self._type_list(b)

            def widen(kinds: list[str]) -> set[str]:
                return {*kinds, "integer"} if "number" in kinds else set(kinds)

            common = [k for k in left + right if k in widen(left) and k in widen(right)]
            if not common:
                raise SchemaError("allOf parts have no type in common")
            return list(dict.fromkeys(common))
        if key in _LOWER_BOUNDS | _UPPER_BOUNDS:
            if _is_number(a) and _is_number(b):
                return max(a, b) if key in _LOWER_BOUNDS else min(a, b)
            if isinstance(a, bool) and isinstance(b, bool):  # draft 4 exclusive flags
                return a or b
        elif key in _SUB_SCHEMAS:
            return False if a is False or b is False else {"allOf": [a, b]}
        elif key == "enum":
            if not isinstance(a, list) or not isinstance(b, list):
                raise SchemaError("'enum' must be a list")
            keys = {self._canon(v, depth) for v in b}
            return [v for v in a if self._canon(v, depth) in keys] or self._unsatisfiable(key)
        elif key == "const":
            if self._canon(a, depth) == self._canon(b, depth):
                return a
            self._unsatisfiable(key)
        elif key in ("anyOf", "oneOf"):
            left, right = _schema_list({key: a}, key), _schema_list({key: b}, key)
            if len(left) * len(right) > MAX_ALTERNATIVES:
                raise SchemaError(f"allOf of {key} lists has too many combinations")
            return [{"allOf": [x, y]} for x in left for y in right]
        elif key == "nullable":
            return a is True and b is True
        elif a is b or (isinstance(a, str | int | float) and type(a) is type(b) and a == b):
            return a
        raise SchemaError(f"allOf parts have conflicting {key!r} values")

    def _unsatisfiable(self, key: str) -> Any:
        raise SchemaError(f"allOf parts have no {key!r} value in common")

    def _canon(self, value: object, depth: int) -> object:
        """A hashable form of a JSON value, equal for JSON-equal values."""
        self._tick(depth)
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return (type(value).__name__, value)
        if _is_number(value):
            number = _finite(value, "enum")
            if isinstance(number, float) and number.is_integer():
                number = int(number)
            return ("number", number)
        if isinstance(value, list):
            return ("array", tuple(self._canon(v, depth + 1) for v in value))
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise SchemaError("object keys in 'enum' / 'const' must be strings")
            items = sorted((k, self._canon(v, depth + 1)) for k, v in value.items())
            return ("object", tuple(items))
        raise SchemaError(f"{type(value).__name__} is not a JSON value")

    # -- schemas --

    def _type_list(self, value: object) -> list[str]:
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names:
            raise SchemaError("'type' must be a type name or a non-empty list of them")
        for name in names:
            if name not in _TYPES:
                raise SchemaError(f"unknown type {_show(name)}")
        return list(dict.fromkeys(names))

    def _convert(self, schema: object, depth: int, head: frozenset[str]) -> str:
        self._tick(depth)
        node = _as_schema(schema)
        if "$ref" in node:
            if not _constraints(node, "$ref"):
                return self._ref(node["$ref"], depth, head)
            return self._convert(self._flatten(node, depth), depth + 1, head)
        if "allOf" in node:
            parts = _schema_list(node, "allOf")
            if len(parts) == 1 and not _constraints(node, "allOf"):
                return self._convert(parts[0], depth + 1, head)
            return self._convert(self._flatten(node, depth), depth + 1, head)
        for key in ("anyOf", "oneOf"):
            if key in node:
                alts = [alt for alt in _schema_list(node, key) if alt is not False]
                if not alts:
                    raise SchemaError(f"{key} has no satisfiable alternative")
                rest = {k: v for k, v in node.items() if k != key}
                if _constraints(rest):
                    alts = [self._merge(rest, alt, depth) for alt in alts]
                return _alt([self._convert(alt, depth + 1, head) for alt in alts])
        nullable = node.get("nullable", False)
        if not isinstance(nullable, bool):
            raise SchemaError("'nullable' must be a boolean")
        expr = self._plain(node, depth, head)
        return _alt([expr, self._prim("null")]) if nullable else expr

    def _plain(self, node: dict[str, Any], depth: int, head: frozenset[str]) -> str:
        types = self._type_list(node["type"]) if "type" in node else None
        values: list[Any] | None = None
        if "const" in node:
            values = [node["const"]]
            if "enum" in node:
                keys = {self._canon(v, depth) for v in _schema_list(node, "enum")}
                if self._canon(node["const"], depth) not in keys:
                    raise SchemaError("'const' is not one of the 'enum' values")
        elif "enum" in node:
            values = _schema_list(node, "enum")
        if values is not None:
            if types is not None:
                values = [v for v in values if any(_json_type_ok(v, t) for t in types)]
            if not values:
                raise SchemaError("no 'enum' / 'const' value has the schema's type")
            return _alt([self._literal(v, depth + 1) for v in values])
        if types is None:
            types = [kind for kind, keys in _TYPE_HINTS if any(key in node for key in keys)]
            if not types:
                return self._prim("value")
        if "integer" in types and "number" in types:
            types.remove("integer")
        return _alt([self._typed(node, kind, depth, head) for kind in types])

    def _typed(self, node: dict[str, Any], kind: str, depth: int, head: frozenset[str]) -> str:
        if kind in ("null", "boolean"):
            return self._prim(kind)
        if kind == "string":
            return self._string(node)
        if kind in ("number", "integer"):
            return self._number(node, kind == "integer")
        if kind == "object":
            return self._object(node, depth)
        return self._array(node, depth)

    def _literal(self, value: object, depth: int) -> str:
        """Exactly the JSON value ``value`` (with free whitespace between its tokens)."""
        self._tick(depth)
        self._prim("ws")
        if value is None or isinstance(value, bool):
            return f'"{json.dumps(value)}" ws'
        if isinstance(value, str):
            self._prim("ws")
            return f"{_gbnf_literal(_json_string(value))} ws"
        if _is_number(value):
            number = _finite(value, "enum")
            try:
                text = json.dumps(number)
            except ValueError as exc:  # int too large for str()
                raise SchemaError("a number in 'enum' / 'const' is too large") from exc
            self._prim("ws")
            return f"{_gbnf_literal(text)} ws"
        if isinstance(value, list):
            items = [self._literal(item, depth + 1) for item in value]
            return _seq('"[" ws', ' "," ws '.join(items), '"]" ws')
        if isinstance(value, dict):
            members = []
            for key, item in value.items():
                if not isinstance(key, str):
                    raise SchemaError("object keys in 'enum' / 'const' must be strings")
                key_text = _gbnf_literal(_json_string(key))
                members.append(_seq(key_text, 'ws ":" ws', self._literal(item, depth + 1)))
            return _seq('"{" ws', ' "," ws '.join(members), '"}" ws')
        raise SchemaError(f"{type(value).__name__} in 'enum' / 'const' is not a JSON value")

    def _string(self, node: dict[str, Any]) -> str:
        low, high = _bounds(node, "Length")
        pattern = node.get("pattern")
        self._prim("ws")
        if pattern is not None:
            if not isinstance(pattern, str):
                raise SchemaError("'pattern' must be a string")
            if low > 0 or high is not None:
                raise SchemaError("'pattern' together with minLength/maxLength is not supported")
            self._prim("char")
            return _seq(_QUOTE, _pattern_expr(pattern), _QUOTE, "ws")
        if low == 0 and high is None:
            fmt = node.get("format")
            if isinstance(fmt, str) and fmt in _FORMATS:
                return _seq(_QUOTE, self._prim(_FORMATS[fmt]), _QUOTE, "ws")
            return self._prim("string")
        return _seq(_QUOTE, _repeat(self._prim("char"), low, high), _QUOTE, "ws")

    def _number(self, node: dict[str, Any], integer: bool) -> str:
        low: float | None = None
        high: float | None = None
        low_x = high_x = False
        for key, is_low in (("minimum", True), ("maximum", False)):
            if key in node:
                value = _finite(node[key], key)
                if is_low:
                    low = value
                else:
                    high = value
        for key, is_low in (("exclusiveMinimum", True), ("exclusiveMaximum", False)):
            if key not in node:
                continue
            value = node[key]
            if isinstance(value, bool):  # draft 4: modifies minimum / maximum
                if is_low:
                    low_x = low_x or (value and low is not None)
                else:
                    high_x = high_x or (value and high is not None)
                continue
            value = _finite(value, key)
            if is_low and (low is None or value >= low):
                low, low_x = value, True
            elif not is_low and (high is None or value <= high):
                high, high_x = value, True
        if low is not None and low < -_BOUND_LIMIT:
            low = None
        if high is not None and high > _BOUND_LIMIT:
            high = None
        if (low is not None and low > _BOUND_LIMIT) or (high is not None and high < -_BOUND_LIMIT):
            raise SchemaError(f"numeric bounds beyond ±{_BOUND_LIMIT} are not supported")
        self._prim("ws")
        if low is None and high is None:
            return self._prim("integer" if integer else "number")
        alts: list[str] = []
        if high is None or high > 0 or (high == 0 and not high_x):
            plus_low, plus_x = (0.0, False) if low is None or low < 0 else (low, low_x)
            alts.extend(_magnitudes(plus_low, plus_x, high, high_x, not integer))
        if low is None or low < 0:
            minus_low, minus_x = (0.0, False) if high is None or high > 0 else (-high, high_x)
            minus_high = None if low is None else -low
            negatives = _magnitudes(minus_low, minus_x, minus_high, low_x, not integer)
            if negatives:
                alts.append(_seq('"-"', _alt(negatives)))
        if not alts:
            raise SchemaError("no number lies within minimum/maximum")
        return _seq(_alt(alts), "ws")

    def _object(self, node: dict[str, Any], depth: int) -> str:
        properties = node.get("properties", {})
        required = node.get("required", [])
        extra = node.get("additionalProperties", True)
        if not isinstance(properties, dict):
            raise SchemaError("'properties' must be an object")
        if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
            raise SchemaError("'required' must be a list of strings")
        if not isinstance(extra, dict | bool):
            raise SchemaError("'additionalProperties' must be a schema")
        wanted = set(required)
        entries: list[tuple[str, object, bool]] = []
        for name, sub in properties.items():
            if not isinstance(name, str):
                raise SchemaError("property names must be strings")
            if sub is False:
                if name in wanted:
                    raise SchemaError(f"required property {_show(name)} has the schema `false`")
                continue
            entries.append((name, sub, name in wanted))
        for name in dict.fromkeys(required):
            if name not in properties:
                if extra is False:
                    raise SchemaError(f"required property {_show(name)} is not allowed")
                entries.append((name, extra, True))
        self._prim("ws")
        if not entries:
            if extra is False or properties:
                return _EMPTY_OBJECT
            if extra is True or not _constraints(extra):
                return self._prim("object")
            value = self._named(self._convert(extra, depth + 1, frozenset()), "value")
            member = _seq(self._prim("string"), '":" ws', value)
            members_expr = _seq(member, _repeat(f'"," ws {member}', 0, None))
            return _seq('"{" ws', _repeat(members_expr, 0, 1), '"}" ws')
        members = [
            _seq(
                _gbnf_literal(_json_string(name)),
                'ws ":" ws',
                self._convert(sub, depth + 1, frozenset()),
            )
            for name, sub, _ in entries
        ]
        if all(req for _, _, req in entries):
            return _seq('"{" ws', ' "," ws '.join(members), '"}" ws')
        # Optional members may be left out; commas go only between the members written. With
        # tail_i = ("," m_i)? tail_{i+1} (no "?" when m_i is required), the members are one of
        # m_j tail_{j+1} for each j up to the first required member r (all optional: or none).
        # Members and tails used twice get a rule each, so the grammar grows linearly.
        count = len(entries)
        first_required = next((i for i, (_, _, req) in enumerate(entries) if req), count)
        base = _rule_base(f"obj-{entries[0][0]}")
        refs = [
            self._named(member, f"{base}-kv") if 0 < i <= first_required else member
            for i, member in enumerate(members)
        ]
        tails = [""] * (count + 1)
        for i in range(count - 1, 0, -1):
            step = f'"," ws {refs[i]}'
            tail = _seq(step if entries[i][2] else _repeat(step, 0, 1), tails[i + 1])
            tails[i] = self._named(tail, f"{base}-tail") if i <= first_required + 1 else tail
        alts = [_seq(refs[j], tails[j + 1]) for j in range(min(first_required + 1, count))]
        body = _alt(alts)
        if first_required == count:
            body = _repeat(body, 0, 1)
        return _seq('"{" ws', body, '"}" ws')

    def _array(self, node: dict[str, Any], depth: int) -> str:
        items = node.get("items", True)
        prefix = node.get("prefixItems", [])
        if isinstance(items, list):  # drafts 4-7: tuple form
            prefix, items = items, node.get("additionalItems", True)
        if not isinstance(prefix, list):
            raise SchemaError("'prefixItems' must be a list of schemas")
        if not isinstance(items, dict | bool):
            raise SchemaError("'items' must be a schema")
        low, high = _bounds(node, "Items")
        if len(prefix) > MAX_PREFIX_ITEMS:
            raise SchemaError(f"more than {MAX_PREFIX_ITEMS} prefixItems are not supported")
        for index, sub in enumerate(prefix):
            if sub is False:
                prefix = prefix[:index]
                high = index if high is None else min(high, index)
                break
        if items is False:
            high = len(prefix) if high is None else min(high, len(prefix))
        if high is not None and high < low:
            raise SchemaError("no array length satisfies minItems, maxItems and the item schemas")
        self._prim("ws")
        count = len(prefix) if high is None else min(len(prefix), high)
        heads = [self._convert(sub, depth + 1, frozenset()) for sub in prefix[:count]]
        # elements after the prefix
        if high is not None and high <= count:
            rest = ""
        else:
            item = self._named(self._convert(items, depth + 1, frozenset()), "item")
            more_low = max(0, low - count)
            more_high = None if high is None else high - count
            if count:
                rest = _repeat(f'"," ws {item}', more_low, more_high)
            else:
                later = _repeat(
                    f'"," ws {item}',
                    max(0, more_low - 1),
                    None if more_high is None else more_high - 1,
                )
                rest = _seq(item, later)
                if more_low == 0:
                    rest = _repeat(rest, 0, 1)
        for index in range(count - 1, -1, -1):
            step = _seq('"," ws' if index else "", heads[index], rest)
            rest = step if index < low else _repeat(step, 0, 1)
        return _seq('"[" ws', rest, '"]" ws')
