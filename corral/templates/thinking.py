"""Thinking: splitting a reasoning model's output into ``thinking`` and ``content``.

The tags come from the model's template (``<think>``/``</think>`` unless the template shows
others). The model may open the tag itself, or the template may already have opened it at
the end of the prompt; either way the text up to the closing tag is thinking. A partial tag
at the end of a chunk is held until the next one decides it, so tags never leak into the
stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral.templates.prompt import PromptTemplate

__all__ = ["ThinkTags", "ThinkingParser", "think_tags"]

_TAG_PAIRS = (("<think>", "</think>"), ("<thinking>", "</thinking>"))


@dataclass(frozen=True, slots=True)
class ThinkTags:
    open: str = "<think>"
    close: str = "</think>"


def think_tags(template: PromptTemplate) -> ThinkTags:
    source = template.source
    for open_tag, close_tag in _TAG_PAIRS:
        if close_tag in source:
            return ThinkTags(open_tag, close_tag)
    found = re.search(r"<(\|?[a-z_]*think[a-z_]*\|?)>", source)
    if found:
        name = found.group(1)
        return ThinkTags(f"<{name}>", f"</{name}>")
    return ThinkTags()


class ThinkingParser:
    """``feed(text)`` → ``(thinking, content)`` that can be shown now."""

    def __init__(self, tags: ThinkTags, *, opened: bool = False) -> None:
        self._tags = tags
        self._state = "opened" if opened else "start"
        self._buffer = ""

    def feed(self, text: str) -> tuple[str, str]:
        self._buffer += text
        return self._drain(final=False)

    def finish(self) -> tuple[str, str]:
        return self._drain(final=True)

    def _drain(self, *, final: bool) -> tuple[str, str]:
        thinking: list[str] = []
        content: list[str] = []
        while self._buffer:
            if self._state == "start":
                stripped = self._buffer.lstrip()
                if stripped.startswith(self._tags.open):
                    self._buffer = stripped[len(self._tags.open) :]
                    self._state = "opened"
                    continue
                if not final and (not stripped or self._tags.open.startswith(stripped)):
                    break  # could still become the opening tag
                self._state = "content"
                continue
            if self._state == "opened":  # leading blank lines of the thinking
                self._buffer = self._buffer.lstrip()
                if not self._buffer:
                    break
                self._state = "thinking"
            if self._state == "thinking":
                at = self._buffer.find(self._tags.close)
                if at >= 0:
                    thinking.append(self._buffer[:at])
                    self._buffer = self._buffer[at + len(self._tags.close) :]
                    self._state = "after"
                    continue
                hold = 0 if final else _partial_suffix(self._buffer, self._tags.close)
                thinking.append(self._buffer[: len(self._buffer) - hold])
                self._buffer = self._buffer[len(self._buffer) - hold :]
                break
            if self._state == "after":  # the blank lines between thinking and answer
                self._buffer = self._buffer.lstrip()
                if not self._buffer:
                    break
                self._state = "content"
            content.append(self._buffer)
            self._buffer = ""
        return "".join(thinking), "".join(content)


def _partial_suffix(text: str, marker: str) -> int:
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0
