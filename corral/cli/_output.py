"""The one place that writes to the terminal: data to stdout, hints and errors to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

__all__ = ["err", "err_inline", "out", "print_json", "table", "write"]

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def write(text: str) -> None:
    """Raw streamed text (model output): no markup, flushed at once."""
    sys.stdout.write(text)
    sys.stdout.flush()


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


def err_inline(text: str) -> None:
    """Overwrite the current stderr line (progress on a terminal)."""
    sys.stderr.write("\r\x1b[K" + text)
    sys.stderr.flush()
