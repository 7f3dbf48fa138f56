"""A chat prompt is tokenized once: the counts that fit it to the runner's context come from
one ``/tokenize`` per distinct text, and the tokens of the prompt sent travel with it to the
runner's ``/completion`` (``prompt_tokens``), which does not tokenize it again."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from types import SimpleNamespace
from typing import Any, cast
from unittest.mock import MagicMock

from corral.api.options import Options
from corral.api.types import ChatRequest
from corral.config import Settings
from corral.runner.events import CompletionEvent
from corral.runner.settings import LoadSettings
from corral.server.generation import Generation, Think, _Prepared
from corral.server.shaping import plan_tools
from corral.templates.prompt import PromptTemplate

TEMPLATE = PromptTemplate.from_sources(
    "{{ range .Messages }}<{{ .Role }}> {{ .Content }}\n{{ end }}<assistant>"
)


class CountingRunner:
    """A runner whose tokens are the prompt's words; it records every call."""

    def __init__(self) -> None:
        self.tokenized: list[str] = []
        self.payloads: list[dict[str, Any]] = []

    async def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        assert add_special  # as the runner tokenizes a completion's prompt
        self.tokenized.append(text)
        return [len(word) for word in text.split()]

    async def completion(self, payload: dict[str, Any]) -> AsyncGenerator[CompletionEvent, None]:
        self.payloads.append(payload)
        yield {"done": True, "done_reason": "stop"}


class OneRunner:
    """A scheduler that holds the same runner, loaded with ``num_ctx``, for every request."""

    def __init__(self, runner: CountingRunner, num_ctx: int) -> None:
        self.ref = SimpleNamespace(runner=runner, config=LoadSettings("/m.gguf", num_ctx=num_ctx))

    @contextlib.asynccontextmanager
    async def acquire(self, *_args: Any, **_kwargs: Any) -> AsyncIterator[Any]:
        yield self.ref

    def context_short(self, *_args: Any) -> str:
        return ""  # its context is what it is: a longer prompt is cut


async def chat(runner: CountingRunner, num_ctx: int, turns: int) -> dict[str, Any]:
    model = SimpleNamespace(
        template=TEMPLATE, spec=lambda: None, name=SimpleNamespace(display_short="m")
    )
    generation = Generation(
        Settings(), cast(Any, None), cast(Any, OneRunner(runner, num_ctx)), MagicMock()
    )
    messages = [
        {"Role": "user" if i % 2 == 0 else "assistant", "Content": f"turn {i} " + "word " * 5}
        for i in range(turns)
    ]
    prepared = _Prepared(model=cast(Any, model), options=Options.merged(), started=0.0)
    request = ChatRequest(model="m", messages=[])
    events = generation._chat_events(
        request, prepared, messages, plan_tools(TEMPLATE, None, None), Think(None, False)
    )
    async for _chunk in events:
        pass
    (payload,) = runner.payloads
    return payload


async def test_a_prompt_that_fits_is_tokenized_once_and_its_tokens_sent() -> None:
    runner = CountingRunner()
    payload = await chat(runner, num_ctx=4096, turns=5)
    assert runner.tokenized == [payload["prompt"]]
    assert payload["prompt_tokens"] == await CountingRunner().tokenize(
        payload["prompt"], add_special=True
    )


async def test_a_prompt_cut_to_fit_sends_the_tokens_of_what_was_kept() -> None:
    runner = CountingRunner()
    payload = await chat(runner, num_ctx=40, turns=21)
    assert len(runner.tokenized) == len(set(runner.tokenized)) > 1  # no text twice
    assert payload["prompt"] in runner.tokenized
    assert "turn 0 " not in payload["prompt"] and "turn 20 " in payload["prompt"]
    assert len(payload["prompt_tokens"]) <= 40
    assert payload["prompt_tokens"] == [len(word) for word in payload["prompt"].split()]
