"""The one relay loop: a runner's completion events become one API dialect's chunks.

Every generating route streams the same way. Each token chunk from the runner goes through
an ``OutputShaper`` (thinking and tool calls split out of the text) and what it releases
becomes a chunk in the dialect's shape; on ``done`` the shaper's held text is flushed, the
runner's counters become ``Stats``, the dialect shapes the final event and the request is
observed (metrics). A ``Shape`` is all that differs between dialects: Ollama's generate and
chat (``generation.py``) have one each, and so can any other dialect that relays directly
instead of translating Ollama's chunks (as the OpenAI routes do). The final chunk is a
``FinalChunk``: it also carries the stop string that ended the answer, which only dialects
with a field for it (Anthropic's ``stop_sequence``) read.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from corral.runner.events import CompletionEvent, TokenLogprob
from corral.server.shaping import OutputShaper, Parts

__all__ = ["Chunk", "FinalChunk", "Shape", "Stats", "relay", "run_stats", "stop_sequence_of"]

#: one event of an answer as a route sends it (a JSON object: an NDJSON line, an SSE event)
Chunk = dict[str, Any]


class FinalChunk(dict[str, Any]):
    """The last chunk of an answer, as its dialect shaped it, and what the runner said about
    the end that the shape has no field for: the stop string that ended the text
    (``stop_sequence``, None when the end-of-turn token, a limit or nothing in particular did).

    To every writer it is the plain dict it holds (an attribute is never serialised), so
    Ollama's chunks keep Ollama's fields; a dialect that has such a field reads it with
    ``stop_sequence_of``.
    """

    __slots__ = ("stop_sequence",)

    def __init__(self, chunk: Chunk, *, stop_sequence: str | None = None) -> None:
        super().__init__(chunk)
        self.stop_sequence = stop_sequence


def stop_sequence_of(chunk: Chunk) -> str | None:
    """The stop string that ended the answer whose final chunk this is, if one did."""
    return chunk.stop_sequence if isinstance(chunk, FinalChunk) else None


class Stats(TypedDict):
    """What a generation cost, in Ollama's names (durations in nanoseconds)."""

    total_duration: int  # from the request's start to the final event
    load_duration: int  # from the request's start until a runner was held
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


@dataclass(frozen=True, slots=True)
class Shape:
    """How one dialect writes the relay's output."""

    #: a chunk from parts the shaper released (any of them may be empty) and the logprobs
    #: of the tokens they came from (None when the request asked for none)
    chunk: Callable[[Parts, list[TokenLogprob] | None], Chunk]
    #: the last event, from the runner's (``done``) and the request's stats
    final: Callable[[CompletionEvent, Stats], Chunk]


async def relay(
    events: AsyncGenerator[CompletionEvent, None],
    shaper: OutputShaper,
    shape: Shape,
    *,
    started: float,
    loaded_at: float,
    observe: Callable[[Stats, int], None],
) -> AsyncGenerator[Chunk, None]:
    """Relay ``events`` (``RunnerClient.completion``) as ``shape``'s chunks.

    ``started`` and ``loaded_at`` are ``time.perf_counter()`` readings (request start,
    runner held); ``observe`` gets the stats and how many prompt tokens were read (not
    held by the cache) once, before the final event is yielded.
    Closing the relay closes ``events``, which cancels the generation in the runner.
    """
    try:
        async for event in events:
            if event.get("done"):
                rest = shaper.finish()
                if rest:
                    yield shape.chunk(rest, None)
                stats = run_stats(event, started, loaded_at)
                final = FinalChunk(
                    shape.final(event, stats), stop_sequence=event.get("stop_sequence")
                )
                read = stats["prompt_eval_count"] - int(event.get("prompt_cached", 0))
                observe(stats, max(0, read))
                yield final
            else:
                text = event.get("content", "")
                logprobs = event.get("logprobs")
                if shaper.passthrough:
                    yield shape.chunk(Parts(content=text), logprobs)
                    continue
                parts = shaper.feed(text)
                if parts or logprobs:  # logprobs go out even while a parser holds text
                    yield shape.chunk(parts, logprobs)
    finally:
        await events.aclose()


def run_stats(done: CompletionEvent, started: float, loaded_at: float) -> Stats:
    """The request's stats, taken now: its durations and the runner's counters."""
    now = time.perf_counter()
    return Stats(
        total_duration=int((now - started) * 1e9),
        load_duration=int((loaded_at - started) * 1e9),
        prompt_eval_count=int(done.get("prompt_eval_count", 0)),
        prompt_eval_duration=int(done.get("prompt_eval_duration", 0)),
        eval_count=int(done.get("eval_count", 0)),
        eval_duration=int(done.get("eval_duration", 0)),
    )
