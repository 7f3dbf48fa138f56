"""Ollama's API routes. Each handler: parse, resolve, schedule, stream.

Handlers never talk to llama.cpp; they build a prompt from the model's template, hold a
runner from the scheduler for exactly as long as the response streams, and translate the
runner's events into Ollama's chunk format. Errors are ``CorralError``s mapped to statuses
in ``app.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    PullRequest,
    ShowRequest,
)
from corral.catalog import find_bundled, pull_bundled
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
from corral.server.streaming import now_rfc3339, parse_body, respond
from corral.store import ModelStore
from corral.templates.prompt import PromptTemplate, fit_chat_prompt

__all__ = ["Api"]

logger = logging.getLogger(__name__)

Event = dict[str, Any]


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
                    "size_vram": 0,
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
            "modelfile": _modelfile(model, system, params),
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

    # ---- pull (the bundled catalogue; registries come with model management) -----------

    async def pull(self, request: Request) -> Response:
        req = await parse_body(request, PullRequest)
        name = parse_name(req.target)
        bundled = find_bundled(name)
        if bundled is None:
            raise NotFoundError(
                f"pull model manifest: file does not exist ('{req.target}' is not a bundled"
                " model and no registry is reachable)"
            )
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()

        def report(event: Event) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        async def run() -> None:
            try:
                # A client that goes away does not stop the import: it is local and short,
                # and the next pull finds the blob in place.
                await asyncio.to_thread(pull_bundled, self.store, name, bundled, report)
            except BaseException as exc:
                events.put_nowait(exc)
                raise
            finally:
                events.put_nowait(None)

        task = asyncio.create_task(run())

        async def stream() -> AsyncGenerator[Event, None]:
            last_status = None
            try:
                while True:
                    item = await events.get()
                    if item is None:
                        return
                    if isinstance(item, CorralError):
                        raise item
                    if isinstance(item, BaseException):
                        raise BadRequestError(str(item))
                    # Coalesce byte progress: at most one event per status per 1% change.
                    if item.get("status") == last_status and "completed" in item:
                        total = item.get("total") or 1
                        if item["completed"] < total and not _percent_step(item):
                            continue
                    last_status = item.get("status")
                    yield item
            finally:
                with contextlib.suppress(BaseException):
                    await task

        return await respond(stream(), stream=req.stream, merge=lambda items: items[-1])

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
        prepared = await self._prepare(req.model, req.options)
        model = prepared.model
        _check_format(req.format)
        if req.raw and (req.template or req.system or req.context):
            raise BadRequestError("raw mode does not support template, system, or context")
        if model.is_embedding:
            raise BadRequestError(f'"{req.model}" does not support generate')
        if req.images:
            raise BadRequestError(f'"{req.model}" does not support images (no vision projector)')
        if req.suffix and not model.template.uses("Suffix"):
            raise BadRequestError(f"{model.name.display_long} does not support insert")
        _check_think(req.think, req.model, model)
        if not req.prompt and not req.context:
            return await self._load_only(req.model, prepared, req.keep_alive, chat=False)
        template = PromptTemplate.from_sources(req.template) if req.template else model.template
        system = req.system if req.system is not None else model.system
        events = self._generate_events(req, prepared, template, system)
        return await respond(events, stream=req.stream, merge=_merge_generate)

    async def _generate_events(
        self, req: GenerateRequest, prepared: _Prepared, template: PromptTemplate, system: str
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
                prompt = _render_generate(template, messages, req.prompt, system, req.suffix)
            if req.context:
                prompt = await runner.detokenize(req.context) + prompt
            payload = {
                "prompt": prompt,
                "options": prepared.options.sampling(),
                "format": _format_kind(req.format),
                "return_tokens": not req.raw,
            }
            async for event in _stream_runner(ref, payload):
                if event.get("done"):
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
                    yield {
                        "model": req.model,
                        "created_at": now_rfc3339(),
                        "response": event.get("content", ""),
                        "done": False,
                    }

    async def chat(self, request: Request) -> Response:
        req = await parse_body(request, ChatRequest)
        prepared = await self._prepare(req.model, req.options)
        model = prepared.model
        _check_format(req.format)
        if model.is_embedding:
            raise BadRequestError(f'"{req.model}" does not support chat')
        if req.tools and not model.template.uses("Tools"):
            raise BadRequestError(f"{model.name.display_long} does not support tools")
        _check_think(req.think, req.model, model)
        for message in req.messages:
            if message.images:
                raise BadRequestError(
                    f'"{req.model}" does not support images (no vision projector)'
                )
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
        events = self._chat_events(req, prepared, messages)
        return await respond(events, stream=req.stream, merge=_merge_chat)

    async def _chat_events(
        self, req: ChatRequest, prepared: _Prepared, messages: list[dict[str, Any]]
    ) -> AsyncGenerator[Event, None]:
        model = prepared.model
        route = "chat"
        async with self.scheduler.acquire(model.spec(), prepared.options, req.keep_alive) as ref:
            loaded_at = time.perf_counter()
            runner = _inference(ref)
            num_ctx = ref.config.num_ctx

            async def count(text: str) -> int:
                return len(await runner.tokenize(text, add_special=True))

            prompt = await fit_chat_prompt(model.template, messages, req.tools, num_ctx, count)
            payload = {
                "prompt": prompt,
                "options": prepared.options.sampling(),
                "format": _format_kind(req.format),
            }
            async for event in _stream_runner(ref, payload):
                if event.get("done"):
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
                    yield {
                        "model": req.model,
                        "created_at": now_rfc3339(),
                        "message": {"role": "assistant", "content": event.get("content", "")},
                        "done": False,
                    }

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


def _render_generate(
    template: PromptTemplate,
    messages: list[dict[str, Any]],
    prompt: str,
    system: str,
    suffix: str,
) -> str:
    if suffix and template.go is not None:  # fill-in-the-middle templates read .Suffix
        data = {
            "System": system,
            "Prompt": prompt,
            "Suffix": suffix,
            "Response": "",
            "Messages": messages,
        }
        return template.go.render(data)
    return template.render(messages)


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


def _merge_generate(events: list[Event]) -> Event:
    if not events:
        return {}
    final = dict(events[-1])
    final["response"] = "".join(e.get("response", "") for e in events)
    return final


def _merge_chat(events: list[Event]) -> Event:
    if not events:
        return {}
    final = dict(events[-1])
    content = "".join(e.get("message", {}).get("content", "") for e in events)
    final["message"] = {"role": "assistant", "content": content}
    return final


def _check_think(think: bool | str | None, requested: str, model: ResolvedModel) -> None:
    if isinstance(think, str) and think not in {"high", "medium", "low", "max"}:
        raise BadRequestError(
            f'invalid think value: "{think}" (must be "high", "medium", "low", "max", true,'
            " or false)"
        )
    if think and not model.template.uses("Think"):
        raise BadRequestError(f'"{requested}" does not support thinking')


def _check_format(fmt: str | dict[str, Any] | None) -> None:
    if fmt is None or fmt == "" or fmt == "json":
        return
    if isinstance(fmt, dict):
        return  # a JSON schema: the runner compiles it to a grammar (400 if it cannot)
    raise BadRequestError(f'invalid format: "{fmt}"; expected "json" or a valid JSON Schema')


def _format_kind(fmt: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    return fmt if fmt == "json" or isinstance(fmt, dict) else None


def _percent_step(item: Event) -> bool:
    total = item.get("total") or 1
    return int(item.get("completed", 0) * 100 / total) % 5 == 0


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


def _modelfile(model: ResolvedModel, system: str, params: dict[str, Any]) -> str:
    lines = [
        '# Modelfile generated by "corral show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {model.name.display_short}",
        "",
        f"FROM {model.model_path}",
    ]
    template = model.template_source
    if template:
        lines.append(f'TEMPLATE """{template}"""')
    if system:
        lines.append(f'SYSTEM """{system}"""')
    for key in sorted(params):
        value = params[key]
        for item in value if isinstance(value, list | tuple) else [value]:
            lines.append(f"PARAMETER {key} {_go_repr(item)}")
    for text in model.license:
        lines.append(f'LICENSE """{text}"""')
    for message in model.messages:
        lines.append(f"MESSAGE {message.get('role', '')} {message.get('content', '')}")
    return "\n".join(lines) + "\n"


def _capabilities(model: ResolvedModel) -> list[str]:
    if model.is_embedding:
        return ["embedding"]
    caps = ["completion"]
    if model.template.uses("Tools"):
        caps.append("tools")
    if model.template.uses("Suffix"):
        caps.append("insert")
    return caps
