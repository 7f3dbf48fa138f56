"""Go ``text/template`` for Ollama model templates: a lexer, a parser and an evaluator.

Ollama stores a model's prompt format as a Go template, so corral has to run that language
from Python. This module implements the part of ``text/template`` that model templates use,
with Go's semantics wherever they change the prompt text, and a data model that fits Python.

Supported:
    * text and actions, trim markers ``{{- `` / `` -}}``, comments ``{{/* ... */}}``;
    * pipelines ``a | f b`` (the value goes in as the last argument), ``( ... )`` sub-expressions,
      field chains ``.A.B``, ``$x.A``, ``(pipeline).A``;
    * literals: Go-escaped ``"strings"``, raw ```strings```, ``'c'`` characters, Go integer and
      float syntax, ``true``, ``false``, ``nil``;
    * variables: ``$x := ...``, ``$x = ...`` and ``$``, with Go's block scoping;
    * ``if`` / ``else if`` / ``else``, ``with`` / ``else with`` / ``else``, ``range`` over lists,
      dicts (sorted keys) and ints (Go 1.22) with ``else``, ``break`` and ``continue``;
    * ``define``, ``template`` and ``block``;
    * Go's functions ``and or not eq ne lt le gt ge len index slice print printf println html js
      urlquery`` and Ollama's ``json currentDate yesterdayDate toTypeScriptType``.

Data model: dicts are looked up by exact key, other objects by public attribute; a missing key
is ``None`` (Go's ``missingkey=zero``), and a field of ``None`` is ``None``. ``None`` prints as
nothing and dicts and lists print as compact JSON, because Ollama's tool types print that way.

Deliberately left out, or different from Go:
    * method calls and ``call``: data is plain JSON-like values, and letting a user-supplied
      template call Python callables would be unsafe;
    * custom delimiters, ``html/template`` escaping, complex numbers, 3-index slices;
    * strings are code points, not UTF-8 bytes, for ``len``, ``index`` and ``slice``;
    * ints and floats compare with each other, and ``printf``'s float verbs take ints (JSON
      gives Python both kinds of number, where Go has only float64);
    * ``<nil>`` and ``<no value>`` print as the empty string, maps as JSON not ``map[k:v]``.

Untrusted templates must not hang or exhaust the server, so execution is bounded: output size,
characters built by functions, range iterations, evaluation steps and template call depth.
Only ``TemplateError`` ever leaves this module; any other exception is wrapped into one.
"""

from __future__ import annotations

import datetime
import enum
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeAlias

from corral.errors import TemplateError

__all__ = [
    "MAX_BUILT_CHARS",
    "MAX_ITERATIONS",
    "MAX_NESTING",
    "MAX_OUTPUT_CHARS",
    "MAX_STEPS",
    "MAX_TEMPLATE_DEPTH",
    "GoTemplate",
]

MAX_OUTPUT_CHARS: Final = 10 * 1024 * 1024
"""Most characters one render may produce, and the largest string a function may build."""
MAX_BUILT_CHARS: Final = 200 * 1024 * 1024
"""Most characters (and list elements) functions may build in one render, all together."""
MAX_ITERATIONS: Final = 1_000_000
"""Most ``range`` iterations in one render, all loops together."""
MAX_STEPS: Final = 4_000_000
"""Most nodes and commands evaluated in one render."""
MAX_TEMPLATE_DEPTH: Final = 100
"""Deepest chain of ``template`` calls, which is how a template recurses."""
MAX_NESTING: Final = 100
"""Deepest nesting of blocks and parentheses in the source; keeps recursion off Python's limit."""

_SPACE: Final = " \t\r\n"
_MAX_NUMBER_TEXT: Final = 1000
_MAX_FORMAT_WIDTH: Final = 1_000_000


# ---------------------------------------------------------------------------------------------
# Lexer


class _Kind(enum.Enum):
    TEXT = "text"
    LEFT = "{{"
    RIGHT = "}}"
    IDENT = "identifier"
    KEYWORD = "keyword"
    FIELD = "field"
    VARIABLE = "variable"
    DOT = "."
    STRING = "string"
    NUMBER = "number"
    BOOL = "bool"
    NIL = "nil"
    PIPE = "|"
    LPAREN = "("
    RPAREN = ")"
    DECLARE = ":="
    ASSIGN = "="
    COMMA = ","
    EOF = "EOF"


_KEYWORDS: Final = frozenset(
    {"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"}
)
_PUNCTUATION: Final = {
    "|": _Kind.PIPE,
    "(": _Kind.LPAREN,
    ")": _Kind.RPAREN,
    ",": _Kind.COMMA,
    "=": _Kind.ASSIGN,
}
_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
}
_HEX_ESCAPE_LENGTHS: Final = {"x": 2, "u": 4, "U": 8}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    text: str
    line: int
    spaced: bool = False
    """Whether whitespace precedes the token inside an action: Go needs it between operands."""
    value: Any = None


def _describe(token: _Token) -> str:
    if token.kind is _Kind.EOF:
        return "EOF"
    text = token.text if len(token.text) <= 40 else token.text[:37] + "..."
    return f'"{text}"'


def _is_alnum(char: str) -> bool:
    return char == "_" or char.isalpha() or char.isdecimal()


def _has_left_trim(source: str, pos: int) -> bool:
    return source.startswith("-", pos) and pos + 1 < len(source) and source[pos + 1] in _SPACE


def _has_right_trim(source: str, pos: int) -> bool:
    return pos < len(source) and source[pos] in _SPACE and source.startswith("-}}", pos + 1)


def _unquote(body: str, quote: str) -> str:
    """Decode Go escapes; Go rejects unknown ones, so a typo fails loudly instead of leaking."""
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        decoded, i = _unescape(body, i + 1, quote)
        out.append(decoded)
    return "".join(out)


def _unescape(body: str, i: int, quote: str) -> tuple[str, int]:
    """Decode the escape whose letter is at ``body[i]``; return it and the index after it."""
    if i >= len(body):
        raise ValueError("unfinished escape")
    letter = body[i]
    if letter in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[letter], i + 1
    if letter == quote:
        return quote, i + 1
    if letter in _HEX_ESCAPE_LENGTHS:
        size = _HEX_ESCAPE_LENGTHS[letter]
        code = _parse_digits(body[i + 1 : i + 1 + size], 16, size)
        if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
            raise ValueError(f"invalid Unicode code point {code:#x}")
        return chr(code), i + 1 + size
    if "0" <= letter <= "7":
        code = _parse_digits(body[i : i + 3], 8, 3)
        if code > 0xFF:
            raise ValueError(f"octal escape \\{body[i : i + 3]} out of range")
        return chr(code), i + 3
    raise ValueError(f"unknown escape \\{letter}")


def _parse_digits(text: str, base: int, size: int) -> int:
    valid = "0123456789abcdefABCDEF"[: base if base <= 10 else base + 6]
    if len(text) != size or any(c not in valid for c in text):
        raise ValueError(f"malformed escape {text!r}")
    return int(text, base)


_RADIX_DIGITS: Final = {"x": "0123456789abcdefABCDEF_", "o": "01234567_", "b": "01_"}
_EXPONENT_MARKS: Final = {"": "eE", "x": "pP"}


def _scan_number(source: str, pos: int) -> int:
    """Return where Go's number syntax starting at ``pos`` ends (same rules as Go's lexer)."""

    def run(p: int, allowed: str) -> int:
        while p < len(source) and source[p] in allowed:
            p += 1
        return p

    p = pos + 1 if source[pos] in "+-" else pos
    radix = ""
    if source.startswith("0", p):
        p += 1
        if source[p : p + 1].lower() in ("x", "o", "b"):
            radix = source[p].lower()
            p += 1
    digits = _RADIX_DIGITS.get(radix, "0123456789_")
    p = run(p, digits)
    if source.startswith(".", p):
        p = run(p + 1, digits)
    marks = _EXPONENT_MARKS.get(radix, "")
    if marks and p < len(source) and source[p] in marks:
        p += 2 if source[p + 1 : p + 2] in ("+", "-") else 1
        p = run(p, "0123456789_")
    if source.startswith("i", p):
        p += 1
    return p


def _number_value(text: str) -> int | float:
    """Convert as text/template does: a ``.``, ``e`` or ``p`` makes a float, else an int."""
    if text.endswith("i"):
        raise ValueError("complex numbers are not supported")
    if len(text) > _MAX_NUMBER_TEXT:
        raise ValueError("number too long")
    body = text[1:] if text[:1] in "+-" else text
    negative = text.startswith("-")
    lower = body.lower()
    value: int | float
    if lower.startswith("0x") and ("." in lower or "p" in lower):
        value = float.fromhex(body.replace("_", ""))
    elif lower.startswith(("0x", "0o", "0b")):
        value = int(body, 0)
    elif "." in lower or "e" in lower:
        value = float(body)
    elif len(body) > 1 and body.startswith("0"):
        value = int(body, 8)
    else:
        value = int(body, 10)
    value = -value if negative else value
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("number out of range")
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        raise ValueError("number out of range")
    return value


class _Lexer:
    """Turns source into tokens; text outside actions is already trimmed per the markers."""

    def __init__(self, source: str) -> None:
        self._src = source
        self._pos = 0
        self._line = 1
        self._tokens: list[_Token] = []
        self._trim_next = False
        self._parens = 0
        self._spaced = False

    def run(self) -> list[_Token]:
        while self._pos < len(self._src):
            self._lex_text()
        self._tokens.append(_Token(_Kind.EOF, "", self._line))
        return self._tokens

    def _fail(self, message: str, line: int | None = None) -> NoReturn:
        raise TemplateError(f"template: {self._line if line is None else line}: {message}")

    def _lex_text(self) -> None:
        src, start = self._src, self._pos
        left = src.find("{{", start)
        end = len(src) if left < 0 else left
        trim_left = left >= 0 and _has_left_trim(src, left + 2)
        text = src[start:end]
        if self._trim_next:
            text = text.lstrip(_SPACE)
        if trim_left:
            text = text.rstrip(_SPACE)
        if text:
            self._tokens.append(_Token(_Kind.TEXT, text, self._line))
        self._trim_next = False
        self._pos = end if left < 0 else left + (4 if trim_left else 2)
        self._line += src.count("\n", start, self._pos)
        if left < 0:
            return
        if src.startswith("/*", self._pos):
            self._lex_comment()
        else:
            self._lex_action()

    def _lex_comment(self) -> None:
        src, start, line = self._src, self._pos, self._line
        close = src.find("*/", start + 2)
        if close < 0:
            self._fail("unclosed comment", line)
        after = close + 2
        if src.startswith("}}", after):
            self._pos = after + 2
        elif _has_right_trim(src, after):
            self._pos = after + 4
            self._trim_next = True
        else:
            self._fail("comment ends before closing delimiter", line)
        self._line += src.count("\n", start, self._pos)

    def _lex_action(self) -> None:
        start_line = self._line
        self._tokens.append(_Token(_Kind.LEFT, "{{", start_line))
        self._parens = 0
        self._spaced = False
        src = self._src
        while True:
            pos = self._pos
            if pos >= len(src):
                self._fail("unclosed action", start_line)
            if src.startswith("}}", pos) or _has_right_trim(src, pos):
                self._close_action(trim=not src.startswith("}}", pos))
                return
            char = src[pos]
            if char in _SPACE:
                self._pos += 1
                self._line += char == "\n"
                self._spaced = True
                continue
            self._lex_token(char)

    def _close_action(self, *, trim: bool) -> None:
        if self._parens:
            self._fail("unclosed left paren")
        self._emit(_Kind.RIGHT, self._pos + (4 if trim else 2))
        self._trim_next = trim

    def _emit(self, kind: _Kind, end: int, value: Any = None) -> None:
        text = self._src[self._pos : end]
        self._tokens.append(_Token(kind, text, self._line, self._spaced, value))
        self._spaced = False
        self._line += text.count("\n")
        self._pos = end

    def _lex_token(self, char: str) -> None:
        following = self._src[self._pos + 1 : self._pos + 2]
        if char in "\"'":
            self._lex_quoted(char)
        elif char == "`":
            self._lex_raw()
        elif char == "$":
            self._lex_word(_Kind.VARIABLE, self._pos + 1)
        elif char == "." and not (following and "0" <= following <= "9"):
            self._lex_word(_Kind.FIELD, self._pos + 1)
        elif char in "+-." or "0" <= char <= "9":
            self._lex_number()
        elif char == "_" or char.isalpha():
            self._lex_word(_Kind.IDENT, self._pos)
        elif char in _PUNCTUATION:
            self._lex_punctuation(char)
        elif char == ":" and following == "=":
            self._emit(_Kind.DECLARE, self._pos + 2)
        elif char == ":":
            self._fail("expected :=")
        else:
            self._fail(f"unexpected {char!r} in action")

    def _lex_punctuation(self, char: str) -> None:
        if char == "(":
            self._parens += 1
        elif char == ")":
            if not self._parens:
                self._fail("unexpected right paren")
            self._parens -= 1
        self._emit(_PUNCTUATION[char], self._pos + 1)

    def _lex_word(self, kind: _Kind, start: int) -> None:
        end = start
        while end < len(self._src) and _is_alnum(self._src[end]):
            end += 1
        self._check_terminator(end)
        word = self._src[self._pos : end]
        if kind is _Kind.FIELD:
            if end == start:
                self._emit(_Kind.DOT, end)
            else:
                self._emit(_Kind.FIELD, end, word[1:])
        elif kind is _Kind.VARIABLE:
            self._emit(_Kind.VARIABLE, end, word)
        elif word in ("true", "false"):
            self._emit(_Kind.BOOL, end, word == "true")
        elif word == "nil":
            self._emit(_Kind.NIL, end)
        else:
            self._emit(_Kind.KEYWORD if word in _KEYWORDS else _Kind.IDENT, end, word)

    def _check_terminator(self, pos: int) -> None:
        """Go requires a word to end at a separator, so ``.A"b"`` is an error, not two args."""
        src = self._src
        if pos >= len(src) or src[pos] in _SPACE or src[pos] in ".,|:()":
            return
        if src.startswith("}}", pos):
            return
        self._fail(f"bad character {src[pos]!r}")

    def _lex_number(self) -> None:
        end = _scan_number(self._src, self._pos)
        text = self._src[self._pos : end]
        if end < len(self._src) and _is_alnum(self._src[end]):
            self._fail(f"bad number syntax: {self._src[self._pos : end + 1]!r}")
        try:
            value = _number_value(text)
        except ValueError as exc:
            self._fail(f"bad number syntax: {text[:40]!r}: {exc}")
        self._emit(_Kind.NUMBER, end, value)

    def _lex_quoted(self, quote: str) -> None:
        src, pos = self._src, self._pos + 1
        what = "quoted string" if quote == '"' else "character constant"
        while True:
            if pos >= len(src) or src[pos] == "\n":
                self._fail(f"unterminated {what}")
            if src[pos] == "\\":
                if pos + 1 >= len(src) or src[pos + 1] == "\n":
                    self._fail(f"unterminated {what}")
                pos += 2
                continue
            if src[pos] == quote:
                break
            pos += 1
        try:
            value = _unquote(src[self._pos + 1 : pos], quote)
        except ValueError as exc:
            self._fail(f"bad {what} syntax: {exc}")
        if quote == '"':
            self._emit(_Kind.STRING, pos + 1, value)
        elif len(value) != 1:
            self._fail(f"malformed character constant: {src[self._pos : pos + 1][:40]}")
        else:
            self._emit(_Kind.NUMBER, pos + 1, ord(value))

    def _lex_raw(self) -> None:
        end = self._src.find("`", self._pos + 1)
        if end < 0:
            self._fail("unterminated raw quoted string")
        self._emit(_Kind.STRING, end + 1, self._src[self._pos + 1 : end].replace("\r", ""))


# ---------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(frozen=True, slots=True)
class _Dot:
    pass


@dataclass(frozen=True, slots=True)
class _Nil:
    pass


@dataclass(frozen=True, slots=True)
class _Literal:
    value: str | int | float | bool


@dataclass(frozen=True, slots=True)
class _Variable:
    name: str


@dataclass(frozen=True, slots=True)
class _Function:
    name: str


@dataclass(frozen=True, slots=True)
class _SubPipe:
    pipe: _Pipeline


@dataclass(frozen=True, slots=True)
class _Chain:
    """Field lookups on a base: ``.A.B`` (base is dot), ``$x.A`` or ``(pipeline).A``."""

    base: _Expr
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Command:
    line: int
    args: tuple[_Expr, ...]


@dataclass(frozen=True, slots=True)
class _Pipeline:
    line: int
    decl: tuple[str, ...]
    is_assign: bool
    commands: tuple[_Command, ...]


@dataclass(frozen=True, slots=True)
class _Text:
    text: str


@dataclass(frozen=True, slots=True)
class _Action:
    line: int
    pipe: _Pipeline


@dataclass(frozen=True, slots=True)
class _Branch:
    pipe: _Pipeline
    body: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Conditional:
    """``if`` or ``with``; ``else if`` chains are flat branches so long chains cost no depth."""

    line: int
    keyword: str
    branches: tuple[_Branch, ...]
    otherwise: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Range:
    line: int
    pipe: _Pipeline
    body: tuple[_Node, ...]
    otherwise: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Call:
    line: int
    name: str
    pipe: _Pipeline | None


@dataclass(frozen=True, slots=True)
class _BreakNode:
    line: int


@dataclass(frozen=True, slots=True)
class _ContinueNode:
    line: int


_Expr: TypeAlias = _Dot | _Nil | _Literal | _Variable | _Function | _SubPipe | _Chain
_Node: TypeAlias = _Text | _Action | _Conditional | _Range | _Call | _BreakNode | _ContinueNode


def _describe_expr(expr: _Expr) -> str:
    if isinstance(expr, _Dot):
        return "."
    if isinstance(expr, _Nil):
        return "nil"
    if isinstance(expr, _Literal):
        return json.dumps(expr.value) if isinstance(expr.value, str) else _text_of(expr.value)
    if isinstance(expr, _Variable | _Function):
        return expr.name
    if isinstance(expr, _SubPipe):
        return "(...)"
    base = "" if isinstance(expr.base, _Dot) else _describe_expr(expr.base)
    return base + "".join(f".{name}" for name in expr.names)


def _is_empty(nodes: tuple[_Node, ...]) -> bool:
    """Go lets a non-empty definition replace an empty (whitespace-only) one, nothing else."""
    return all(isinstance(node, _Text) and not node.text.strip(_SPACE) for node in nodes)


# ---------------------------------------------------------------------------------------------
# Parser


class _Parser:
    """Recursive descent over the tokens; checks what Go checks at parse time."""

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._i = 0
        self._vars: list[str] = ["$"]
        self._range_depth = 0
        self._nesting = 0
        self.defines: dict[str, tuple[_Node, ...]] = {}
        self.fields: set[str] = set()

    def parse(self) -> tuple[_Node, ...]:
        nodes, end = self._list(top=True)
        if end.kind is not _Kind.EOF:
            self._fail(end, "unexpected {{" + end.text + "}}")
        return nodes

    def _fail(self, token: _Token, message: str) -> NoReturn:
        raise TemplateError(f"template: {token.line}: {message}")

    def _peek(self, ahead: int = 0) -> _Token:
        return self._tokens[min(self._i + ahead, len(self._tokens) - 1)]

    def _next(self) -> _Token:
        token = self._tokens[self._i]
        self._i = min(self._i + 1, len(self._tokens) - 1)
        return token

    def _expect_right(self, context: str) -> None:
        token = self._next()
        if token.kind is not _Kind.RIGHT:
            self._fail(token, f"unexpected {_describe(token)} in {context}")

    def _enter(self, token: _Token) -> None:
        self._nesting += 1
        if self._nesting > MAX_NESTING:
            self._fail(token, f"nesting deeper than {MAX_NESTING} levels")

    def _list(self, *, top: bool = False) -> tuple[tuple[_Node, ...], _Token]:
        """Parse nodes up to ``{{end}}``, ``{{else`` or EOF and return that terminator."""
        nodes: list[_Node] = []
        while True:
            token = self._next()
            if token.kind is _Kind.TEXT:
                nodes.append(_Text(token.text))
                continue
            if token.kind is _Kind.EOF:
                return tuple(nodes), token
            head = self._peek()
            if head.kind is _Kind.KEYWORD and head.value in ("end", "else"):
                self._next()
                if head.value == "end":
                    self._expect_right("end")
                return tuple(nodes), head
            if head.kind is _Kind.KEYWORD and head.value == "define":
                self._next()
                if not top:
                    self._fail(head, "unexpected {{define}}: define is only allowed at top level")
                self._define(head)
                continue
            nodes.append(self._action())

    def _scoped_list(self, opener: _Token) -> tuple[tuple[_Node, ...], _Token]:
        mark = len(self._vars)
        nodes, end = self._list()
        del self._vars[mark:]
        if end.kind is _Kind.EOF:
            opening = "{{" + opener.text + "}}"
            self._fail(end, f"unexpected EOF: {opening} on line {opener.line} has no {{{{end}}}}")
        return nodes, end

    def _else_list(self, opener: _Token) -> tuple[_Node, ...]:
        nodes, end = self._scoped_list(opener)
        if end.value != "end":
            self._fail(end, "expected {{end}}; found {{else}}")
        return nodes

    def _action(self) -> _Node:
        token = self._peek()
        if token.kind is not _Kind.KEYWORD:
            pipe = self._pipeline("command", _Kind.RIGHT)
            return _Action(pipe.line, pipe)
        self._next()
        match token.value:
            case "if" | "with":
                return self._conditional(token)
            case "range":
                return self._range(token)
            case "template":
                return self._template(token)
            case "block":
                return self._block(token)
            case _:
                return self._loop_control(token)

    def _loop_control(self, token: _Token) -> _Node:
        if self._range_depth == 0:
            self._fail(token, "{{" + token.text + "}} outside {{range}}")
        self._expect_right(token.text)
        return _BreakNode(token.line) if token.value == "break" else _ContinueNode(token.line)

    def _conditional(self, token: _Token) -> _Node:
        keyword = str(token.value)
        self._enter(token)
        mark = len(self._vars)
        branches: list[_Branch] = []
        otherwise: tuple[_Node, ...] = ()
        pipe = self._pipeline(keyword, _Kind.RIGHT)
        while True:
            body, end = self._scoped_list(token)
            branches.append(_Branch(pipe, body))
            if end.value == "end":
                break
            following = self._peek()
            if following.kind is _Kind.KEYWORD and following.value == keyword:
                self._next()
                pipe = self._pipeline(keyword, _Kind.RIGHT)
                continue
            self._expect_right("else")
            otherwise = self._else_list(token)
            break
        del self._vars[mark:]
        self._nesting -= 1
        return _Conditional(token.line, keyword, tuple(branches), otherwise)

    def _range(self, token: _Token) -> _Node:
        self._enter(token)
        mark = len(self._vars)
        pipe = self._pipeline("range", _Kind.RIGHT)
        self._range_depth += 1
        body, end = self._scoped_list(token)
        self._range_depth -= 1
        otherwise: tuple[_Node, ...] = ()
        if end.value == "else":
            self._expect_right("else")
            otherwise = self._else_list(token)
        del self._vars[mark:]
        self._nesting -= 1
        return _Range(token.line, pipe, body, otherwise)

    def _template_name(self, context: str) -> str:
        token = self._next()
        if token.kind is not _Kind.STRING:
            self._fail(token, f"unexpected {_describe(token)} in {context}")
        return str(token.value)

    def _template(self, token: _Token) -> _Node:
        name = self._template_name("template clause")
        if self._peek().kind is _Kind.RIGHT:
            self._next()
            return _Call(token.line, name, None)
        return _Call(token.line, name, self._pipeline("template clause", _Kind.RIGHT))

    def _define(self, token: _Token) -> None:
        name = self._template_name("define clause")
        self._expect_right("define clause")
        self._add_define(token, name, self._separate_tree(token))

    def _block(self, token: _Token) -> _Node:
        name = self._template_name("block clause")
        pipe = self._pipeline("block clause", _Kind.RIGHT)
        self._add_define(token, name, self._separate_tree(token))
        return _Call(token.line, name, pipe)

    def _separate_tree(self, token: _Token) -> tuple[_Node, ...]:
        """A definition sees only ``$`` and is outside any range, as a Go template tree is."""
        self._enter(token)
        saved = self._vars, self._range_depth
        self._vars, self._range_depth = ["$"], 0
        body, end = self._scoped_list(token)
        if end.value != "end":
            self._fail(end, f"unexpected {{{{else}}}} in {token.text} clause")
        self._vars, self._range_depth = saved
        self._nesting -= 1
        return body

    def _add_define(self, token: _Token, name: str, body: tuple[_Node, ...]) -> None:
        existing = self.defines.get(name)
        if existing is not None and not _is_empty(existing):
            if _is_empty(body):
                return
            self._fail(token, f'multiple definition of template "{name}"')
        self.defines[name] = body

    def _pipeline(self, context: str, end_kind: _Kind) -> _Pipeline:
        line = self._peek().line
        decl, is_assign = self._declarations(context)
        if self._peek().kind in (_Kind.RIGHT, _Kind.RPAREN):
            self._fail(self._peek(), f"missing value for {context}")
        commands = [self._command()]
        while True:
            token = self._next()
            if token.kind is end_kind:
                break
            if token.kind is not _Kind.PIPE:
                self._fail(token, f"unexpected {_describe(token)} in {context}")
            commands.append(self._command())
        for stage, command in enumerate(commands[1:], start=2):
            if isinstance(command.args[0], _Literal | _Dot | _Nil):
                self._fail(token, f"non executable command in pipeline stage {stage}")
        if not is_assign:
            self._vars.extend(decl)
        return _Pipeline(line, decl, is_assign, tuple(commands))

    def _declarations(self, context: str) -> tuple[tuple[str, ...], bool]:
        first, after = self._peek(), self._peek(1)
        if first.kind is not _Kind.VARIABLE:
            return (), False
        names: tuple[str, ...]
        if after.kind in (_Kind.DECLARE, _Kind.ASSIGN):
            names, operator, consumed = (str(first.value),), after, 2
        elif after.kind is _Kind.COMMA:
            if context != "range":
                self._fail(after, f"too many declarations in {context}")
            second, operator = self._peek(2), self._peek(3)
            if second.kind is not _Kind.VARIABLE:
                self._fail(second, "range can only initialize variables")
            if operator.kind not in (_Kind.DECLARE, _Kind.ASSIGN):
                self._fail(operator, f"unexpected {_describe(operator)} in range declaration")
            names, consumed = (str(first.value), str(second.value)), 4
        else:
            return (), False
        self._i += consumed
        is_assign = operator.kind is _Kind.ASSIGN
        if is_assign:
            for name in names:
                self._check_variable(operator, name)
        return names, is_assign

    def _check_variable(self, token: _Token, name: str) -> None:
        if name not in self._vars:
            self._fail(token, f'undefined variable "{name}"')

    def _command(self) -> _Command:
        line = self._peek().line
        args: list[_Expr] = []
        while True:
            token = self._peek()
            if token.kind in (_Kind.PIPE, _Kind.RIGHT, _Kind.RPAREN, _Kind.EOF):
                break
            if args and not token.spaced:
                self._fail(token, f"unexpected {_describe(token)} in operand")
            args.append(self._operand())
        if not args:
            self._fail(token, "missing command")
        return _Command(line, tuple(args))

    def _operand(self) -> _Expr:
        start = self._peek()
        term = self._term()
        names: list[str] = []
        while self._peek().kind is _Kind.FIELD and not self._peek().spaced:
            names.append(str(self._next().value))
        if not names:
            return term
        self.fields.update(name.casefold() for name in names)
        if isinstance(term, _Chain):
            return _Chain(term.base, term.names + tuple(names))
        if isinstance(term, _Variable | _SubPipe | _Function):
            return _Chain(term, tuple(names))
        return self._fail(start, f"unexpected . after term {_describe(start)}")

    def _term(self) -> _Expr:
        token = self._next()
        match token.kind:
            case _Kind.FIELD:
                self.fields.add(str(token.value).casefold())
                return _Chain(_Dot(), (str(token.value),))
            case _Kind.DOT:
                return _Dot()
            case _Kind.NIL:
                return _Nil()
            case _Kind.STRING | _Kind.NUMBER | _Kind.BOOL:
                return _Literal(token.value)
            case _Kind.VARIABLE:
                self._check_variable(token, str(token.value))
                return _Variable(str(token.value))
            case _Kind.IDENT:
                if token.value not in _FUNCTIONS:
                    self._fail(token, f'function "{token.value}" not defined')
                return _Function(str(token.value))
            case _Kind.LPAREN:
                self._enter(token)
                pipe = self._pipeline("parenthesized pipeline", _Kind.RPAREN)
                self._nesting -= 1
                return _SubPipe(pipe)
            case _:
                return self._fail(token, f"unexpected {_describe(token)} in operand")


# ---------------------------------------------------------------------------------------------
# Values


class _EvalError(Exception):
    """An execution error; ``render`` prefixes the line of the action being executed."""


def _truth(value: Any) -> bool:
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


def _text_of(value: Any) -> str:
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
            raise _EvalError(f"cannot print integer: {exc}") from exc
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, Mapping | list | tuple):
        return _to_json(value)
    return str(value)


def _format_float(value: float) -> str:
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


def _to_json(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _EvalError(f"cannot encode value as JSON: {exc}") from exc


def _go_type(value: Any) -> str:
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


def _kind(value: Any) -> str:
    """The comparison class: ints and floats are one kind, unlike Go (see module docstring)."""
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


def _field(value: Any, name: str) -> Any:
    """Look up one field; private attributes and methods stay out of a template's reach."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value.get(name)
    if isinstance(value, str | int | float | list | tuple | bytes | set | frozenset):
        raise _EvalError(f"can't evaluate field {name} in type {_go_type(value)}")
    if name.startswith("_"):
        raise _EvalError(f"can't evaluate private field {name}")
    attribute = getattr(value, name, None)
    if callable(attribute):
        raise _EvalError(f"can't call method {name}: method calls are not supported")
    return attribute


def _iteration(value: Any, variables: int) -> Iterable[tuple[Any, Any]]:
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
            raise _EvalError(f"can't use {value} to iterate over more than one variable")
        return ((number, number) for number in range(value))
    raise _EvalError(f"range can't iterate over {_text_of(value)[:40]}")


# ---------------------------------------------------------------------------------------------
# Functions


@dataclass(frozen=True, slots=True)
class _Func:
    call: Callable[[list[Any]], Any]
    min_args: int
    max_args: int | None
    builds: bool = False
    """Whether the result is new (a string or list), so it counts against the build budget."""


def _fn_and(args: list[Any]) -> Any:
    return next((arg for arg in args if not _truth(arg)), args[-1])


def _fn_or(args: list[Any]) -> Any:
    return next((arg for arg in args if _truth(arg)), args[-1])


def _fn_not(args: list[Any]) -> bool:
    return not _truth(args[0])


def _fn_eq(args: list[Any]) -> bool:
    """Go's eq: true if the first argument equals any other; nil equals only nil."""
    first, first_kind = args[0], _kind(args[0])
    for other in args[1:]:
        other_kind = _kind(other)
        if first_kind == "nil" or other_kind == "nil":
            equal = first_kind == other_kind
        elif first_kind != other_kind:
            raise _EvalError("incompatible types for comparison")
        elif first_kind in ("map", "list"):
            raise _EvalError(f"non-comparable type {_go_type(first)}")
        else:
            equal = bool(first == other)
        if equal:
            return True
    return False


def _less(left: Any, right: Any) -> bool:
    left_kind, right_kind = _kind(left), _kind(right)
    if {left_kind, right_kind} - {"number", "string"}:
        raise _EvalError("invalid type for comparison")
    if left_kind != right_kind:
        raise _EvalError("incompatible types for comparison")
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
    raise _EvalError(f"len of type {_go_type(value)}")


def _int_index(key: Any) -> int:
    if isinstance(key, bool) or not isinstance(key, int):
        raise _EvalError(f"cannot index slice/array with type {_go_type(key)}")
    return key


def _index_one(item: Any, key: Any) -> Any:
    if item is None:
        raise _EvalError("index of untyped nil")
    if isinstance(item, Mapping):
        if isinstance(key, list | dict | set):
            raise _EvalError(f"cannot index map with type {_go_type(key)}")
        return item.get(key)
    if isinstance(item, str | list | tuple):
        position = _int_index(key)
        if not 0 <= position < len(item):
            raise _EvalError(f"index out of range: {position}")
        return ord(item[position]) if isinstance(item, str) else item[position]
    raise _EvalError(f"can't index item of type {_go_type(item)}")


def _fn_index(args: list[Any]) -> Any:
    item = args[0]
    for key in args[1:]:
        item = _index_one(item, key)
    return item


def _fn_slice(args: list[Any]) -> Any:
    item, keys = args[0], args[1:]
    if item is None:
        raise _EvalError("slice of untyped nil")
    if not isinstance(item, str | list | tuple):
        raise _EvalError(f"can't slice item of type {_go_type(item)}")
    if len(keys) > 2:
        raise _EvalError(f"too many slice indexes: {len(keys)}")
    bounds = [_int_index(key) for key in keys]
    start = bounds[0] if bounds else 0
    end = bounds[1] if len(bounds) > 1 else len(item)
    if not 0 <= start <= len(item) or not 0 <= end <= len(item):
        raise _EvalError(f"index out of range: {start if start > len(item) else end}")
    if start > end:
        raise _EvalError(f"invalid slice index: {start} > {end}")
    result = item[start:end]
    return list(result) if isinstance(result, tuple) else result


def _join_limited(parts: Sequence[str]) -> str:
    if sum(len(part) for part in parts) > MAX_OUTPUT_CHARS:
        raise _EvalError(f"result larger than {MAX_OUTPUT_CHARS} characters")
    return "".join(parts)


def _fn_print(args: list[Any]) -> str:
    """Go's Sprint: a space goes between operands only when neither is a string."""
    parts: list[str] = []
    previous_string = False
    for position, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if position and not is_string and not previous_string:
            parts.append(" ")
        parts.append(_text_of(arg))
        previous_string = is_string
    return _join_limited(parts)


def _fn_println(args: list[Any]) -> str:
    parts = [_text_of(arg) for arg in args]
    return _join_limited([" ".join(parts), "\n"]) if parts else "\n"


def _escape_input(args: list[Any]) -> str:
    text = args[0] if len(args) == 1 and isinstance(args[0], str) else _fn_print(args)
    if len(text) > MAX_OUTPUT_CHARS:
        raise _EvalError(f"argument larger than {MAX_OUTPUT_CHARS} characters")
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
    return _to_json(args[0])


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


# printf: a subset of Go's fmt, with Go's error notation (%!d(string=x)) for bad arguments.

_DIRECTIVE: Final = re.compile(r"%([-+# 0]*)([0-9]*)(?:\.([0-9]*))?(.?)", re.DOTALL)
_QUOTE_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
}


@dataclass(frozen=True, slots=True)
class _Spec:
    flags: str
    width: int | None
    precision: int | None


def _pad(text: str, spec: _Spec) -> str:
    if spec.width is None or len(text) >= spec.width:
        return text
    if "-" in spec.flags:
        return text.ljust(spec.width)
    return text.rjust(spec.width, "0" if "0" in spec.flags else " ")


def _pad_number(sign: str, prefix: str, digits: str, spec: _Spec) -> str:
    text = sign + prefix + digits
    if spec.width is None or len(text) >= spec.width or "-" in spec.flags:
        return _pad(text, spec)
    if "0" in spec.flags:
        return sign + prefix + digits.rjust(spec.width - len(sign) - len(prefix), "0")
    return text.rjust(spec.width)


def _sign(negative: bool, spec: _Spec) -> str:
    if negative:
        return "-"
    return "+" if "+" in spec.flags else " " if " " in spec.flags else ""


def _format_int(value: int, verb: str, spec: _Spec) -> str:
    digits = format(abs(value), verb if verb in "boxX" else "d")
    if spec.precision is not None:
        digits = "" if spec.precision == 0 and value == 0 else digits.zfill(spec.precision)
    prefix = {"b": "0b", "o": "0", "x": "0x", "X": "0X"}.get(verb, "") if "#" in spec.flags else ""
    return _pad_number(_sign(value < 0, spec), prefix, digits, spec)


def _format_float_verb(value: float, verb: str, spec: _Spec) -> str:
    if not math.isfinite(value):
        return _pad(_format_float(value), _Spec(spec.flags.replace("0", ""), spec.width, None))
    if verb in "vgG" and spec.precision is None:
        digits = _format_float(abs(value))
        digits = digits.upper() if verb == "G" else digits
    else:
        precision = 6 if spec.precision is None else spec.precision
        digits = format(abs(value), f".{precision}{'g' if verb == 'v' else verb}")
    negative = value < 0 or (value == 0 and math.copysign(1.0, value) < 0)
    return _pad_number(_sign(negative, spec), "", digits, spec)


def _quote_char(char: str, quote: str) -> str:
    if char == quote:
        return "\\" + char
    if char in _QUOTE_ESCAPES:
        return _QUOTE_ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _go_quote(text: str) -> str:
    return '"' + "".join(_quote_char(char, '"') for char in text) + '"'


def _rune(code: int) -> str:
    return chr(code) if 0 <= code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"


def _bad_verb(value: Any, verb: str) -> str:
    if value is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({_go_type(value)}={_text_of(value)})"


def _format_scalar(value: bool | int | float, verb: str, spec: _Spec) -> str | None:
    if isinstance(value, bool):
        return _pad(_text_of(value), spec) if verb in "vt" else None
    if isinstance(value, int):
        if verb in "vdboxX":
            return _format_int(value, "d" if verb == "v" else verb, spec)
        if verb == "c":
            return _pad(_rune(value), spec)
        if verb == "q":
            return _pad("'" + _quote_char(_rune(value), "'") + "'", spec)
        value = float(value)
    return _format_float_verb(value, verb, spec) if verb in "veEfFgG" else None


def _format_value(value: Any, verb: str, spec: _Spec) -> str:
    text: str | None = None
    if verb == "T":
        text = _pad(_go_type(value), spec)
    elif isinstance(value, bool | int | float):
        text = _format_scalar(value, verb, spec)
    elif isinstance(value, str):
        clipped = value if spec.precision is None else value[: spec.precision]
        if verb in "vs":
            text = _pad(clipped, spec)
        elif verb == "q":
            text = _pad(_go_quote(clipped), spec)
        elif verb in "xX":
            text = _pad(format(value.encode("utf-8", "replace").hex(), verb), spec)
    elif verb in "vs":
        text = _pad(_text_of(value), spec)
    return _bad_verb(value, verb) if text is None else text


def _spec_number(digits: str | None) -> int | None:
    if digits is None:
        return None
    if len(digits) > 7 or int(digits or "0") > _MAX_FORMAT_WIDTH:
        raise _EvalError(f"printf width or precision {digits[:10]} too large")
    return int(digits or "0")


def _format_directive(match: re.Match[str], values: list[Any], used: int) -> tuple[str, int]:
    """Format one ``%`` directive; return the text and how many arguments it consumed."""
    flags, width, precision, verb = match.groups()
    if not verb:
        return "%!(NOVERB)", 0
    if verb == "%":
        return "%", 0
    spec = _Spec(flags, _spec_number(width or None), _spec_number(precision))
    if used >= len(values):
        return f"%!{verb}(MISSING)", 0
    return _format_value(values[used], verb, spec), 1


def _fn_printf(args: list[Any]) -> str:
    template, values = args[0], args[1:]
    if not isinstance(template, str):
        raise _EvalError(f"wrong type for value; expected string; got {_go_type(template)}")
    parts: list[str] = []
    size = used = pos = 0
    while pos < len(template):
        percent = template.find("%", pos)
        if percent < 0:
            parts.append(template[pos:])
            break
        parts.append(template[pos:percent])
        match = _DIRECTIVE.match(template, percent)
        assert match is not None  # the pattern matches any text that starts with %
        text, consumed = _format_directive(match, values, used)
        used, pos = used + consumed, match.end()
        parts.append(text)
        size += len(text) + len(parts[-2])
        if size > MAX_OUTPUT_CHARS:
            raise _EvalError(f"result larger than {MAX_OUTPUT_CHARS} characters")
    if used < len(values):
        extra = ", ".join(f"{_go_type(value)}={_text_of(value)}" for value in values[used:])
        parts.append(f"%!(EXTRA {extra})")
    return _join_limited(parts)


_FUNCTIONS: Final[Mapping[str, _Func]] = {
    "and": _Func(_fn_and, 1, None),
    "or": _Func(_fn_or, 1, None),
    "not": _Func(_fn_not, 1, 1),
    "eq": _Func(_fn_eq, 2, None),
    "ne": _Func(_fn_ne, 2, 2),
    "lt": _Func(_fn_lt, 2, 2),
    "le": _Func(_fn_le, 2, 2),
    "gt": _Func(_fn_gt, 2, 2),
    "ge": _Func(_fn_ge, 2, 2),
    "len": _Func(_fn_len, 1, 1),
    "index": _Func(_fn_index, 1, None),
    "slice": _Func(_fn_slice, 1, None, builds=True),
    "print": _Func(_fn_print, 0, None, builds=True),
    "println": _Func(_fn_println, 0, None, builds=True),
    "printf": _Func(_fn_printf, 1, None, builds=True),
    "html": _Func(_fn_html, 0, None, builds=True),
    "js": _Func(_fn_js, 0, None, builds=True),
    "urlquery": _Func(_fn_urlquery, 0, None, builds=True),
    "json": _Func(_fn_json, 1, 1, builds=True),
    "currentDate": _Func(_fn_current_date, 0, None),
    "yesterdayDate": _Func(_fn_yesterday_date, 0, None),
    "toTypeScriptType": _Func(_fn_typescript_type, 1, 1),
}


def _check_arity(name: str, func: _Func, count: int) -> None:
    low, high = func.min_args, func.max_args
    if low <= count and (high is None or count <= high):
        return
    want = str(low) if low == high else f"at least {low}" if high is None else f"{low} to {high}"
    raise _EvalError(f"wrong number of args for {name}: want {want} got {count}")


# ---------------------------------------------------------------------------------------------
# Evaluator


class _BreakSignal(Exception):
    """Unwinds from ``{{break}}`` to its range (nesting is checked at parse time)."""


class _ContinueSignal(Exception):
    """Unwinds from ``{{continue}}`` to its range."""


_MISSING: Final = object()
"""No piped value: distinct from None, which is a legitimate value to pipe."""


class _Executor:
    """One render's state: variables, output and the budgets that stop hostile templates."""

    def __init__(self, defines: Mapping[str, tuple[_Node, ...]]) -> None:
        self.line = 1
        self._defines = defines
        self._names: list[str] = []
        self._values: list[Any] = []
        self._out: list[str] = []
        self._out_chars = 0
        self._built = 0
        self._steps = 0
        self._iterations = 0
        self._depth = 0

    def run(self, root: tuple[_Node, ...], data: Any) -> str:
        self._names, self._values = ["$"], [data]
        self._walk(root, data)
        return "".join(self._out)

    # budgets

    def _step(self) -> None:
        self._steps += 1
        if self._steps > MAX_STEPS:
            raise _EvalError(f"execution took more than {MAX_STEPS} steps")

    def _emit(self, text: str) -> None:
        self._out_chars += len(text)
        if self._out_chars > MAX_OUTPUT_CHARS:
            raise _EvalError(f"output larger than {MAX_OUTPUT_CHARS} characters")
        self._out.append(text)

    def _charge(self, size: int) -> None:
        if size > MAX_OUTPUT_CHARS:
            raise _EvalError(f"result larger than {MAX_OUTPUT_CHARS} characters")
        self._built += size
        if self._built > MAX_BUILT_CHARS:
            raise _EvalError(f"functions built more than {MAX_BUILT_CHARS} characters")

    # variables

    def _push(self, name: str, value: Any) -> None:
        self._names.append(name)
        self._values.append(value)

    def _pop(self, mark: int) -> None:
        del self._names[mark:]
        del self._values[mark:]

    def _position(self, name: str) -> int:
        names = self._names
        for position in range(len(names) - 1, -1, -1):
            if names[position] == name:
                return position
        raise _EvalError(f"undefined variable: {name}")

    # statements

    def _walk(self, nodes: tuple[_Node, ...], dot: Any) -> None:
        for node in nodes:
            self._step()
            if isinstance(node, _Text):
                self._emit(node.text)
            elif isinstance(node, _Action):
                self._action(node, dot)
            elif isinstance(node, _Conditional):
                self._conditional(node, dot)
            elif isinstance(node, _Range):
                self._range(node, dot)
            elif isinstance(node, _Call):
                self._call(node, dot)
            elif isinstance(node, _BreakNode):
                raise _BreakSignal
            else:
                raise _ContinueSignal

    def _action(self, node: _Action, dot: Any) -> None:
        self.line = node.line
        value = self._pipeline(node.pipe, dot)
        if not node.pipe.decl:
            self._emit(_text_of(value))

    def _conditional(self, node: _Conditional, dot: Any) -> None:
        mark = len(self._names)
        for branch in node.branches:
            self.line = branch.pipe.line
            value = self._pipeline(branch.pipe, dot)
            if _truth(value):
                self._walk(branch.body, value if node.keyword == "with" else dot)
                break
        else:
            self._walk(node.otherwise, dot)
        self._pop(mark)

    def _range(self, node: _Range, dot: Any) -> None:
        self.line = node.line
        pipe, mark = node.pipe, len(self._names)
        items = _iteration(self._commands(pipe, dot), len(pipe.decl))
        base = len(self._names)  # the pipeline itself may have declared variables
        if not pipe.is_assign:
            for name in pipe.decl:
                self._push(name, None)
        inner = len(self._names)
        empty = True
        for key, element in items:
            empty = False
            self._iterations += 1
            if self._iterations > MAX_ITERATIONS:
                raise _EvalError(f"range ran more than {MAX_ITERATIONS} iterations")
            self._bind(pipe, base, key, element)
            try:
                self._walk(node.body, element)
            except _BreakSignal:
                break
            except _ContinueSignal:
                pass
            finally:
                self._pop(inner)
        if empty:
            self._walk(node.otherwise, dot)
        self._pop(mark)

    def _bind(self, pipe: _Pipeline, base: int, key: Any, element: Any) -> None:
        """Set the range variables: one gets the element, two get the key and the element."""
        if not pipe.decl:
            return
        values = [element] if len(pipe.decl) == 1 else [key, element]
        for offset, (name, value) in enumerate(zip(pipe.decl, values, strict=True)):
            position = self._position(name) if pipe.is_assign else base + offset
            self._values[position] = value

    def _call(self, node: _Call, dot: Any) -> None:
        self.line = node.line
        body = self._defines.get(node.name)
        if body is None:
            raise _EvalError(f'no such template "{node.name}"')
        new_dot = None if node.pipe is None else self._pipeline(node.pipe, dot)
        if self._depth >= MAX_TEMPLATE_DEPTH:
            raise _EvalError(f"exceeded maximum template depth ({MAX_TEMPLATE_DEPTH})")
        saved = self._names, self._values
        self._names, self._values = ["$"], [new_dot]
        self._depth += 1
        self._walk(body, new_dot)
        self._depth -= 1
        self._names, self._values = saved

    # expressions

    def _pipeline(self, pipe: _Pipeline, dot: Any) -> Any:
        value = self._commands(pipe, dot)
        for name in pipe.decl:
            if pipe.is_assign:
                self._values[self._position(name)] = value
            else:
                self._push(name, value)
        return value

    def _commands(self, pipe: _Pipeline, dot: Any) -> Any:
        value: Any = _MISSING
        for command in pipe.commands:
            value = self._command(command, dot, value)
        return value

    def _command(self, command: _Command, dot: Any, final: Any) -> Any:
        self.line = command.line
        self._step()
        head = command.args[0]
        if isinstance(head, _Function):
            return self._invoke(head.name, command.args[1:], dot, final)
        if len(command.args) > 1 or final is not _MISSING:
            raise _EvalError(f"can't give argument to non-function {_describe_expr(head)}")
        if isinstance(head, _Nil):
            raise _EvalError("nil is not a command")
        return self._arg(head, dot)

    def _arg(self, expr: _Expr, dot: Any) -> Any:
        if isinstance(expr, _Chain):
            value = self._arg(expr.base, dot)
            for name in expr.names:
                value = _field(value, name)
            return value
        if isinstance(expr, _Dot):
            return dot
        if isinstance(expr, _Literal):
            return expr.value
        if isinstance(expr, _Variable):
            return self._values[self._position(expr.name)]
        if isinstance(expr, _SubPipe):
            return self._pipeline(expr.pipe, dot)
        if isinstance(expr, _Function):
            return self._invoke(expr.name, (), dot, _MISSING)
        return None

    def _invoke(self, name: str, exprs: tuple[_Expr, ...], dot: Any, final: Any) -> Any:
        if name in ("and", "or"):
            return self._logical(name, exprs, dot, final)
        func = _FUNCTIONS[name]
        args = [self._arg(expr, dot) for expr in exprs]
        if final is not _MISSING:
            args.append(final)
        _check_arity(name, func, len(args))
        try:
            result = func.call(args)
        except _EvalError as exc:
            raise _EvalError(f"error calling {name}: {exc}") from exc
        except Exception as exc:  # odd input that no check foresaw still fails as a template error
            raise _EvalError(f"error calling {name}: {type(exc).__name__}: {exc}") from exc
        if func.builds and isinstance(result, str | list):
            self._charge(len(result))
        return result

    def _logical(self, name: str, exprs: tuple[_Expr, ...], dot: Any, final: Any) -> Any:
        """``and``/``or`` evaluate lazily, as since Go 1.18: ``and .X (index .X 0)`` is safe."""
        stop_when = name == "or"
        value: Any = _MISSING
        for expr in exprs:
            value = self._arg(expr, dot)
            if _truth(value) == stop_when:
                return value
        if final is not _MISSING:
            value = final
        if value is _MISSING:
            raise _EvalError(f"wrong number of args for {name}: want at least 1 got 0")
        return value


# ---------------------------------------------------------------------------------------------
# Public API


class GoTemplate:
    """A parsed Go template; parse once, render many times (rendering keeps no state)."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            if not isinstance(source, str):
                raise TemplateError(f"template: source must be a string, not {type(source)}")
            parser = _Parser(_Lexer(source).run())
            self._root = parser.parse()
        except TemplateError:
            raise
        except RecursionError as exc:
            raise TemplateError("template: nesting too deep") from exc
        except Exception as exc:
            raise TemplateError(f"template: internal error: {type(exc).__name__}: {exc}") from exc
        self._defines: Mapping[str, tuple[_Node, ...]] = dict(parser.defines)
        self._fields = frozenset(parser.fields)

    def __repr__(self) -> str:
        return f"GoTemplate({self.source[:60]!r})"

    def references(self, field: str) -> bool:
        """Whether any field chain names ``field`` (case-insensitively), in any definition.

        Ollama decides how to drive a template by what it mentions (``.Messages`` or the older
        ``.Prompt``, ``.Tools``, ``.Suffix``), so this looks at the syntax, not at one render.
        """
        return field.casefold() in self._fields

    def render(self, data: Mapping[str, Any]) -> str:
        """Execute against ``data``; any failure, whatever its cause, is a ``TemplateError``."""
        executor = _Executor(self._defines)
        try:
            return executor.run(self._root, data)
        except TemplateError:
            raise
        except _EvalError as exc:
            raise TemplateError(f"template: {executor.line}: {exc}") from None
        except RecursionError as exc:
            raise TemplateError(f"template: {executor.line}: nesting too deep") from exc
        except Exception as exc:
            message = f"internal error: {type(exc).__name__}: {exc}"
            raise TemplateError(f"template: {executor.line}: {message}") from exc
