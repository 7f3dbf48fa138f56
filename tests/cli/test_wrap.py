"""The streaming word wrapper: never cuts a word that fits a line, never passes the width."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.cli.wrap import WordWrapper


def wrap(text: str, width: int, piece: int = 1) -> str:
    """Feed ``text`` in pieces of ``piece`` characters, as a stream arrives."""
    wrapper = WordWrapper(width)
    out = [wrapper.feed(text[i : i + piece]) for i in range(0, len(text), piece)]
    return "".join(out) + wrapper.flush()


def test_short_text_is_unchanged() -> None:
    assert wrap("The sky is blue.", 40) == "The sky is blue."


def test_wraps_between_words() -> None:
    assert wrap("aaa bbb ccc ddd", 8) == "aaa bbb\nccc ddd"


def test_a_word_that_exactly_fills_the_line_stays() -> None:
    assert wrap("abcd efgh", 9) == "abcd efgh"
    assert wrap("abcd efghi", 9) == "abcd\nefghi"


def test_newlines_reset_the_line() -> None:
    assert wrap("aaaa\nbbbb cccc", 9) == "aaaa\nbbbb cccc"
    assert wrap("one\n\ntwo", 5) == "one\n\ntwo"


def test_indentation_at_the_start_of_a_line_is_kept() -> None:
    assert wrap("code:\n    x = 1\n", 20) == "code:\n    x = 1\n"


def test_trailing_blanks_before_a_wrap_are_dropped() -> None:
    assert wrap("aaa    bbb", 6) == "aaa\nbbb"


def test_a_word_longer_than_the_line_is_cut_at_the_width() -> None:
    out = wrap("go https://example.com/a/very/long/path ok", 10)
    assert out == "go\nhttps://ex\nample.com/\na/very/lon\ng/path ok"


def test_a_word_waits_until_it_ends() -> None:
    wrapper = WordWrapper(20)
    assert wrapper.feed("Hel") == ""
    assert wrapper.feed("lo wor") == "Hello"
    assert wrapper.feed("ld") == ""
    assert wrapper.flush() == " world"


def test_wide_characters_take_two_cells() -> None:
    out = wrap("日本語のテキスト", 6)
    assert out.splitlines() == ["日本語", "のテキ", "スト"]


def test_tabs_count_to_the_next_stop() -> None:
    assert wrap("a\tb", 9) == "a\tb"
    assert wrap("a\tbc", 9) == "a\nbc"


def test_width_must_be_positive() -> None:
    with pytest.raises(ValueError):
        WordWrapper(0)


_words = st.text(alphabet="abcdefghij", min_size=1, max_size=25)
_gaps = st.sampled_from([" ", "  ", "\n", " \n", "\n\n"])


@given(
    words=st.lists(_words, min_size=1, max_size=40),
    gaps=st.lists(_gaps, min_size=40, max_size=40),
    width=st.integers(min_value=10, max_value=60),
    piece=st.integers(min_value=1, max_value=7),
)
def test_never_cuts_a_word_that_fits_and_never_passes_the_width(
    words: list[str], gaps: list[str], width: int, piece: int
) -> None:
    text = "".join(word + gap for word, gap in zip(words, gaps, strict=False))
    out = wrap(text, width, piece)
    lines = out.split("\n")
    assert all(len(line) <= width for line in lines)
    shown_words = out.split()
    fitting = [w for w in words if len(w) <= width]
    for word in fitting:  # every word that fits a line is somewhere whole
        assert word in shown_words
    # only blanks and line breaks change: the characters of the words stay in order
    assert "".join(out.split()) == "".join(text.split())
