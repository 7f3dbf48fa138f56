"""The lexer: turns template source into tokens, trimming text around ``{{-`` / ``-}}``."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from corral.errors import TemplateError

SPACE: Final = " \t\r\n"
_MAX_NUMBER_TEXT: Final = 1000


class Kind(enum.Enum):
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
    "|": Kind.PIPE,
    "(": Kind.LPAREN,
    ")": Kind.RPAREN,
    ",": Kind.COMMA,
    "=": Kind.ASSIGN,
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
class Token:
    kind: Kind
    text: str
    line: int
    spaced: bool = False
    """Whether whitespace precedes the token inside an action: Go needs it between operands."""
    value: Any = None


def describe(token: Token) -> str:
    if token.kind is Kind.EOF:
        return "EOF"
    text = token.text if len(token.text) <= 40 else token.text[:37] + "..."
    return f'"{text}"'


def _is_alnum(char: str) -> bool:
    return char == "_" or char.isalpha() or char.isdecimal()


def _has_left_trim(source: str, pos: int) -> bool:
    return source.startswith("-", pos) and pos + 1 < len(source) and source[pos + 1] in SPACE


def _has_right_trim(source: str, pos: int) -> bool:
    return pos < len(source) and source[pos] in SPACE and source.startswith("-}}", pos + 1)


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


class Lexer:
    """Turns source into tokens; text outside actions is already trimmed per the markers."""

    def __init__(self, source: str) -> None:
        self._src = source
        self._pos = 0
        self._line = 1
        self._tokens: list[Token] = []
        self._trim_next = False
        self._parens = 0
        self._spaced = False

    def run(self) -> list[Token]:
        while self._pos < len(self._src):
            self._lex_text()
        self._tokens.append(Token(Kind.EOF, "", self._line))
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
            text = text.lstrip(SPACE)
        if trim_left:
            text = text.rstrip(SPACE)
        if text:
            self._tokens.append(Token(Kind.TEXT, text, self._line))
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
        self._tokens.append(Token(Kind.LEFT, "{{", start_line))
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
            if char in SPACE:
                self._pos += 1
                self._line += char == "\n"
                self._spaced = True
                continue
            self._lex_token(char)

    def _close_action(self, *, trim: bool) -> None:
        if self._parens:
            self._fail("unclosed left paren")
        self._emit(Kind.RIGHT, self._pos + (4 if trim else 2))
        self._trim_next = trim

    def _emit(self, kind: Kind, end: int, value: Any = None) -> None:
        text = self._src[self._pos : end]
        self._tokens.append(Token(kind, text, self._line, self._spaced, value))
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
            self._lex_word(Kind.VARIABLE, self._pos + 1)
        elif char == "." and not (following and "0" <= following <= "9"):
            self._lex_word(Kind.FIELD, self._pos + 1)
        elif char in "+-." or "0" <= char <= "9":
            self._lex_number()
        elif char == "_" or char.isalpha():
            self._lex_word(Kind.IDENT, self._pos)
        elif char in _PUNCTUATION:
            self._lex_punctuation(char)
        elif char == ":" and following == "=":
            self._emit(Kind.DECLARE, self._pos + 2)
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

    def _lex_word(self, kind: Kind, start: int) -> None:
        end = start
        while end < len(self._src) and _is_alnum(self._src[end]):
            end += 1
        self._check_terminator(end)
        word = self._src[self._pos : end]
        if kind is Kind.FIELD:
            if end == start:
                self._emit(Kind.DOT, end)
            else:
                self._emit(Kind.FIELD, end, word[1:])
        elif kind is Kind.VARIABLE:
            self._emit(Kind.VARIABLE, end, word)
        elif word in ("true", "false"):
            self._emit(Kind.BOOL, end, word == "true")
        elif word == "nil":
            self._emit(Kind.NIL, end)
        else:
            self._emit(Kind.KEYWORD if word in _KEYWORDS else Kind.IDENT, end, word)

    def _check_terminator(self, pos: int) -> None:
        """Go requires a word to end at a separator, so ``.A"b"`` is an error, not two args."""
        src = self._src
        if pos >= len(src) or src[pos] in SPACE or src[pos] in ".,|:()":
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
        self._emit(Kind.NUMBER, end, value)

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
            self._emit(Kind.STRING, pos + 1, value)
        elif len(value) != 1:
            self._fail(f"malformed character constant: {src[self._pos : pos + 1][:40]}")
        else:
            self._emit(Kind.NUMBER, pos + 1, ord(value))

    def _lex_raw(self) -> None:
        end = self._src.find("`", self._pos + 1)
        if end < 0:
            self._fail("unterminated raw quoted string")
        self._emit(Kind.STRING, end + 1, self._src[self._pos + 1 : end].replace("\r", ""))
