"""``DeferredGrammar``: the marker is found however the pieces split it, exactly once."""

from __future__ import annotations

import pytest

from corral.runner.grammar.deferred import DeferredGrammar


def test_nothing_to_defer() -> None:
    assert DeferredGrammar.of(None, "</think>") is None
    assert DeferredGrammar.of('root ::= "a"', None) is None
    assert DeferredGrammar.of('root ::= "a"', "") is None
    assert DeferredGrammar.of('root ::= "a"', 5) is None


@pytest.mark.parametrize(
    "pieces",
    [
        [b"I think", b"</think>", b"\n\n{"],  # one special token
        [b"I think", b"</", b"think", b">", b"{"],  # split over three pieces
        [b"hm <", b"/th", b"ink>"],
        [b"x</think>y"],
    ],
)
def test_marker_found_across_pieces(pieces: list[bytes]) -> None:
    deferred = DeferredGrammar.of('root ::= "a"', "</think>")
    assert deferred is not None
    seen = [deferred.feed(piece) for piece in pieces]
    assert seen.count(True) == 1
    assert deferred.started and deferred.active == deferred.grammar
    assert deferred.feed(b"</think>") is False  # once only


def test_no_marker_never_starts() -> None:
    deferred = DeferredGrammar.of('root ::= "a"', "</think>")
    assert deferred is not None
    for piece in [b"<", b"/thin", b"g>", b"</thinking", b" think>"]:
        assert deferred.feed(piece) is False
    assert deferred.active is None
