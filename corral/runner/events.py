"""The events of a runner's ``POST /completion`` stream, as a typed record.

The runner answers a completion with NDJSON, one object a line (see ``runner/server.py``):
token chunks, then one ``done`` event with the counters, and that is the end of the stream.
An ``{"error", "status"?}`` line can end it instead; ``RunnerClient.completion`` raises that
as a ``CorralError``, so what the client yields is ``CompletionEvent``s: chunks, then the
last event, told apart by ``done``.

The fields are what ``runner/engine.py`` emits. Events are plain dicts on the wire and at
run time: this definition checks their use, it does not validate the runner's JSON.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

__all__ = ["CompletionEvent", "TokenLogprob", "TopLogprob"]


class TopLogprob(TypedDict):
    """One alternative to a sampled token (Ollama's ``api.TokenLogprob``)."""

    token: str  # the token's text piece (invalid UTF-8 replaced)
    logprob: float  # from the raw logits: before temperature, penalties or grammar
    bytes: list[int]  # the piece's raw bytes: a piece may be part of a UTF-8 character


class TokenLogprob(TopLogprob):
    """A sampled token's logprob (Ollama's ``api.Logprob``), with the top N alternatives
    when the request asked for N > 0 (see ``runner/logprobs.py``)."""

    top_logprobs: NotRequired[list[TopLogprob]]


class CompletionEvent(TypedDict, total=False):
    """One event of a completion: a token chunk, or the last event (``done``)."""

    # ---- a token chunk
    #: text produced since the last chunk (stop sequences already cut out); the last event
    #: has none
    content: str
    #: when the request asked for ``logprobs``: one entry per sampled token whose text goes
    #: out in this chunk (text held for UTF-8 or a stop string keeps its entries until then)
    logprobs: list[TokenLogprob]

    # ---- the last event (durations in nanoseconds)
    done: Literal[True]
    done_reason: str  # "stop" or "length"
    #: the request's stop string that ended the text, when one did (``done_reason`` "stop");
    #: the server keeps it off Ollama's chunks (Anthropic's ``stop_sequence`` reads it)
    stop_sequence: str
    prompt_eval_count: int  # the prompt's tokens: those read now and those the cache held
    prompt_cached: int  # of those, how many the cache held (not read again)
    prompt_eval_duration: int
    eval_count: int  # tokens generated
    eval_duration: int
    #: prompt and generated token ids, when the request set ``return_tokens``
    tokens: list[int]
