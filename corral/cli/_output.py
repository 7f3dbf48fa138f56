"""The one place that writes to the terminal: data to stdout, hints and errors to stderr."""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any

from rich.console import Console

__all__ = [
    "err",
    "err_inline",
    "err_write",
    "out",
    "print_json",
    "stderr_is_terminal",
    "stdout_is_terminal",
    "table",
    "terminal_columns",
    "write",
]

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


_GREY = "\x1b[90m"
_BOLD = "\x1b[1m"
_RESET = "\x1b[0m"


def write(text: str, *, dim: bool = False, bold: bool = False) -> None:
    """Raw streamed text (model output): no markup, flushed at once. ``dim``/``bold`` wrap
    each piece in its own escape codes, so an interrupted stream never leaves the terminal
    grey; the caller asks for them only when stdout is a terminal."""
    if text and (dim or bold):
        text = (_GREY if dim else "") + (_BOLD if bold else "") + text + _RESET
    sys.stdout.write(text)
    sys.stdout.flush()


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def terminal_columns() -> int:
    """Width of the terminal stdout shows on (80 where it cannot be told)."""
    return shutil.get_terminal_size((80, 24)).columns


def out(text: str = "") -> None:
    print(text, flush=True)


def err(text: str) -> None:
    _stderr.print(text, markup=False)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def table(headers: list[str], rows: list[list[str]]) -> None:
    """Aligned columns without borders, as Ollama prints them: never truncated, easy to grep."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [headers, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("    ".join(cells).rstrip(), flush=True)


def err_write(text: str) -> None:
    """Raw text on stderr, no newline (a spinner frame, its erasure)."""
    sys.stderr.write(text)
    sys.stderr.flush()


def err_inline(text: str) -> None:
    """Overwrite the current stderr line (progress on a terminal)."""
    sys.stderr.write("\r\x1b[K" + text)
    sys.stderr.flush()
