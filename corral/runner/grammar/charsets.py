"""Sets of code points, as sorted ranges, and GBNF for one JSON string character in a set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from corral.runner.grammar.errors import SchemaError
from corral.runner.grammar.gbnf import HEX, alt, gbnf_class, gbnf_literal, json_char

Ranges = list[tuple[int, int]]
_MAX_CODE: Final = 0x10FFFF
_SURROGATES: Final = (0xD800, 0xDFFF)


def normalize(ranges: Sequence[tuple[int, int]]) -> Ranges:
    out: Ranges = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def complement(ranges: Sequence[tuple[int, int]], low: int = 0, high: int = _MAX_CODE) -> Ranges:
    out: Ranges = []
    start = low
    for a, b in normalize(ranges):
        if b < start or a > high:
            continue
        if a > start:
            out.append((start, a - 1))
        start = max(start, b + 1)
    if start <= high:
        out.append((start, high))
    return out


def _subtract(ranges: Sequence[tuple[int, int]], minus: Sequence[tuple[int, int]]) -> Ranges:
    return complement([*complement(ranges), *minus])


DIGIT: Final = [(0x30, 0x39)]
WORD: Final = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
SPACE: Final = [(0x09, 0x0D), (0x20, 0x20)]
ASCII: Final = (0, 0x7F)
DOT: Final = complement([(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)])
_CONTROLS: Final = (0x00, 0x1F)
# Characters a JSON string cannot hold raw.
_SPECIAL: Final = [_CONTROLS, (0x22, 0x22), (0x5C, 0x5C), _SURROGATES]


def set_expr(ranges: Sequence[tuple[int, int]]) -> str:
    """Sequence-safe GBNF for one JSON string character whose decoded value is in ``ranges``."""
    chars = _subtract(ranges, [_SURROGATES])
    if not chars:
        raise SchemaError("pattern has a character class that matches nothing")
    raw = _subtract(chars, _SPECIAL)
    alts: list[str] = []
    if raw:
        outside = complement([*raw, *_SPECIAL])
        negative = normalize([*_SPECIAL, *outside])
        alts.append(
            gbnf_class(raw) if len(raw) <= len(negative) else gbnf_class(negative, negated=True)
        )
    controls = _subtract(chars, complement([_CONTROLS]))
    if controls == [_CONTROLS]:  # all of them: the short escapes, else \u00XX
        alts.append('"\\\\" [bfnrt]')
        alts.append('"\\\\u00" ( "0" [0-7bBeEfF] | "1" ' + HEX + " )")
    else:
        for low, high in controls:
            alts.extend(gbnf_literal(json_char(chr(code))) for code in range(low, high + 1))
    for code in (0x22, 0x5C):
        if any(low <= code <= high for low, high in chars):
            alts.append(gbnf_literal(json_char(chr(code))))
    return alt(alts)
