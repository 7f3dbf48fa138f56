"""``printf``: a subset of Go's fmt, with Go's error notation (``%!d(string=x)``) for bad
arguments."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

from corral.templates.go import limits
from corral.templates.go.values import EvalError, format_float, go_type, join_limited, text_of

_MAX_FORMAT_WIDTH: Final = 1_000_000
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
        return _pad(format_float(value), _Spec(spec.flags.replace("0", ""), spec.width, None))
    if verb in "vgG" and spec.precision is None:
        digits = format_float(abs(value))
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
    return f"%!{verb}({go_type(value)}={text_of(value)})"


def _format_scalar(value: bool | int | float, verb: str, spec: _Spec) -> str | None:
    if isinstance(value, bool):
        return _pad(text_of(value), spec) if verb in "vt" else None
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
        text = _pad(go_type(value), spec)
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
        text = _pad(text_of(value), spec)
    return _bad_verb(value, verb) if text is None else text


def _spec_number(digits: str | None) -> int | None:
    if digits is None:
        return None
    if len(digits) > 7 or int(digits or "0") > _MAX_FORMAT_WIDTH:
        raise EvalError(f"printf width or precision {digits[:10]} too large")
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


def sprintf(args: list[Any]) -> str:
    template, values = args[0], args[1:]
    if not isinstance(template, str):
        raise EvalError(f"wrong type for value; expected string; got {go_type(template)}")
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
        if size > limits.MAX_OUTPUT_CHARS:
            raise EvalError(f"result larger than {limits.MAX_OUTPUT_CHARS} characters")
    if used < len(values):
        extra = ", ".join(f"{go_type(value)}={text_of(value)}" for value in values[used:])
        parts.append(f"%!(EXTRA {extra})")
    return join_limited(parts)
