"""A grammar that starts once the model has finished thinking (``format`` with a thinking
model, as newest Ollama: the model thinks unconstrained, then the answer is constrained).

The server sends the completion's grammar (from ``format``) with ``grammar_after``, the
thinking end marker of the model's template (``</think>``), when the prompt leaves the
model inside its thinking. The slot's sampler is built without the grammar; every
generated piece (control tokens as their text, so a ``</think>`` that is one special token
counts) goes through ``DeferredGrammar.feed``, and the step after the marker completes the
engine builds the sampler again, with the grammar: the answer is constrained from its first
token. A model that never closes its thinking is never constrained (it ran out of
``num_predict`` or context while thinking, and its answer is empty anyway).

What can go wrong: a grammar llama.cpp cannot compile would only fail at the marker, after
the thinking streamed; ``check`` compiles it when the request starts, so a bad one is a 400
before any token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import llama_cpp as llama

__all__ = ["DeferredGrammar"]


@dataclass(slots=True)
class DeferredGrammar:
    """``grammar`` (GBNF text), to be applied once ``marker`` has been generated."""

    grammar: str
    marker: str
    started: bool = False
    _tail: bytes = field(default=b"", repr=False)

    @classmethod
    def of(cls, grammar: str | None, marker: Any) -> DeferredGrammar | None:
        """The deferral for a request, or None when there is nothing to defer."""
        if not grammar or not isinstance(marker, str) or not marker:
            return None
        return cls(grammar=grammar, marker=marker)

    def check(self, vocab: Any) -> None:
        """Compile the grammar once now; ``ValueError`` (a 400) when llama.cpp cannot."""
        compiled = llama.llama_sampler_init_grammar(vocab, self.grammar.encode(), b"root")
        if not compiled:
            raise ValueError("invalid grammar")
        llama.llama_sampler_free(compiled)

    def feed(self, piece: bytes) -> bool:
        """Take the next generated piece; True exactly once: when the marker completes,
        the moment to rebuild the sampler with the grammar."""
        if self.started:
            return False
        marker = self.marker.encode()
        text = self._tail + piece
        if marker in text:
            self.started = True
            self._tail = b""
            return True
        self._tail = text[-(len(marker) - 1) :] if len(marker) > 1 else b""
        return False

    @property
    def active(self) -> str | None:
        """The grammar the sampler should hold now: none until the marker."""
        return self.grammar if self.started else None
