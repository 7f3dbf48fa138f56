"""The one place that writes to the terminal: data to stdout, hints and errors to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["err", "err_inline", "out", "print_json", "table", "write"]

_stdout = Console(highlight=False, soft_wrap=True)
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
    """Plain aligned columns, as Ollama prints them (no borders: easy to grep)."""
    grid = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 4, 0, 0))
    for header in headers:
        grid.add_column(header, no_wrap=True)
    for row in rows:
        grid.add_row(*row)
    _stdout.print(grid)


def err_inline(text: str) -> None:
    """Overwrite the current stderr line (progress on a terminal)."""
    sys.stderr.write("\r\x1b[K" + text)
    sys.stderr.flush()
