"""Token bytes → client text: whole UTF-8 characters only, stop sequences across chunks."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.runner.text import StopMatcher, Utf8Assembler

MIXED = "héllo 👋🏽 世界 ß € 𝄞 done"


def chunks_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def assemble(chunks: Sequence[bytes]) -> list[str]:
    assembler = Utf8Assembler()
    pieces = [assembler.feed(chunk) for chunk in chunks]
    pieces.append(assembler.flush())
    return pieces


# ---- Utf8Assembler ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["👋", "👋🏽", "世界", "é", "𝄞", MIXED])
def test_split_at_every_byte_boundary(text: str) -> None:
    data = text.encode()
    for cut in range(len(data) + 1):
        pieces = assemble([data[:cut], data[cut:]])
        assert "".join(pieces) == text
        assert all("\ufffd" not in piece for piece in pieces)
        assert pieces[-1] == ""  # nothing was left over


def test_byte_by_byte_yields_whole_characters_only() -> None:
    data = MIXED.encode()
    assembler = Utf8Assembler()
    pieces = [assembler.feed(data[i : i + 1]) for i in range(len(data))]
    assert [p for p in pieces if p] == list(MIXED)
    assert assembler.flush() == ""


def test_character_is_released_with_its_last_byte() -> None:
    assembler = Utf8Assembler()
    emoji = "😀".encode()
    assert assembler.feed(b"a" + emoji[:1]) == "a"
    assert assembler.feed(emoji[1:3]) == ""
    assert assembler.feed(emoji[3:] + b"b") == "😀b"


def test_broken_tail_becomes_replacement_at_flush() -> None:
    assembler = Utf8Assembler()
    assert assembler.feed("x世".encode()[:-1]) == "x"
    assert assembler.flush() == "\ufffd"
    assert assembler.flush() == ""


def test_invalid_bytes_never_raise() -> None:
    assembler = Utf8Assembler()
    text = assembler.feed(b"\xff\x80\x80\x80\x80a") + assembler.flush()
    assert text.endswith("a")
    assert "\ufffd" in text


UTF8_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)


@given(UTF8_TEXT, st.lists(st.integers(min_value=0, max_value=200)))
def test_any_chunking_reassembles_exactly(text: str, cuts: list[int]) -> None:
    data = text.encode()
    pieces = assemble(chunks_at(data, [c for c in cuts if c <= len(data)]))
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)


# ---- StopMatcher ----------------------------------------------------------------------------


def run_stops(stops: Sequence[str], chunks: Sequence[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = []
    for chunk in chunks:
        text, stopped = matcher.feed(chunk)
        out.append(text)
        if stopped:
            return "".join(out), True
    out.append(matcher.flush())
    return "".join(out), False


def test_no_stops_passes_everything() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("abc") == ("abc", False)
    assert matcher.flush() == ""


def test_empty_stop_strings_are_ignored() -> None:
    assert run_stops(["", ""], ["a", "b"]) == ("ab", False)


def test_stop_across_chunks_is_cut_and_not_emitted() -> None:
    matcher = StopMatcher(["</s>"])
    assert matcher.feed("Hello</") == ("Hello", False)
    assert matcher.feed("s") == ("", False)
    assert matcher.feed("> and more") == ("", True)


def test_stop_inside_one_chunk() -> None:
    assert run_stops(["STOP"], ["abcSTOPdef"]) == ("abc", True)
    assert run_stops(["STOP"], ["STOP"]) == ("", True)


def test_partial_match_is_held_then_released_by_flush() -> None:
    matcher = StopMatcher(["<|im_end|>"])
    assert matcher.feed("answer <|im") == ("answer ", False)
    assert matcher.flush() == "<|im"
    assert matcher.flush() == ""


def test_partial_match_that_breaks_is_released() -> None:
    matcher = StopMatcher(["<|im_end|>"])
    assert matcher.feed("a <|im") == ("a ", False)
    assert matcher.feed("age|>") == ("<|image|>", False)


def test_held_text_that_restarts_a_match() -> None:
    assert run_stops(["abc"], ["a", "a", "b", "c"]) == ("a", True)
    assert run_stops(["aab"], ["a", "a", "a", "b"]) == ("a", True)


def test_earliest_stop_wins() -> None:
    assert run_stops(["world", "lo"], ["hello world"]) == ("hel", True)
    assert run_stops(["lo", "world"], ["hello world"]) == ("hel", True)
    assert run_stops(["\n\n", "User:"], ["A.\nUser: x\n\n"]) == ("A.\n", True)


def test_several_stops_hold_the_longest_partial() -> None:
    matcher = StopMatcher(["ab", "xyz"])
    assert matcher.feed("1 xy") == ("1 ", False)
    assert matcher.feed("a") == ("xy", False)
    assert matcher.feed("b") == ("", True)


# ---- both together ----------------------------------------------------------------------------


@st.composite
def text_and_stop(draw: st.DrawFn) -> tuple[str, str]:
    alphabet = st.sampled_from("ab世👋\n") | st.characters(codec="utf-8")
    stop = draw(st.text(alphabet, min_size=1, max_size=4))
    if draw(st.booleans()):
        text = draw(st.text(alphabet, max_size=20)) + stop + draw(st.text(alphabet, max_size=20))
    else:
        text = draw(st.text(alphabet, max_size=40))
    return text, stop


@given(text_and_stop(), st.lists(st.integers(min_value=0, max_value=200)))
def test_stream_is_cut_exactly_at_the_first_stop(case: tuple[str, str], cuts: list[int]) -> None:
    text, stop = case
    data = text.encode()
    assembler, matcher = Utf8Assembler(), StopMatcher([stop])
    out: list[str] = []
    stopped = False
    for chunk in chunks_at(data, [c for c in cuts if c <= len(data)]):
        emitted, stopped = matcher.feed(assembler.feed(chunk))
        assert "\ufffd" not in emitted
        out.append(emitted)
        if stopped:
            break
    if not stopped:
        emitted, stopped = matcher.feed(assembler.flush())
        out.append(emitted)
        if not stopped:
            out.append(matcher.flush())
    position = text.find(stop)
    if position != -1:
        assert stopped
        assert "".join(out) == text[:position]
    else:
        assert not stopped
        assert "".join(out) == text
