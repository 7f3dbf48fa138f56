"""``pattern``: parses the supported regex subset and writes GBNF for the strings it finds."""

from __future__ import annotations

import re
from typing import Any

from corral.runner.grammar.charsets import (
    ASCII,
    DIGIT,
    DOT,
    SPACE,
    WORD,
    Ranges,
    complement,
    normalize,
    set_expr,
)
from corral.runner.grammar.errors import SchemaError, show
from corral.runner.grammar.gbnf import alt, repeat, seq
from corral.runner.grammar.limits import MAX_DEPTH, MAX_PATTERN_CHARS, MAX_REPEAT

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
        return SchemaError(f"pattern {show(self.text)} at {self.pos}: {why}")

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
            return ("set", list(DOT))
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

    def escape(self, in_class: bool) -> tuple[Ranges, bool]:
        """The set of an escape after ``\\``; the flag says it is a shorthand class."""
        self.pos += 1
        ch = self.peek()
        if not ch:
            raise self.error("pattern ends with '\\'")
        self.pos += 1
        shorthand = {"d": DIGIT, "w": WORD, "s": SPACE}
        if ch in shorthand:
            return list(shorthand[ch]), True
        if ch.lower() in shorthand:  # \D \W \S: complement within ASCII (engines differ beyond)
            return complement(shorthand[ch.lower()], *ASCII), True
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

    def class_atom(self) -> tuple[Ranges, bool]:
        if self.peek() == "\\":
            return self.escape(in_class=True)
        ch = self.peek()
        self.pos += 1
        return [(ord(ch), ord(ch))], False

    def char_class(self) -> Ranges:
        self.pos += 1
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        ranges: Ranges = []
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
            return complement(ranges, *ASCII) if ascii_only else complement(ranges)
        return normalize(ranges)


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
        return set_expr(node[1])
    if kind == "seq":
        return seq(*(_regex_expr(item) for item in node[1]))
    if kind == "alt":
        return alt([_regex_expr(item) for item in node[1]])
    if kind == "rep":
        inner, low, high = node[1], int(node[2]), node[3]
        if low > MAX_REPEAT:
            raise SchemaError(f"pattern repeats more than {MAX_REPEAT} times")
        if high is None and _nullable(inner):
            raise SchemaError("pattern repeats something that can be empty without bound")
        return repeat(_regex_expr(inner), low, None if high is None else min(high, MAX_REPEAT))
    raise SchemaError("pattern anchors ^ and $ are only supported at its ends")


def pattern_expr(pattern: str) -> str:
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
            seq(
                "" if anchored_start else "char*",
                _regex_expr(("seq", items)),
                "" if anchored_end else "char*",
            )
        )
    return alt(alts)
