"""Ollama's API routes. Each handler: parse, resolve, schedule, stream.

Handlers never talk to llama.cpp; they build a prompt from the model's template, hold a
runner from the scheduler for exactly as long as the response streams, and translate the
runner's events into Ollama's chunk format. Errors are ``CorralError``s mapped to statuses
in ``app.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from corral import __version__
from corral.api.options import Options, validate_options
from corral.api.types import (
    ChatRequest,
    CopyRequest,
    DeleteRequest,
    GenerateRequest,
    Message,
    ShowRequest,
)
from corral.config import Settings
from corral.errors import (
    BadRequestError,
    CorralError,
    InvalidNameError,
    ModelNotFoundError,
    NotFoundError,
)
from corral.runner.client import RunnerClient
from corral.scheduler import LoadedModel, Scheduler
from corral.server.metrics import Metrics
from corral.server.models import ModelCatalog, ResolvedModel, parse_name
from corral.server.shaping import OutputShaper, Parts, ToolPlan, plan_tools, tool_call_id
from corral.server.streaming import now_rfc3339, parse_body, respond
from corral.store import ModelStore
from corral.templates.prompt import PromptTemplate, fit_chat_prompt

__all__ = ["Api", "merge_chat", "merge_generate"]

logger = logging.getLogger(__name__)

Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Think:
    template: bool | None  # .Think / .IsThinkSet for the template (None: not set)
    parse: bool  # split thinking out of the answer


@dataclass(slots=True)
class _Prepared:
    model: ResolvedModel
    options: Options
    started: float


class Api:
    """The Ollama API over one store and one scheduler."""

    def __init__(self, settings: Settings, store: ModelStore, scheduler: Scheduler) -> None:
        self.settings = settings
        self.store = store
        self.models = ModelCatalog(store)
        self.scheduler = scheduler
        self.metrics = Metrics(scheduler)

    # ---- simple routes ---------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": __version__})

    async def tags(self, request: Request) -> Response:
        entries = await asyncio.to_thread(self.store.list_models)
        models = []
        for entry in entries:
            try:
                resolved = await asyncio.to_thread(self.models.resolve, entry.name.display_long)
                details = resolved.details()
            except CorralError as exc:
                logger.warning("skipping %s in list: %s", entry.name.display_short, exc)
                continue
            models.append(
                {
                    "name": entry.name.display_short,
                    "model": entry.name.display_short,
                    "modified_at": entry.modified_at.isoformat(),
                    "size": entry.manifest.total_size,
                    "digest": entry.digest,
                    "details": details,
                }
            )
        return JSONResponse({"models": models})

    async def ps(self, request: Request) -> Response:
        loaded = await self.scheduler.loaded_models()
        models = []
        for entry in loaded:
            spec = entry.spec
            models.append(
                {
                    "name": spec.name,
                    "model": spec.name,
                    "size": entry.size_bytes or spec.size_bytes,
                    "digest": spec.digest,
                    "details": spec.details,
                    "expires_at": entry.expires_at_wall().isoformat(),
                    "size_vram": entry.size_vram,
                    "context_length": entry.config.num_ctx,
                }
            )
        return JSONResponse({"models": models})

    async def show(self, request: Request) -> Response:
        req = await parse_body(request, ShowRequest)
        if not req.target:
            raise BadRequestError("model is required")
        try:
            model = await asyncio.to_thread(self.models.resolve, req.target)
        except ModelNotFoundError:
            raise NotFoundError(f"model '{req.target}' not found") from None
        info = await asyncio.to_thread(model.model_info, verbose=req.verbose)
        system = req.system if req.system is not None else model.system
        params = dict(model.params)
        if req.options:
            params.update(validate_options(req.options))
        body: dict[str, Any] = {
            "license": "\n".join(model.license),
            "modelfile": model.modelfile(system, params),
            "parameters": _parameters_text(params),
            "template": model.template_source or (model.gguf.chat_template or ""),
            "details": model.details(),
            "model_info": info,
            "modified_at": model.modified_at.isoformat(),
            "capabilities": _capabilities(model),
        }
        if system:
            body["system"] = system
        if model.messages:
            body["messages"] = model.messages
        return JSONResponse(body)

    async def delete(self, request: Request) -> Response:
        req = await parse_body(request, DeleteRequest)
        try:
            name = parse_name(req.target)
        except InvalidNameError:
            raise BadRequestError(f'name "{req.target}" is invalid') from None
        found = await asyncio.to_thread(self.store.find, name)
        if found is None:
            raise NotFoundError(f"model '{req.target}' not found")
        await asyncio.to_thread(self.store.delete, found)
        return Response(status_code=200)

    async def copy(self, request: Request) -> Response:
        req = await parse_body(request, CopyRequest)
        try:
            source = parse_name(req.source)
        except InvalidNameError:
            raise BadRequestError(f'source "{req.source}" is invalid') from None
        try:
            destination = parse_name(req.destination)
        except InvalidNameError:
            raise BadRequestError(f'destination "{req.destination}" is invalid') from None
        found = await asyncio.to_thread(self.store.find, source)
        if found is None:
            raise NotFoundError(f'model "{req.source}" not found')
        await asyncio.to_thread(self.store.copy, found, destination)
        return Response(status_code=200)

    # ---- generation ------------------------------------------------------------------

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

    async def generate(self, request: Request) -> Response:
        req = await parse_body(request, GenerateRequest)
        opened = await self.open_generate(req)
        if isinstance(opened, Response):
            return opened
        return await respond(opened, stream=req.stream, merge=merge_generate, request=request)

    async def open_generate(self, req: GenerateRequest) -> AsyncGenerator[Event, None] | Response:
        """Validate a generate request and return its chunk stream (Ollama's shape), or the
        response of a load-only request (empty prompt)."""
        prepared = await self._prepare(req.model, req.options)
        model = prepared.model
        _check_format(req.format)
        if req.raw and (req.template or req.system or req.context):
            raise BadRequestError("raw mode does not support template, system, or context")
        if model.is_embedding:
            raise BadRequestError(f'"{req.model}" does not support generate')
        if req.images:
            raise BadRequestError(f"{model.name.display_long} does not support vision")
        if req.suffix and not model.template.uses("Suffix"):
            raise BadRequestError(f"{model.name.display_long} does not support insert")
        _check_context(req.context)
        think = _think_choice(req.think, req.model, model)
        if not req.prompt and not req.context:
            return await self._load_only(req.model, prepared, req.keep_alive, chat=False)
        template = PromptTemplate.from_sources(req.template) if req.template else model.template
        system = req.system if req.system is not None else model.system
        return self._generate_events(req, prepared, template, system, think)

    async def _generate_events(
        self,
        req: GenerateRequest,
        prepared: _Prepared,
        template: PromptTemplate,
        system: str,
        think: Think,
    ) -> AsyncGenerator[Event, None]:
        model = prepared.model
        route = "generate"
        async with self.scheduler.acquire(model.spec(), prepared.options, req.keep_alive) as ref:
            loaded_at = time.perf_counter()
            runner = _inference(ref)
            if req.raw:
                prompt = req.prompt
            else:
                messages = []
                if system:
                    messages.append(Message(role="system", content=system).to_template())
                messages.append(Message(role="user", content=req.prompt).to_template())
                prompt = _render_generate(
                    template, messages, req.prompt, system, req.suffix, think.template
                )
            if req.context:
                prompt = await _context_text(runner, req.context) + prompt
            payload: dict[str, Any] = {
                "prompt": prompt,
                "options": prepared.options.sampling(),
                "format": _format_kind(req.format),
                "return_tokens": not req.raw,
            }
            if req.logprobs_top is not None:
                payload["logprobs"] = req.logprobs_top
            shaper = OutputShaper(template, prompt=prompt, think=think.parse, plan=None)

            def chunk(parts: Parts, logprobs: list[Event] | None = None) -> Event:
                out: Event = {
                    "model": req.model,
                    "created_at": now_rfc3339(),
                    "response": parts.content,
                    "done": False,
                }
                if parts.thinking:
                    out["thinking"] = parts.thinking
                if logprobs:
                    out["logprobs"] = logprobs
                return out

            async for event in _stream_runner(ref, payload):
                if event.get("done"):
                    rest = shaper.finish()
                    if rest:
                        yield chunk(rest)
                    final = {
                        "model": req.model,
                        "created_at": now_rfc3339(),
                        "response": "",
                        "done": True,
                        "done_reason": event.get("done_reason", "stop"),
                    }
                    if "tokens" in event:
                        final["context"] = event["tokens"]
                    final.update(_stats(event, prepared.started, loaded_at))
                    self._observe(route, model, final)
                    yield final
                else:
                    text = event.get("content", "")
                    logprobs = event.get("logprobs")
                    if shaper.passthrough:
                        yield chunk(Parts(content=text), logprobs)
                        continue
                    parts = shaper.feed(text)
                    if parts or logprobs:  # logprobs go out even while a parser holds text
                        yield chunk(parts, logprobs)

    async def chat(self, request: Request) -> Response:
        req = await parse_body(request, ChatRequest)
        opened = await self.open_chat(req)
        if isinstance(opened, Response):
            return opened
        return await respond(opened, stream=req.stream, merge=merge_chat, request=request)

    async def open_chat(self, req: ChatRequest) -> AsyncGenerator[Event, None] | Response:
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
        plan = plan_tools(model.template, req.tools, req.tool_choice)
        think = _think_choice(req.think, req.model, model)
        for message in req.messages:
            if message.images:
                raise BadRequestError(f"{model.name.display_long} does not support vision")
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

    async def _chat_events(
        self,
        req: ChatRequest,
        prepared: _Prepared,
        messages: list[dict[str, Any]],
        plan: ToolPlan,
        think: Think,
    ) -> AsyncGenerator[Event, None]:
        model = prepared.model
        route = "chat"
        async with self.scheduler.acquire(model.spec(), prepared.options, req.keep_alive) as ref:
            loaded_at = time.perf_counter()
            runner = _inference(ref)
            num_ctx = ref.config.num_ctx

            async def count(text: str) -> int:
                return len(await runner.tokenize(text, add_special=True))

            prompt = await fit_chat_prompt(
                model.template, messages, plan.tools, num_ctx, count, think.template
            )
            payload: dict[str, Any] = {
                "prompt": prompt,
                "options": prepared.options.sampling(),
                "format": _format_kind(req.format),
            }
            if req.logprobs_top is not None:
                payload["logprobs"] = req.logprobs_top
            if plan.forced_schema is not None:
                payload["format"] = plan.forced_schema
                payload["wrap"] = list(plan.wrap)
            elif plan.opens_call(prompt):
                # The template itself opened a call: the grammar makes it a valid one.
                forced = plan_tools(model.template, plan.tools, "required")
                payload["format"] = forced.forced_schema
                payload["wrap"] = ["", forced.wrap[1]]
            shaper = OutputShaper(model.template, prompt=prompt, think=think.parse, plan=plan)

            def chunk(parts: Parts, logprobs: list[Event] | None = None) -> Event:
                message: dict[str, Any] = {"role": "assistant", "content": parts.content}
                if parts.thinking:
                    message["thinking"] = parts.thinking
                if parts.calls:
                    message["tool_calls"] = [
                        _tool_call(call, shaper.calls - len(parts.calls) + i)
                        for i, call in enumerate(parts.calls)
                    ]
                out: Event = {
                    "model": req.model,
                    "created_at": now_rfc3339(),
                    "message": message,
                    "done": False,
                }
                if logprobs:
                    out["logprobs"] = logprobs
                return out

            async for event in _stream_runner(ref, payload):
                if event.get("done"):
                    rest = shaper.finish()
                    if rest:
                        yield chunk(rest)
                    final = {
                        "model": req.model,
                        "created_at": now_rfc3339(),
                        "message": {"role": "assistant", "content": ""},
                        "done": True,
                        "done_reason": event.get("done_reason", "stop"),
                    }
                    final.update(_stats(event, prepared.started, loaded_at))
                    self._observe(route, model, final)
                    yield final
                else:
                    text = event.get("content", "")
                    logprobs = event.get("logprobs")
                    if shaper.passthrough:
                        yield chunk(Parts(content=text), logprobs)
                        continue
                    parts = shaper.feed(text)
                    if parts or logprobs:  # logprobs go out even while a parser holds text
                        yield chunk(parts, logprobs)

    def _observe(self, route: str, model: ResolvedModel, final: Event) -> None:
        self.metrics.request_seconds.labels(route).observe(final["total_duration"] / 1e9)
        self.metrics.observe_generation(
            model.name.display_short, final["prompt_eval_count"], final["eval_count"]
        )

    async def _load_only(
        self, model_name: str, prepared: _Prepared, keep_alive: float | None, *, chat: bool
    ) -> Response:
        """Empty prompt or messages: load the model (or, with keep_alive 0, unload it)."""
        reason = "load"
        if keep_alive is not None and keep_alive <= 0:
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


def _inference(ref: LoadedModel) -> RunnerClient:
    """The scheduler hands out runners by the narrow protocol it needs; the routes need the
    runner's inference calls, which every runner the server starts has."""
    return cast(RunnerClient, ref.runner)


async def _stream_runner(ref: LoadedModel, payload: dict[str, Any]) -> AsyncGenerator[Event, None]:
    stream = _inference(ref).completion(payload)
    try:
        async for event in stream:
            yield event
    finally:
        await stream.aclose()


def _check_context(context: list[int] | None) -> None:
    """Negative ids in a generate ``context`` are a 400 here; ids past the vocabulary are
    one from the runner, which knows its size (see ``_context_text``)."""
    for token in context or ():
        if token < 0:
            raise BadRequestError(f"invalid context: token id {token} is negative")


async def _context_text(runner: RunnerClient, context: list[int]) -> str:
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
    think: bool | None = None,
) -> str:
    if suffix and template.go is not None:  # fill-in-the-middle templates read .Suffix
        data = {
            "System": system,
            "Prompt": prompt,
            "Suffix": suffix,
            "Response": "",
            "Messages": messages,
            "Think": bool(think),
            "IsThinkSet": think is not None,
        }
        return template.go.render(data)
    return template.render(messages, None, think)


def _stats(event: Event, started: float, loaded_at: float) -> Event:
    now = time.perf_counter()
    stats = {
        "total_duration": int((now - started) * 1e9),
        "load_duration": int((loaded_at - started) * 1e9),
        "prompt_eval_count": int(event.get("prompt_eval_count", 0)),
        "prompt_eval_duration": int(event.get("prompt_eval_duration", 0)),
        "eval_count": int(event.get("eval_count", 0)),
        "eval_duration": int(event.get("eval_duration", 0)),
    }
    return stats


def merge_generate(events: list[Event]) -> Event:
    if not events:
        return {}
    final = dict(events[-1])
    final["response"] = "".join(e.get("response", "") for e in events)
    thinking = "".join(e.get("thinking", "") for e in events)
    if thinking:
        final["thinking"] = thinking
    _merge_logprobs(events, final)
    return final


def _merge_logprobs(events: list[Event], final: Event) -> None:
    """A non-streamed answer carries the logprobs of every chunk, in order (Ollama)."""
    logprobs = [entry for event in events for entry in event.get("logprobs", ())]
    if logprobs:
        final["logprobs"] = logprobs


def merge_chat(events: list[Event]) -> Event:
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


def _tool_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "id": tool_call_id(),
        "function": {"index": index, "name": call["name"], "arguments": call["arguments"]},
    }


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
    return Think(bool(think), bool(think))


def _check_format(fmt: str | dict[str, Any] | None) -> None:
    if fmt is None or fmt == "" or fmt == "json":
        return
    if isinstance(fmt, dict):
        return  # a JSON schema: the runner compiles it to a grammar (400 if it cannot)
    raise BadRequestError(f'invalid format: "{fmt}"; expected "json" or a valid JSON Schema')


def _format_kind(fmt: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    return fmt if fmt == "json" or isinstance(fmt, dict) else None


def _parameters_text(params: dict[str, Any]) -> str:
    lines = []
    for key in sorted(params):
        value = params[key]
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            lines.append(f"{key:<30} {_go_repr(item)}")
    return "\n".join(lines)


def _go_repr(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _capabilities(model: ResolvedModel) -> list[str]:
    if model.is_embedding:
        return ["embedding"]
    caps = ["completion"]
    if model.template.supports_tools:
        caps.append("tools")
    if model.template.supports_thinking:
        caps.append("thinking")
    if model.template.uses("Suffix"):
        caps.append("insert")
    return caps
