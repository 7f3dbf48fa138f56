"""One chat turn on the terminal: the ``/api/chat`` request, the streamed answer drawn as it
arrives (word wrap, thinking dimmed under its headings), and the timing summary.

Both ``corral run MODEL PROMPT`` and the interactive session go through :func:`chat`, so
the two show an answer the same way. Escape codes, the spinner and word wrap are for
terminals only: piped output is the answer's text and nothing else.

What could go wrong: Ctrl+C while the answer streams raises ``KeyboardInterrupt`` inside the
HTTP read; it leaves :func:`chat` after the stream is closed (the server sees the disconnect
and stops generating) and after the spinner and colours are cleaned up, so the caller only
has to drop the turn. Server errors arrive as ``CliError`` (before or during the stream).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from corral.cli import _output as output
from corral.cli.client import CliError, ServerClient
from corral.cli.wrap import WordWrapper

__all__ = ["ChatSettings", "chat", "parse_think", "print_timings", "spinner"]

_MIN_WRAP_COLUMNS = 10  # narrower than this, wrapping does more harm than good
_THINKING_OPEN = "Thinking...\n"
_THINKING_CLOSE = "...done thinking.\n\n"


@dataclass(slots=True)
class ChatSettings:
    """What a chat turn is sent with and how its answer is shown; the interactive session
    changes these with ``/set``."""

    model: str
    format: str = ""
    keep_alive: str = ""
    think: bool | str | None = None
    hide_thinking: bool = False
    word_wrap: bool = True
    verbose: bool = False
    system: str = ""
    template: str = ""  # shown and saved; the chat API has no template field
    options: dict[str, Any] = field(default_factory=dict)

    def request(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The ``/api/chat`` body: the session's system message first, then ``messages``."""
        sent = [{"role": "system", "content": self.system}] if self.system else []
        body: dict[str, Any] = {"model": self.model, "messages": sent + messages, "stream": True}
        if self.format:
            body["format"] = self.format
        if self.keep_alive:
            body["keep_alive"] = self.keep_alive
        if self.options:
            body["options"] = self.options
        if self.think is not None:
            body["think"] = self.think
        return body


def parse_think(value: str) -> bool | str:
    """``--think`` / ``/set think`` value → the API's ``think`` (Ollama's accepted words)."""
    lowered = value.strip().lower()
    if lowered in {"", "true"}:
        return True
    if lowered == "false":
        return False
    if lowered in {"high", "medium", "low", "max"}:
        return lowered
    raise CliError(
        f"invalid value for --think: {value!r} (must be true, false, high, medium, low, or max)"
    )


def chat(
    client: ServerClient, settings: ChatSettings, messages: list[dict[str, Any]]
) -> dict[str, Any]:
    """Send one turn, draw the answer as it streams, return the assistant message."""
    view = _AnswerView(settings)
    final: dict[str, Any] = {}
    with spinner() as waiting:
        try:
            with contextlib.closing(client.stream("/api/chat", settings.request(messages))) as s:
                for event in s:
                    message = event.get("message", {})
                    thinking, content = message.get("thinking", ""), message.get("content", "")
                    if content or (thinking and view.show_thinking):
                        waiting.stop()
                    view.add(thinking, content)
                    if event.get("done"):
                        final = event
        finally:
            waiting.stop()
            view.finish()
    if settings.verbose:
        print_timings(final)
    return {"role": "assistant", "content": view.content}


class _AnswerView:
    """Draws thinking and content pieces; Ollama's layout: dim ``Thinking...`` heading, the
    thinking text dimmed, ``...done thinking.`` when the content starts, then the content."""

    def __init__(self, settings: ChatSettings) -> None:
        self.styled = output.stdout_is_terminal()
        self.show_thinking = not settings.hide_thinking
        columns = output.terminal_columns()
        wrap = settings.word_wrap and self.styled and columns >= _MIN_WRAP_COLUMNS
        self._width = columns if wrap else 0
        self._wrapper = self._new_wrapper()
        self._thinking_open = False
        self._thinking_ends_line = True
        self._content: list[str] = []

    @property
    def content(self) -> str:
        return "".join(self._content)

    def add(self, thinking: str, content: str) -> None:
        if thinking and self.show_thinking:
            self._add_thinking(thinking)
        if content:
            self._close_thinking()
            self._content.append(content)
            self._write(content)

    def finish(self) -> None:
        """End of the answer (or Ctrl+C): the held-back word, the thinking block closed,
        and the final newline."""
        self._write_raw(self._flush_wrapper(), dim=self._thinking_open)
        if self._thinking_open:
            self._close_thinking()
        output.write("\n")

    def _add_thinking(self, text: str) -> None:
        if not self._thinking_open:
            output.write(_THINKING_OPEN, dim=self.styled, bold=self.styled)
            self._thinking_open = True
        self._thinking_ends_line = text.endswith("\n")
        self._write(text, dim=True)

    def _close_thinking(self) -> None:
        if not self._thinking_open:
            return
        self._thinking_open = False
        self._write_raw(self._flush_wrapper(), dim=True)
        if not self._thinking_ends_line:
            output.write("\n")
        output.write(_THINKING_CLOSE, dim=self.styled, bold=self.styled)
        self._wrapper = self._new_wrapper()

    def _write(self, text: str, *, dim: bool = False) -> None:
        self._write_raw(self._wrapper.feed(text) if self._wrapper else text, dim=dim)

    def _write_raw(self, text: str, *, dim: bool = False) -> None:
        output.write(text, dim=dim and self.styled)

    def _flush_wrapper(self) -> str:
        return self._wrapper.flush() if self._wrapper else ""

    def _new_wrapper(self) -> WordWrapper | None:
        return WordWrapper(self._width) if self._width else None


class _Spinner:
    """A few braille frames on stderr until the first token; erased, never left behind."""

    _FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self) -> None:
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._spin, name="spinner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None or self._stopped.is_set():
            return
        self._stopped.set()
        self._thread.join()
        output.err_write("\r\x1b[K")

    def _spin(self) -> None:
        frame = 0
        while not self._stopped.wait(0.1 if frame else 0.3):  # no flicker on fast answers
            output.err_write("\r" + self._FRAMES[frame % len(self._FRAMES)])
            frame += 1


@contextlib.contextmanager
def spinner() -> Iterator[_Spinner]:
    """A spinner while waiting, when both stdout and stderr are terminals; else inert."""
    spin = _Spinner()
    if output.stdout_is_terminal() and output.stderr_is_terminal():
        spin.start()
    try:
        yield spin
    finally:
        spin.stop()


def print_timings(final: dict[str, Any]) -> None:
    """Ollama's ``--verbose`` summary from the last (``done``) chunk, on stderr."""

    def seconds(key: str) -> float:
        return float(final.get(key, 0)) / 1e9

    def rate(count_key: str, duration_key: str) -> str:
        duration = seconds(duration_key)
        return f"{final.get(count_key, 0) / duration:.2f} tokens/s" if duration else "n/a"

    output.err(f"total duration:       {seconds('total_duration'):.6f}s")
    output.err(f"load duration:        {seconds('load_duration'):.6f}s")
    output.err(f"prompt eval count:    {final.get('prompt_eval_count', 0)} token(s)")
    output.err(f"prompt eval duration: {seconds('prompt_eval_duration'):.6f}s")
    output.err(f"prompt eval rate:     {rate('prompt_eval_count', 'prompt_eval_duration')}")
    output.err(f"eval count:           {final.get('eval_count', 0)} token(s)")
    output.err(f"eval duration:        {seconds('eval_duration'):.6f}s")
    output.err(f"eval rate:            {rate('eval_count', 'eval_duration')}")
