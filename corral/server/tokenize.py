"""``POST /api/tokenize`` and ``POST /api/detokenize``: text and token ids with a model's own
vocabulary (what Ollama's users ask for in ollama/ollama#12031).

Both load the model through the scheduler like any request (``keep_alive`` honoured, the
runner shared with generation), and ask the runner, which tokenizes with llama.cpp: the
ids are exactly those a prompt becomes. Embedding models work too.

Field names: the text is ``content`` (llama-server's ``/tokenize``) or ``text`` (the
shape proposed for Ollama); both are accepted, and ``/api/detokenize`` answers with both.
``add_special`` (default false, as llama-server) adds the BOS/EOS the model's vocabulary
asks for; ``parse_special`` (default true) reads control tokens (``<|im_start|>``) written
in the text as the single tokens they are. Token ids outside the vocabulary are a 400 from
the runner, which knows its size; a negative or non-integer id is one here.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.api.options import Options, validate_options
from corral.api.types import DetokenizeRequest, TokenizeRequest
from corral.errors import BadRequestError
from corral.runner.client import RunnerClient
from corral.scheduler import RunnerLike
from corral.server.streaming import parse_body, unless_disconnected

if TYPE_CHECKING:
    from corral.server.models import ResolvedModel
    from corral.server.routes import Api

__all__ = ["detokenize", "tokenize"]

#: the most token ids one detokenize may carry (a bound on the runner's work and answer)
MAX_DETOKENIZE_TOKENS = 1_000_000


def _api(request: Request) -> Api:
    return cast("Api", request.app.state.api)


async def _resolve(api: Api, model_name: str) -> ResolvedModel:
    if not model_name:
        raise BadRequestError("model is required")
    return await asyncio.to_thread(api.models.resolve, model_name)


def _durations(started: float, loaded_at: float) -> dict[str, int]:
    now = time.perf_counter()
    return {
        "total_duration": int((now - started) * 1e9),
        "load_duration": int((loaded_at - started) * 1e9),
    }


async def _tokens_of(
    runner: RunnerLike, text: str, *, add_special: bool, parse_special: bool
) -> list[int]:
    if isinstance(runner, RunnerClient):
        return await runner.tokenize(text, add_special=add_special, parse_special=parse_special)
    return await runner.tokenize(text, add_special=add_special)


async def tokenize(request: Request) -> Response:
    """``{model, content|text, add_special?, parse_special?}`` → ``{model, tokens}``."""
    req = await parse_body(request, TokenizeRequest)
    started = time.perf_counter()
    api = _api(request)
    model = await _resolve(api, req.model)
    text = req.content if req.content is not None else (req.text or "")
    options = Options.merged(
        model.params, validate_options(req.options), num_ctx_default=api.settings.context_length
    )

    async def run() -> dict[str, object]:
        async with api.scheduler.acquire(model.spec(), options, req.keep_alive) as ref:
            loaded_at = time.perf_counter()
            tokens = await _tokens_of(
                ref.runner, text, add_special=req.add_special, parse_special=req.parse_special
            )
        return {"model": req.model, "tokens": tokens, **_durations(started, loaded_at)}

    return JSONResponse(await unless_disconnected(request, run()))


async def detokenize(request: Request) -> Response:
    """``{model, tokens}`` → ``{model, content, text}``; control tokens come back as text."""
    req = await parse_body(request, DetokenizeRequest)
    started = time.perf_counter()
    api = _api(request)
    model = await _resolve(api, req.model)
    tokens = _checked_ids(req.tokens)
    options = Options.merged(
        model.params, validate_options(req.options), num_ctx_default=api.settings.context_length
    )

    async def run() -> dict[str, object]:
        async with api.scheduler.acquire(model.spec(), options, req.keep_alive) as ref:
            loaded_at = time.perf_counter()
            text = await ref.runner.detokenize(tokens) if tokens else ""
        return {"model": req.model, "content": text, "text": text, **_durations(started, loaded_at)}

    return JSONResponse(await unless_disconnected(request, run()))


def _checked_ids(values: list[object]) -> list[int]:
    """Integer, non-negative ids (the runner checks the vocabulary's upper bound)."""
    if len(values) > MAX_DETOKENIZE_TOKENS:
        raise BadRequestError(f"too many tokens: at most {MAX_DETOKENIZE_TOKENS} per request")
    ids: list[int] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequestError(f"invalid token id {value!r}: token ids are integers")
        if value < 0:
            raise BadRequestError(f"invalid token id {value}: token ids are not negative")
        ids.append(value)
    return ids
