"""Ollama's generation routes, ``POST /api/generate`` and ``POST /api/chat``.

Each request is validated, its prompt built from the model's template (or, for ``raw``
generate, taken as is), a runner held from the scheduler for exactly as long as the answer
streams, and the runner's events relayed (``relay.py``) as Ollama's chunks: one NDJSON line
each, or one object merged by ``merge_generate``/``merge_chat``. ``open_generate`` and
``open_chat`` are the same paths without HTTP, for the OpenAI-compatible routes. Handlers
never talk to llama.cpp; errors are ``CorralError``s raised before the first chunk where
they can be, and mapped to statuses in ``app.py``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.api.options import Options, validate_options
from corral.api.types import ChatRequest, GenerateRequest, Message
from corral.config import Settings
from corral.errors import BadRequestError
from corral.runner.events import CompletionEvent, TokenLogprob
from corral.scheduler import LoadedModel, RunnerLike, Scheduler, unloads_when_idle
from corral.server.context_fit import (
    ContextSizing,
    LargerContext,
    context_flags,
    estimate_chat,
    estimate_text,
    tokens_at_most,
)
from corral.server.images import (
    check_images,
    generate_image_messages,
    mark_chat_images,
    referenced_images,
)
from corral.server.metrics import Metrics
from corral.server.models import ModelCatalog, ResolvedModel
from corral.server.relay import Chunk, Shape, Stats, relay
from corral.server.shaping import OutputShaper, Parts, ToolPlan, plan_tools, tool_call_id
from corral.server.streaming import now_rfc3339, parse_body, respond
from corral.templates.prompt import PromptTemplate, fit_chat_prompt, think_values
from corral.templates.thinking import think_tags

__all__ = ["Generation", "merge_chat", "merge_generate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Think:
    template: bool | str | None  # .Think/.ThinkLevel/.IsThinkSet (None: not set)
    parse: bool  # split thinking out of the answer


@dataclass(slots=True)
class _Prepared:
    model: ResolvedModel
    options: Options
    started: float


@dataclass(slots=True)
class _Plan:
    """What to ask a held runner for, and how to relay its answer."""

    payload: dict[str, Any]  # the runner's /completion request
    shaper: OutputShaper
    shape: Shape


class Generation:
    """Ollama's generate and chat over one model catalogue and one scheduler."""

    def __init__(
        self, settings: Settings, models: ModelCatalog, scheduler: Scheduler, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.models = models
        self.scheduler = scheduler
        self.metrics = metrics

    async def generate(self, request: Request) -> Response:
        req = await parse_body(request, GenerateRequest)
        opened = await self.open_generate(req)
        if isinstance(opened, Response):
            return opened
        return await respond(opened, stream=req.stream, merge=merge_generate, request=request)

    async def chat(self, request: Request) -> Response:
        req = await parse_body(request, ChatRequest)
        opened = await self.open_chat(req)
        if isinstance(opened, Response):
            return opened
        return await respond(opened, stream=req.stream, merge=merge_chat, request=request)

    async def open_generate(self, req: GenerateRequest) -> AsyncGenerator[Chunk, None] | Response:
        """Validate a generate request and return its chunk stream (Ollama's shape), or the
        response of a load-only request (empty prompt)."""
        prepared = await self._prepare(req.model, req.options)
        model = prepared.model
        _check_format(req.format)
        if req.raw and (req.template or req.system or req.context):
            raise BadRequestError("raw mode does not support template, system, or context")
        if model.is_embedding:
            raise BadRequestError(f'"{req.model}" does not support generate')
        if req.images and not model.projector_path:
            raise BadRequestError(f"{model.name.display_long} does not support vision")
        check_images(req.images)  # 400 for a bad picture, before a runner is held
        if req.suffix and not model.template.uses("Suffix"):
            raise BadRequestError(f"{model.name.display_long} does not support insert")
        _check_context(req.context)
        think = _think_choice(req.think, req.model, model)
        if not req.prompt and not req.context:
            return await self._load_only(req.model, prepared, req.keep_alive, chat=False)
        template = PromptTemplate.from_sources(req.template) if req.template else model.template
        system = req.system if req.system is not None else model.system
        return self._generate_events(req, prepared, template, system, think)

    async def open_chat(self, req: ChatRequest) -> AsyncGenerator[Chunk, None] | Response:
        """Validate a chat request and return its chunk stream (Ollama's shape), or the
        response of a load-only request (no messages). Errors are raised here, before the
        first byte, so they keep their status."""
        prepared = await self._prepare(req.model, req.options)
        model = prepared.model
        _check_format(req.format)
        if model.is_embedding:
            raise BadRequestError(f'"{req.model}" does not support chat')
        if req.tools and not model.template.supports_tools:
            raise BadRequestError(f"{model.name.display_long} does not support tools")
        # rendering runs in a worker thread: a template is bounded, but never on the loop
        plan = await asyncio.to_thread(plan_tools, model.template, req.tools, req.tool_choice)
        think = _think_choice(req.think, req.model, model)
        for message in req.messages:
            if message.images and not model.projector_path:
                raise BadRequestError(f"{model.name.display_long} does not support vision")
            check_images(message.images)
        if not req.messages:
            return await self._load_only(req.model, prepared, req.keep_alive, chat=True)
        messages = [m.to_template() for m in req.messages]
        if model.messages:
            history = [
                Message.model_validate(m).to_template() for m in model.messages if "role" in m
            ]
            messages = history + messages
        if model.system and (not messages or messages[0]["Role"] != "system"):
            messages.insert(0, Message(role="system", content=model.system).to_template())
        return self._chat_events(req, prepared, messages, plan, think)

    async def _prepare(self, model_name: str, options: dict[str, Any] | None) -> _Prepared:
        started = time.perf_counter()
        if not model_name:
            raise BadRequestError("model is required")
        model = await asyncio.to_thread(self.models.resolve, model_name)
        request_options = validate_options(options)
        merged = Options.merged(
            model.params, request_options, num_ctx_default=self.settings.context_length
        )
        return _Prepared(model=model, options=merged, started=started)

    def _generate_events(
        self,
        req: GenerateRequest,
        prepared: _Prepared,
        template: PromptTemplate,
        system: str,
        think: Think,
    ) -> AsyncGenerator[Chunk, None]:
        """The answer's chunks: the prompt rendered (or raw, or after ``context``'s text),
        the token ids returned as the final ``context`` unless raw."""

        async def plan(ref: LoadedModel) -> _Plan:
            if req.raw:
                prompt = req.prompt
            else:
                messages = []
                if system:
                    messages.append(Message(role="system", content=system).to_template())
                for image in generate_image_messages(len(req.images or ())):  # [img-N]
                    messages.append(Message.model_validate(image).to_template())
                messages.append(Message(role="user", content=req.prompt).to_template())
                prompt = await asyncio.to_thread(
                    _render_generate,
                    template,
                    messages,
                    req.prompt,
                    system,
                    req.suffix,
                    think.template,
                )
            if req.context:
                prompt = await _context_text(ref.runner, req.context) + prompt
            if sizing.could_exceed(ref, tokens_at_most(prompt)):  # a longer context?
                sizing.check(ref, len(await ref.runner.tokenize(prompt, add_special=True)))
            payload: dict[str, Any] = {
                "prompt": prompt,
                "options": prepared.options.sampling(),
                "format": _format_kind(req.format),
                "return_tokens": not req.raw,
                **context_flags(req.truncate, req.shift),
            }
            if req.images:
                payload["images"] = req.images
            if req.logprobs_top is not None:
                payload["logprobs"] = req.logprobs_top
            if not req.raw:
                _defer_format(payload, template, prompt, think)
            shaper = OutputShaper(template, prompt=prompt, think=think.parse, plan=None)
            return _Plan(payload, shaper, _generate_shape(req.model))

        text = "".join((system, req.prompt, req.suffix))
        estimate = estimate_text(text, prepared.options, len(req.context or ()))
        sizing = ContextSizing(self.scheduler, prepared.options, estimate)
        return self._relay_held("generate", prepared, req.keep_alive, plan, sizing)

    def _chat_events(
        self,
        req: ChatRequest,
        prepared: _Prepared,
        messages: list[dict[str, Any]],
        tools: ToolPlan,
        think: Think,
    ) -> AsyncGenerator[Chunk, None]:
        """The answer's chunks: the prompt fitted to the held runner's context, a tool call
        forced by the grammar where ``tools`` requires one or the template opens one."""
        model = prepared.model
        chat_images = mark_chat_images(messages)  # [img-N] in the contents (images.py)

        async def plan(ref: LoadedModel) -> _Plan:
            runner = ref.runner
            tokenized: dict[str, list[int]] = {}

            async def count(text: str) -> int:
                # add_special as the runner tokenizes a completion's prompt: the tokens of
                # the prompt that fits go to the runner as they are
                if text not in tokenized:
                    tokenized[text] = await runner.tokenize(text, add_special=True)
                return len(tokenized[text])

            num_ctx = ref.config.num_ctx
            cut: list[int] = []
            prompt = await fit_chat_prompt(
                model.template,
                messages,
                tools.tools,
                num_ctx if req.truncate is not False else sys.maxsize,  # false: sent whole
                count,
                think.template,
                dropped=cut.append,
            )
            if tokenized:  # the first text counted is the whole conversation
                sizing.check(ref, len(next(iter(tokenized.values()))))
            if cut:  # agents send tens of thousands of tokens of system prompt and tools
                size = len(tokenized[prompt]) if prompt in tokenized else await count(prompt)
                logger.warning(
                    "the chat for %s does not fit its context (num_ctx %d): dropped the %d"
                    " oldest of %d messages%s",
                    model.name.display_short,
                    num_ctx,
                    cut[0],
                    len(messages),
                    f"; the rest is still {size} tokens, so the runner cuts the middle"
                    " of the prompt (num_keep and the end kept)"
                    if size > num_ctx
                    else "",
                )
            payload: dict[str, Any] = {
                "prompt": prompt,
                "options": prepared.options.sampling(),
                "format": _format_kind(req.format),
                **context_flags(req.truncate, req.shift),
            }
            images = referenced_images(prompt, chat_images)
            if images:  # the runner cuts the prompt at their markers
                payload["images"] = images
            elif prompt in tokenized:  # not tokenized again in the runner
                payload["prompt_tokens"] = tokenized[prompt]
            if req.logprobs_top is not None:
                payload["logprobs"] = req.logprobs_top
            if tools.forced_schema is not None:
                payload["format"] = tools.forced_schema
                payload["wrap"] = list(tools.wrap)
            elif tools.opens_call(prompt):
                # The template itself opened a call: the grammar makes it a valid one.
                forced = await asyncio.to_thread(
                    plan_tools, model.template, tools.tools, "required"
                )
                payload["format"] = forced.forced_schema
                payload["wrap"] = ["", forced.wrap[1]]
            else:
                _defer_format(payload, model.template, prompt, think)
            shaper = OutputShaper(model.template, prompt=prompt, think=think.parse, plan=tools)
            return _Plan(payload, shaper, _chat_shape(req.model, shaper))

        sizing = ContextSizing(
            self.scheduler, prepared.options, estimate_chat(messages, tools.tools, prepared.options)
        )
        return self._relay_held("chat", prepared, req.keep_alive, plan, sizing)

    async def _relay_held(
        self,
        route: str,
        prepared: _Prepared,
        keep_alive: float | None,
        plan: Callable[[LoadedModel], Awaitable[_Plan]],
        sizing: ContextSizing | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """Hold a runner for ``prepared``'s model while its answer to ``plan`` streams. A
        plan that finds the runner's context too short for its prompt (``LargerContext``,
        before anything is sent) gets another runner, loaded for the counted prompt."""
        model = prepared.model
        need = sizing.estimate if sizing is not None else None
        while True:
            try:
                async with self.scheduler.acquire(
                    model.spec(), prepared.options, keep_alive, need=need
                ) as ref:
                    loaded_at = time.perf_counter()
                    planned = await plan(ref)
                    chunks = relay(
                        ref.runner.completion(planned.payload),
                        planned.shaper,
                        planned.shape,
                        started=prepared.started,
                        loaded_at=loaded_at,
                        observe=partial(self._observe, route, model),
                    )
                    async with aclosing(chunks):
                        async for chunk in chunks:
                            yield chunk
                    return
            except LargerContext as grow:  # raised once at most (ContextSizing.check)
                need = grow.need

    def _observe(self, route: str, model: ResolvedModel, stats: Stats, read: int) -> None:
        self.metrics.request_seconds.labels(route).observe(stats["total_duration"] / 1e9)
        self.metrics.observe_generation(model.name.display_short, read, stats["eval_count"])

    async def _load_only(
        self, model_name: str, prepared: _Prepared, keep_alive: float | None, *, chat: bool
    ) -> Response:
        """Empty prompt or messages: load the model (or, with keep_alive 0, unload it)."""
        reason = "load"
        if unloads_when_idle(keep_alive):
            await self.scheduler.unload(prepared.model.model_path)
            reason = "unload"
        else:
            async with self.scheduler.acquire(prepared.model.spec(), prepared.options, keep_alive):
                pass
        body: dict[str, Any] = {
            "model": model_name,
            "created_at": now_rfc3339(),
            "done": True,
            "done_reason": reason,
        }
        if chat:
            body["message"] = {"role": "assistant", "content": ""}
        else:
            body["response"] = ""
        return JSONResponse(body)


# ---- Ollama's chunk shapes ---------------------------------------------------------------


def _generate_shape(model_name: str) -> Shape:
    def chunk(parts: Parts, logprobs: list[TokenLogprob] | None) -> Chunk:
        out: Chunk = {
            "model": model_name,
            "created_at": now_rfc3339(),
            "response": parts.content,
            "done": False,
        }
        if parts.thinking:
            out["thinking"] = parts.thinking
        if logprobs:
            out["logprobs"] = logprobs
        return out

    def final(done: CompletionEvent, stats: Stats) -> Chunk:
        out: Chunk = {
            "model": model_name,
            "created_at": now_rfc3339(),
            "response": "",
            "done": True,
            "done_reason": done.get("done_reason", "stop"),
        }
        if "tokens" in done:
            out["context"] = done["tokens"]
        out.update(stats)
        return out

    return Shape(chunk, final)


def _chat_shape(model_name: str, shaper: OutputShaper) -> Shape:
    def chunk(parts: Parts, logprobs: list[TokenLogprob] | None) -> Chunk:
        message: dict[str, Any] = {"role": "assistant", "content": parts.content}
        if parts.thinking:
            message["thinking"] = parts.thinking
        if parts.calls:
            message["tool_calls"] = [
                _tool_call(call, shaper.calls - len(parts.calls) + i)
                for i, call in enumerate(parts.calls)
            ]
        out: Chunk = {
            "model": model_name,
            "created_at": now_rfc3339(),
            "message": message,
            "done": False,
        }
        if logprobs:
            out["logprobs"] = logprobs
        return out

    def final(done: CompletionEvent, stats: Stats) -> Chunk:
        out: Chunk = {
            "model": model_name,
            "created_at": now_rfc3339(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": done.get("done_reason", "stop"),
        }
        out.update(stats)
        return out

    return Shape(chunk, final)


def _tool_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "id": tool_call_id(),
        "function": {"index": index, "name": call["name"], "arguments": call["arguments"]},
    }


def merge_generate(events: list[Chunk]) -> Chunk:
    """A non-streamed generate answer: the chunks' text joined into the final event."""
    if not events:
        return {}
    final = dict(events[-1])
    final["response"] = "".join(e.get("response", "") for e in events)
    thinking = "".join(e.get("thinking", "") for e in events)
    if thinking:
        final["thinking"] = thinking
    _merge_logprobs(events, final)
    return final


def merge_chat(events: list[Chunk]) -> Chunk:
    """A non-streamed chat answer: one message (content, thinking, every tool call)."""
    if not events:
        return {}
    final = dict(events[-1])
    messages = [e.get("message", {}) for e in events]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(m.get("content", "") for m in messages),
    }
    thinking = "".join(m.get("thinking", "") for m in messages)
    if thinking:
        message["thinking"] = thinking
    calls = [call for m in messages for call in m.get("tool_calls", [])]
    if calls:
        message["tool_calls"] = calls
    final["message"] = message
    _merge_logprobs(events, final)
    return final


def _merge_logprobs(events: list[Chunk], final: Chunk) -> None:
    """A non-streamed answer carries the logprobs of every chunk, in order (Ollama)."""
    logprobs = [entry for event in events for entry in event.get("logprobs", ())]
    if logprobs:
        final["logprobs"] = logprobs


# ---- request checks and prompts ----------------------------------------------------------


def _check_context(context: list[int] | None) -> None:
    """Negative ids in a generate ``context`` are a 400 here; ids past the vocabulary are
    one from the runner, which knows its size (see ``_context_text``)."""
    for token in context or ():
        if token < 0:
            raise BadRequestError(f"invalid context: token id {token} is negative")


async def _context_text(runner: RunnerLike, context: list[int]) -> str:
    try:
        return await runner.detokenize(context)
    except BadRequestError as exc:
        raise BadRequestError(f"invalid context: {exc.message}") from exc


def _render_generate(
    template: PromptTemplate,
    messages: list[dict[str, Any]],
    prompt: str,
    system: str,
    suffix: str,
    think: bool | str | None = None,
) -> str:
    if suffix and template.go is not None:  # fill-in-the-middle templates read .Suffix
        data = {
            "System": system,
            "Prompt": prompt,
            "Suffix": suffix,
            "Response": "",
            "Messages": messages,
            **think_values(think),
        }
        return template.go.render(data)
    return template.render(messages, None, think)


def _think_choice(think: bool | str | None, requested: str, model: ResolvedModel) -> Think:
    """The request's ``think`` as the template sees it, and whether to parse thinking out
    of the answer; 400 where the model cannot think.

    A thinking model with ``think`` unset thinks (and its thinking is parsed out), as in
    newer Ollama; ``think: false`` asks the template to turn it off."""
    if isinstance(think, str) and think not in {"high", "medium", "low", "max"}:
        raise BadRequestError(
            f'invalid think value: "{think}" (must be "high", "medium", "low", "max", true,'
            " or false)"
        )
    supported = model.template.supports_thinking
    if think and not supported:
        raise BadRequestError(f'"{requested}" does not support thinking')
    if not supported:
        return Think(None, False)
    if think is None:
        return Think(None, True)
    return Think(think, bool(think))  # a level reaches the template as .ThinkLevel


def _check_format(fmt: str | dict[str, Any] | None) -> None:
    if fmt is None or fmt == "" or fmt == "json":
        return
    if isinstance(fmt, dict):
        return  # a JSON schema: the runner compiles it to a grammar (400 if it cannot)
    raise BadRequestError(f'invalid format: "{fmt}"; expected "json" or a valid JSON Schema')


def _format_kind(fmt: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    return fmt if fmt == "json" or isinstance(fmt, dict) else None


def _defer_format(
    payload: dict[str, Any], template: PromptTemplate, prompt: str, think: Think
) -> None:
    """A ``format`` with a model the prompt leaves thinking: it thinks unconstrained and
    the grammar applies after its thinking end marker (newest Ollama's behaviour); the
    runner starts the grammar there (``runner/grammar/deferred.py``)."""
    if payload.get("format") is None or not think.parse:
        return
    tags = think_tags(template)
    if prompt.rstrip().endswith(tags.open):
        payload["grammar_after"] = tags.close
