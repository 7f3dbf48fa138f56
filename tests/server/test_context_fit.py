"""A long prompt gets a runner whose context holds it: the generation paths with the real
scheduler and fake runners whose tokens are the prompt's words."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from types import SimpleNamespace
from typing import Any, cast
from unittest.mock import MagicMock

import pytest

from corral.api.options import Options
from corral.api.types import ChatRequest, GenerateRequest
from corral.config import Settings
from corral.estimate import Estimate
from corral.hardware import SystemInfo, SystemMemory
from corral.runner.events import CompletionEvent
from corral.runner.settings import LoadSettings
from corral.scheduler import RunnerLike, Scheduler
from corral.server.context_fit import (
    context_flags,
    estimate_chat,
    estimate_text,
    tokens_at_most,
)
from corral.server.generation import Generation, Think, _Prepared
from corral.server.shaping import plan_tools
from corral.templates.prompt import PromptTemplate
from tests.test_scheduler import CPU, GIB, FakeRunner, model

TEMPLATE = PromptTemplate.from_sources(
    "{{ range .Messages }}<{{ .Role }}> {{ .Content }}\n{{ end }}<assistant>"
)
GEMMA = model("gemma", context_length=32768)
SMOL = model("smol", context_length=8192)


class WordRunner(FakeRunner):
    """A fake runner whose tokens are the prompt's words; it records each completion."""

    def __init__(self, config: LoadSettings, pid: int) -> None:
        super().__init__(config, pid)
        self.payloads: list[dict[str, Any]] = []
        self.tokenized = 0

    async def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        self.tokenized += 1
        return [1] * len(text.split())

    async def completion(self, payload: dict[str, Any]) -> AsyncGenerator[CompletionEvent, None]:
        self.payloads.append(payload)
        count = len(payload.get("prompt_tokens") or payload["prompt"].split())
        yield {"content": "ok"}
        yield {"done": True, "done_reason": "stop", "prompt_eval_count": count}


class Factory:
    def __init__(self) -> None:
        self.runners: list[WordRunner] = []

    async def __call__(self, config: LoadSettings) -> RunnerLike:
        runner = WordRunner(config, pid=2000 + len(self.runners))
        self.runners.append(runner)
        return runner


def make_scheduler(factory: Factory) -> Scheduler:
    memory = SystemMemory(total_bytes=64 * GIB, free_bytes=32 * GIB)
    system = SystemInfo(gpus=(), cpu=CPU, memory=memory)
    return Scheduler(
        Settings(num_parallel=1),
        factory,
        system=lambda: system,
        estimator=lambda _config, _system: Estimate.on_cpu(GIB),
    )


def generation(scheduler: Scheduler) -> Generation:
    return Generation(Settings(), cast(Any, None), scheduler, MagicMock())


def prepared(spec: Any, **options: Any) -> _Prepared:
    resolved = SimpleNamespace(
        template=TEMPLATE, spec=lambda: spec, name=SimpleNamespace(display_short=spec.name)
    )
    opts = Options.merged(options, num_ctx_default=0)
    return _Prepared(model=cast(Any, resolved), options=opts, started=0.0)


def words(count: int) -> str:
    return "word " * count


async def chat(
    gen: Generation, spec: Any, messages: Sequence[tuple[str, str]], **fields: Any
) -> list[dict[str, Any]]:
    template_messages = [{"Role": role, "Content": content} for role, content in messages]
    options = fields.pop("options", {})
    request = ChatRequest(model=spec.name, messages=[], **fields)
    events = gen._chat_events(
        request,
        prepared(spec, **options),
        template_messages,
        plan_tools(TEMPLATE, None, None),
        Think(None, False),
    )
    return [chunk async for chunk in events]


async def test_a_warm_runner_too_short_for_the_prompt_is_reloaded_once() -> None:
    factory = Factory()
    scheduler = make_scheduler(factory)
    gen = generation(scheduler)
    try:
        await chat(gen, GEMMA, [("user", "hi")])
        assert factory.runners[0].config.num_ctx == 4096
        # an estimate never reloads a warm runner; the count (9000 words) asks for a longer
        # context, and the runner is reloaded once
        chunks = await chat(gen, GEMMA, [("system", words(9000)), ("user", "go")])
        assert len(factory.runners) == 2
        first, second = factory.runners
        assert first.stops == 1 and not first.payloads[1:]  # it answered nothing more
        assert second.config.num_ctx == 16384
        (payload,) = second.payloads
        assert words(9000) in payload["prompt"]  # not cut
        assert chunks[-1]["prompt_eval_count"] == len(payload["prompt"].split())
        # a small request afterwards keeps the large runner
        await chat(gen, GEMMA, [("user", "hi again")])
        assert len(factory.runners) == 2 and len(second.payloads) == 2
    finally:
        await scheduler.shutdown()


async def test_a_cold_load_is_sized_by_the_estimate() -> None:
    factory = Factory()
    scheduler = make_scheduler(factory)
    gen = generation(scheduler)
    try:
        # "word " is 5 bytes a token: the estimate (bytes / 3) over-counts and holds it
        await chat(gen, GEMMA, [("system", words(5000)), ("user", "go")])
        (runner,) = factory.runners
        assert runner.config.num_ctx == 16384
    finally:
        await scheduler.shutdown()


async def test_a_model_that_cannot_hold_the_prompt_cuts_it_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    factory = Factory()
    scheduler = make_scheduler(factory)
    gen = generation(scheduler)
    turns = [("user" if i % 2 == 0 else "assistant", words(2000)) for i in range(10)]
    try:
        with caplog.at_level(logging.WARNING, logger="corral.server.generation"):
            await chat(gen, SMOL, [*turns, ("user", "the newest turn")])
        (runner,) = factory.runners
        assert runner.config.num_ctx == 8192  # its training length
        (payload,) = runner.payloads
        assert payload["prompt"].rstrip().endswith("<user> the newest turn\n<assistant>")
        assert len(payload["prompt_tokens"]) <= 8192
        assert "does not fit its context (num_ctx 8192)" in caplog.text
    finally:
        await scheduler.shutdown()


async def test_a_set_num_ctx_is_kept_and_truncate_false_sends_the_whole_prompt() -> None:
    factory = Factory()
    scheduler = make_scheduler(factory)
    gen = generation(scheduler)
    history = [("user", words(3000)), ("assistant", "fine"), ("user", "go")]
    try:
        await chat(gen, GEMMA, history, options={"num_ctx": 2048}, truncate=False, shift=False)
        (runner,) = factory.runners
        assert runner.config.num_ctx == 2048
        (payload,) = runner.payloads
        assert words(3000) in payload["prompt"]  # the runner refuses it (a 400)
        assert payload["truncate"] is False and payload["shift"] is False
    finally:
        await scheduler.shutdown()


async def test_generate_counts_a_long_prompt_and_grows_the_context() -> None:
    factory = Factory()
    scheduler = make_scheduler(factory)
    gen = generation(scheduler)
    try:
        short = GenerateRequest(model="gemma", prompt="hi", raw=True)
        [
            _
            async for _ in gen._generate_events(
                short, prepared(GEMMA), TEMPLATE, "", Think(None, False)
            )
        ]
        assert factory.runners[0].tokenized == 0  # a short prompt is not counted
        long = GenerateRequest(model="gemma", prompt=words(12000), raw=True)
        chunks = [
            c
            async for c in gen._generate_events(
                long, prepared(GEMMA), TEMPLATE, "", Think(None, False)
            )
        ]
        assert factory.runners[-1].config.num_ctx == 16384
        assert chunks[-1]["prompt_eval_count"] == 12000
    finally:
        await scheduler.shutdown()


def test_estimates_and_flags() -> None:
    opts = Options.merged({"num_predict": 100})
    assert estimate_text("abcde" * 30, opts).prompt_tokens == 60  # 2.5 bytes a token
    assert estimate_text("", opts, extra_tokens=7).prompt_tokens == 7
    assert estimate_text("", opts).answer_tokens == 100
    messages = [{"Role": "user", "Content": "x" * 300, "ToolCalls": []}]
    need = estimate_chat(messages, [{"type": "function"}], Options.merged())
    assert need.prompt_tokens > 100 and not need.counted
    assert tokens_at_most("héllo") == 9  # 6 bytes, plus BOS, EOS and a space
    assert context_flags(None, None) == {}
    assert context_flags(True, False) == {"shift": False}
    assert context_flags(False, True) == {"truncate": False}
