"""Ollama's API: the model routes, and the ``Api`` that every route module is wired from.

``Api`` holds the store, the model catalogue, the scheduler and the metrics. Its own routes
answer about models (``/``, ``/api/version``, ``/api/tags``, ``/api/ps``, ``/api/show``,
``/api/delete``, ``/api/copy``); generation (``/api/generate``, ``/api/chat`` and the
``open_*`` paths the OpenAI routes use) is ``generation.py``'s, reached through the thin
methods here. Errors are ``CorralError``s mapped to statuses in ``app.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from corral import __version__
from corral.api.options import validate_options
from corral.api.types import ChatRequest, CopyRequest, DeleteRequest, GenerateRequest, ShowRequest
from corral.config import Settings
from corral.errors import (
    BadRequestError,
    CorralError,
    InvalidNameError,
    ModelNotFoundError,
    NotFoundError,
)
from corral.scheduler import Scheduler, placement
from corral.server.generation import Generation
from corral.server.metrics import Metrics
from corral.server.models import ModelCatalog, ResolvedModel, parse_name
from corral.server.relay import Chunk
from corral.server.streaming import parse_body
from corral.store import ModelStore

__all__ = ["Api"]

logger = logging.getLogger(__name__)


class Api:
    """The Ollama API over one store and one scheduler."""

    def __init__(self, settings: Settings, store: ModelStore, scheduler: Scheduler) -> None:
        self.settings = settings
        self.store = store
        self.models = ModelCatalog(store)
        self.scheduler = scheduler
        self.metrics = Metrics(scheduler)
        self.generation = Generation(settings, self.models, scheduler, self.metrics)

    # ---- model routes ----------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": __version__})

    async def status(self, request: Request) -> Response:
        """``GET /api/status``: newest Ollama's shape; corral has no cloud, so it is off,
        by no setting (``source: none``)."""
        return JSONResponse({"cloud": {"disabled": True, "source": "none"}})

    async def tags(self, request: Request) -> Response:
        entries = await asyncio.to_thread(self.store.list_models)
        models = []
        for entry in entries:
            try:
                resolved = await asyncio.to_thread(self.models.resolve, entry.name.display_long)
                details = resolved.details()
                capabilities = _capabilities(resolved)
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
                    "capabilities": capabilities,
                }
            )
        return JSONResponse({"models": models})

    async def ps(self, request: Request) -> Response:
        """Loaded runners, one entry each (Ollama's fields), and beyond Ollama's:
        ``requests_running`` and ``requests_waiting`` (in the runner's queue, its slots
        busy, or for its load), and ``names``: every model name these weights answer to
        here, so an alias made by ``cp`` or ``create`` over the same weights shows as
        loaded (it shares the runner: a request for it loads nothing); ``replica``: the
        runner's index among its model's, where ``CORRAL_MAX_REPLICAS`` allows several."""
        loaded = await self.scheduler.loaded_models()
        aliases = await asyncio.to_thread(self._names_by_weights) if loaded else {}
        models = []
        replicated = self.settings.max_replicas > 1 or any(e.replica for e in loaded)
        for entry in loaded:
            spec = entry.spec
            names = [spec.name]
            key = (spec.model_path, spec.adapter_paths)
            names.extend(n for n in aliases.get(key, ()) if n not in names)
            running = min(entry.refcount, max(entry.config.num_parallel, 1))
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
                    "names": names,
                    "requests_running": running,
                    "requests_waiting": entry.refcount - running + entry.reserved,
                    # where the layers are, for a model spread over RPC workers
                    **placement.ps_fields(getattr(self.scheduler, "workers", None), entry.config),
                    # which runner of the model, where it may have several (CORRAL_MAX_REPLICAS)
                    **({"replica": entry.replica} if replicated else {}),
                }
            )
        return JSONResponse({"models": models})

    def _names_by_weights(self) -> dict[tuple[str, tuple[str, ...]], list[str]]:
        """Every model here by the runner that would serve it (weights and adapters);
        blocking (store reads, cached per manifest)."""
        names: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        for entry in self.store.list_models():
            try:
                model = self.models.resolve(entry.name.display_long)
            except CorralError:
                continue
            key = (model.model_path, model.adapter_paths)
            names.setdefault(key, []).append(entry.name.display_short)
        return names

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
        for key in ("renderer", "parser", "requires"):  # newest Ollama's config fields
            value = getattr(model.config, key)
            if value:
                body[key] = value
        if model.projector_path:
            body["projector_info"] = await asyncio.to_thread(
                model.projector_info, verbose=req.verbose
            )
        if req.verbose:  # every tensor's name, type and shape
            body["tensors"] = model.tensors()
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

    # ---- generation (generation.py) ---------------------------------------------------

    async def generate(self, request: Request) -> Response:
        return await self.generation.generate(request)

    async def chat(self, request: Request) -> Response:
        return await self.generation.chat(request)

    async def open_generate(self, req: GenerateRequest) -> AsyncGenerator[Chunk, None] | Response:
        return await self.generation.open_generate(req)

    async def open_chat(self, req: ChatRequest) -> AsyncGenerator[Chunk, None] | Response:
        return await self.generation.open_chat(req)


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
    """What the model can do, as newest Ollama names it (``show`` and each ``tags`` entry):
    from its weights and template, and any a create's ``info`` added."""
    if model.is_reranker:  # scores pairs on /api/rerank; /api/embed refuses it
        caps = ["rerank"]
    elif model.is_embedding:
        caps = ["embedding"]
    else:
        caps = ["completion"]
        if model.template.supports_tools:
            caps.append("tools")
        if model.template.supports_thinking:
            caps.append("thinking")
        if model.template.uses("Suffix"):
            caps.append("insert")
        if model.projector_path:
            caps.append("vision")
    caps.extend(c for c in model.config.capabilities if c not in caps)
    return caps
