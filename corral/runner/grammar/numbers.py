"""GBNF for the numbers between ``minimum`` and ``maximum``, digit by digit."""

from __future__ import annotations

import math
from typing import Final

from corral.runner.grammar.gbnf import FRACTION, ZERO_FRACTION, alt, gbnf_literal, repeat, seq

_INT_DIGITS: Final = 16


def _same_length_range(low: str, high: str) -> list[str]:
    """Alternatives matching the digit strings of one length from ``low`` to ``high``."""
    if low == high:
        return [gbnf_literal(low)]
    rest = len(low) - 1
    tail = f" [0-9]{{{rest}}}" if rest > 1 else " [0-9]" if rest == 1 else ""
    if low[0] == high[0]:
        return [seq(gbnf_literal(low[0]), alt(_same_length_range(low[1:], high[1:])))]
    alts: list[str] = []
    first, last = int(low[0]), int(high[0])
    if low[1:] != "0" * rest:
        alts.append(seq(gbnf_literal(low[0]), alt(_same_length_range(low[1:], "9" * rest))))
        first += 1
    middle_last = last if high[1:] == "9" * rest else last - 1
    if first <= middle_last:
        digits = str(first) if first == middle_last else f"{first}-{middle_last}"
        alts.append(f"[{digits}]{tail}")
    if high[1:] != "9" * rest:
        alts.append(seq(gbnf_literal(high[0]), alt(_same_length_range("0" * rest, high[1:]))))
    return alts


def _uint_range(low: int, high: int | None) -> str:
    """Non-negative integers from ``low`` to ``high``, without leading zeros."""
    if high is None:
        high = 10 ** max(_INT_DIGITS, len(str(low))) - 1
    alts: list[str] = []
    full: list[int] = []

    def flush() -> None:
        if full:
            tail = repeat("[0-9]", full[0] - 1, full[-1] - 1)
            alts.append(seq("[1-9]", tail))
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
    return alt(alts)


def _int_at_least(bound: float, exclusive: bool) -> int:
    floor = math.floor(bound)
    return floor + 1 if exclusive or floor < bound else floor


def _int_at_most(bound: float, exclusive: bool) -> int:
    ceil = math.ceil(bound)
    return ceil - 1 if exclusive or ceil > bound else ceil


def magnitudes(
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
        return [seq(_uint_range(first, None), FRACTION)]
    # I.fff lies in [I, I+1): fine when I >= low (> low if exclusive) and I + 1 <= high
    last_with_fraction = math.floor(high) - 1
    if first <= last_with_fraction:
        alts.append(seq(_uint_range(first, last_with_fraction), FRACTION))
    start = max(first, last_with_fraction + 1)
    if last is not None and start <= last:
        alts.append(seq(_uint_range(start, last), ZERO_FRACTION))
    return alts
