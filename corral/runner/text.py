"""Turning a stream of token bytes into text a client may see.

Two problems, both pure and unit-tested here rather than inside the engine:
- A token can end in the middle of a multi-byte UTF-8 character (emoji, CJK). Bytes are
  held until the character is complete, so no chunk ever carries a broken character.
- A stop sequence can span tokens. Text that could still be the start of a stop sequence is
  held back; when a stop sequence completes, everything from it on is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopMatcher", "Utf8Assembler"]


class Utf8Assembler:
    """Accepts raw token bytes; returns the longest complete UTF-8 text so far."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> str:
        buffer = self._pending + data
        cut = _complete_prefix_length(buffer)
        self._pending = buffer[cut:]
        return buffer[:cut].decode("utf-8", errors="replace")

    def flush(self) -> str:
        """Whatever is left at the end (a broken tail becomes U+FFFD, never an exception)."""
        rest, self._pending = self._pending, b""
        return rest.decode("utf-8", errors="replace")


def _complete_prefix_length(buffer: bytes) -> int:
    """Length of ``buffer`` without a trailing, still incomplete UTF-8 sequence."""
    end = len(buffer)
    # Walk back over at most 3 continuation bytes to the lead byte of the last character.
    index = end - 1
    steps = 0
    while index >= 0 and steps < 4 and (buffer[index] & 0xC0) == 0x80:
        index -= 1
        steps += 1
    if index < 0:
        return end
    lead = buffer[index]
    if lead >= 0xF0:
        needed = 4
    elif lead >= 0xE0:
        needed = 3
    elif lead >= 0xC0:
        needed = 2
    else:
        return end
    return end if end - index >= needed else index


class StopMatcher:
    """Finds stop sequences across chunk boundaries.

    ``feed`` returns ``(text_to_emit, stopped)``. While a suffix of the pending text is a
    prefix of some stop sequence it is held back; ``flush`` releases it at the end.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        buffer = self._held + text
        first = -1
        for stop in self._stops:
            position = buffer.find(stop)
            if position != -1 and (first == -1 or position < first):
                first = position
        if first != -1:
            self._held = ""
            return buffer[:first], True
        hold = self._partial_suffix_length(buffer)
        self._held = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold], False

    def flush(self) -> str:
        rest, self._held = self._held, ""
        return rest

    def _partial_suffix_length(self, buffer: str) -> int:
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
