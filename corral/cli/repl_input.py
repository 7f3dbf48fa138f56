"""Typing into the interactive session: the ``\"\"\"`` reader and the history file.

Both are pure of the terminal and the server, and tested that way: :class:`MultilineReader`
turns typed lines into entries with Ollama's ``\"\"\"`` rules, :class:`OllamaHistory` keeps
``~/.ollama/history`` in Ollama's format. :mod:`corral.cli.repl` ties them to
prompt_toolkit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from prompt_toolkit.history import History

__all__ = [
    "CONTINUATION",
    "EXIT_HINT",
    "PROMPT",
    "TRIPLE",
    "Block",
    "Entry",
    "MultilineReader",
    "OllamaHistory",
    "history_path",
]

TRIPLE: Final = '"""'
PROMPT: Final = ">>> "
CONTINUATION: Final = "... "
EXIT_HINT: Final = "Use Ctrl + d or /bye to exit."
HISTORY_LIMIT: Final = 100  # entries kept in the file, as Ollama's readline

Block = Literal["prompt", "system", "template"]


# ---- the \"\"\" reader ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """A complete piece of input: a ``line`` to interpret (a command or a message), or the
    text of a finished block (``prompt``, ``system``, ``template``)."""

    kind: Literal["line", "prompt", "system", "template"]
    text: str


class MultilineReader:
    """Collects typed lines into entries, with Ollama's ``\"\"\"`` rules.

    A line starting with ``\"\"\"`` opens a message (text after the marks counts), a line
    ending with ``\"\"\"`` closes it (text before the marks counts); the lines are joined with
    newlines. ``/set system \"\"\"...`` opens a block the same way (:meth:`open`).
    """

    def __init__(self) -> None:
        self._block: Block | None = None
        self._parts: list[str] = []

    @property
    def continuing(self) -> bool:
        """Inside a block: the prompt should be the continuation prompt."""
        return self._block is not None

    def feed(self, line: str) -> Entry | None:
        """One typed line → an entry, or None while a block is still open."""
        if self._block is None:
            if line.startswith(TRIPLE):
                return self.open("prompt", line)
            return Entry("line", line)
        before, closed = _cut_suffix(line, TRIPLE)
        self._parts.append(before)
        if not closed:
            self._parts.append("\n")
            return None
        entry = Entry(self._block, "".join(self._parts))
        self.cancel()
        return entry

    def open(self, block: Block, text: str) -> Entry | None:
        """Start ``block`` with ``text``: a whole entry unless it opens with ``\"\"\"`` and
        does not close on the same line."""
        body, opened = _cut_prefix(text, TRIPLE)
        if not opened:
            return Entry(block, text)
        body, closed = _cut_suffix(body, TRIPLE)
        if closed:
            return Entry(block, body)
        self._block, self._parts = block, [body, "\n"]
        return None

    def cancel(self) -> None:
        """Drop a half-typed block (Ctrl+C)."""
        self._block, self._parts = None, []


def _cut_prefix(text: str, prefix: str) -> tuple[str, bool]:
    return (text[len(prefix) :], True) if text.startswith(prefix) else (text, False)


def _cut_suffix(text: str, suffix: str) -> tuple[str, bool]:
    return (text[: -len(suffix)], True) if text.endswith(suffix) else (text, False)


# ---- history --------------------------------------------------------------------------------


class OllamaHistory(History):
    """``~/.ollama/history`` in Ollama's format: one entry per line, the last 100, rewritten
    whole (temp file + rename, mode 0600) after each entry, so ``ollama run`` and
    ``corral run`` share it. With ``enabled`` false (``OLLAMA_NOHISTORY``, ``/set
    nohistory``) entries are remembered for this session only and never reach the file, not
    even when history is turned back on.

    A file that cannot be read or written never stops the session: history is a comfort.
    """

    def __init__(self, path: Path, *, enabled: bool = True) -> None:
        super().__init__()
        self.path = path
        self.enabled = enabled
        self._entries = self._read()

    def load_history_strings(self) -> Iterable[str]:
        return reversed(self._entries)

    def store_string(self, string: str) -> None:
        if not self.enabled:  # prompt_toolkit keeps it in memory; the file never sees it
            return
        # an entry with newlines (a paste) is kept as its lines, as Ollama's readline would
        self._entries.extend(line.strip() for line in string.splitlines() if line.strip())
        del self._entries[:-HISTORY_LIMIT]
        self._write()

    def _read(self) -> list[str]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return [line.strip() for line in text.splitlines() if line.strip()][-HISTORY_LIMIT:]

    def _write(self) -> None:
        temp = self.path.with_name(self.path.name + ".tmp")
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(entry + "\n" for entry in self._entries)
            temp.replace(self.path)


def history_path() -> Path:
    return Path.home() / ".ollama" / "history"
