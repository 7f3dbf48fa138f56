"""Word wrap for text that arrives a few characters at a time (a streamed answer).

Why not :mod:`textwrap`: it needs the whole paragraph, and an answer must appear as it
streams. :class:`WordWrapper` holds back only the word being typed and the blanks before it;
when the word ends (a blank, a newline, or the end of the answer) it goes out on the current
line if it fits, else on a new one. So no word is ever cut, no escape codes are needed to
take text back, and at most one word waits on screen.

What could go wrong: a word wider than the whole line cannot fit anywhere; it is cut at the
width (the only place a word is cut), so no line is ever longer than ``width`` cells. Blanks
at the end of a line are dropped (they would be invisible, and could push past the width);
blanks at the start of a line (indentation) are kept. Wide characters (CJK, emoji) count as
two cells and each is a word of its own, since such text has no spaces between words.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["WordWrapper"]

_TAB_CELLS = 8


class WordWrapper:
    """Stateful wrapper: :meth:`feed` pieces of text, write what it returns, then
    :meth:`flush` at the end of the text."""

    def __init__(self, width: int) -> None:
        if width < 1:
            raise ValueError(f"width must be positive, not {width}")
        from prompt_toolkit.utils import get_cwidth  # only where wrapping is on (a terminal)

        self._cwidth: Callable[[str], int] = get_cwidth
        self.width = width
        self._column = 0  # cells already written on the current line
        self._blanks = ""  # blanks after the last word written, not written yet
        self._word = ""  # the word being received, not written yet
        self._word_cells = 0

    def feed(self, text: str) -> str:
        """Take the next piece of text; return what can be written now."""
        out: list[str] = []
        for char in text:
            if char == "\n":
                out.append(self._place_word())
                out.append("\n")
                self._column = 0
                self._blanks = ""
            elif char in " \t":
                out.append(self._place_word())
                self._blanks += char
            else:
                out.append(self._add_to_word(char))
        return "".join(out)

    def flush(self) -> str:
        """The end of the text: the word held back, without trailing blanks."""
        placed = self._place_word()
        self._blanks = ""
        return placed

    def _add_to_word(self, char: str) -> str:
        cells = max(self._cwidth(char), 0)
        if cells >= 2:  # a wide character is a word of its own
            before = self._place_word()
            self._word, self._word_cells = char, cells
            return before + self._place_word()
        self._word += char
        self._word_cells += cells
        if self._word_cells >= self.width:  # as wide as a line: it cannot wait any longer
            return self._place_word()
        return ""

    def _place_word(self) -> str:
        if not self._word:
            return ""
        needed = self._blank_cells() + self._word_cells
        if self._column + needed <= self.width:
            placed = self._blanks + self._word
            self._column += needed
        else:  # on a line of its own; at column 0 the indentation that does not fit goes
            placed = ("\n" if self._column > 0 else "") + self._word
            self._column = self._word_cells
        self._blanks, self._word, self._word_cells = "", "", 0
        return placed

    def _blank_cells(self) -> int:
        column = self._column
        for char in self._blanks:
            column = (column // _TAB_CELLS + 1) * _TAB_CELLS if char == "\t" else column + 1
        return column - self._column
