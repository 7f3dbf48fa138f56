"""The relay loop over scripted runner events: chunks, the held text flushed on ``done``,
stats observed once before the final event, and the runner's stream closed with the relay."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable

from corral.runner.events import CompletionEvent, TokenLogprob
from corral.server.relay import Chunk, Shape, Stats, relay
from corral.server.shaping import OutputShaper
from corral.templates.prompt import PromptTemplate

LOGPROB: TokenLogprob = {"token": "a", "logprob": -0.5, "bytes": [97]}
DONE: CompletionEvent = {
    "done": True,
    "done_reason": "length",
    "prompt_eval_count": 3,
    "prompt_cached": 2,
    "prompt_eval_duration": 10,
    "eval_count": 2,
    "eval_duration": 20,
}


class Script:
    """A runner's completion stream that remembers being closed."""

    def __init__(self, *events: CompletionEvent) -> None:
        self.events = events
        self.closed = False

    async def stream(self) -> AsyncGenerator[CompletionEvent, None]:
        try:
            for event in self.events:
                yield event
        finally:
            self.closed = True


SHAPE = Shape(
    chunk=lambda parts, logprobs: {
        "thinking": parts.thinking,
        "content": parts.content,
        "logprobs": logprobs,
    },
    final=lambda done, stats: {"done": done.get("done_reason"), **stats},
)


def _relay(
    script: Script,
    *,
    think: bool = False,
    observe: Callable[[Stats, int], None] = lambda stats, read: None,
) -> AsyncGenerator[Chunk, None]:
    template = PromptTemplate.from_sources("{{ .Prompt }}<think></think>")
    shaper = OutputShaper(template, prompt="", think=think, plan=None)
    started = time.perf_counter()
    return relay(
        script.stream(), shaper, SHAPE, started=started, loaded_at=started, observe=observe
    )


async def test_chunks_then_the_final_event_with_stats() -> None:
    observed: list[tuple[Stats, int]] = []
    script = Script({"content": "Hel"}, {"content": "lo", "logprobs": [LOGPROB]}, DONE)
    chunks: list[Chunk] = []
    seen: list[int] = []  # how many observations there were as each chunk came
    async for chunk in _relay(script, observe=lambda stats, read: observed.append((stats, read))):
        chunks.append(chunk)
        seen.append(len(observed))
    assert seen == [0, 0, 1]  # observed once, before the final event goes out
    assert chunks[:2] == [
        {"thinking": "", "content": "Hel", "logprobs": None},
        {"thinking": "", "content": "lo", "logprobs": [LOGPROB]},
    ]
    final = chunks[2]
    assert final["done"] == "length"
    assert (final["prompt_eval_count"], final["eval_count"], final["eval_duration"]) == (3, 2, 20)
    assert final["load_duration"] == 0 and final["total_duration"] >= 0
    # the whole prompt is counted; the metrics get the tokens read, the cache's left out
    assert observed == [({k: v for k, v in final.items() if k != "done"}, 1)]
    assert len(chunks) == 3 and script.closed


async def test_thinking_is_split_and_held_text_flushed_on_done() -> None:
    script = Script({"content": "<think>hm</think>Hi"}, DONE)
    split = [chunk async for chunk in _relay(script, think=True)]
    assert split[0] == {"thinking": "hm", "content": "Hi", "logprobs": None}
    script = Script({"content": "<thi"}, DONE)  # maybe the opening tag: held until done
    held = [chunk async for chunk in _relay(script, think=True)]
    assert held[0] == {"thinking": "", "content": "<thi", "logprobs": None}
    assert len(split) == len(held) == 2 and held[1]["done"] == "length"


async def test_closing_the_relay_closes_the_runner_stream() -> None:
    script = Script({"content": "a"}, {"content": "b"}, DONE)
    chunks = _relay(script)
    assert (await anext(chunks))["content"] == "a"
    await chunks.aclose()
    assert script.closed
