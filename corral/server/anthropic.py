"""Anthropic's Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

A request becomes the one internal ``ChatRequest`` (``chat_request``) and is opened with
``Api.open_chat``, exactly as ``/api/chat``; ``MessageEncoder`` turns the chat chunks into
Anthropic's message or its stream (see ``codec.py`` for the plumbing both share):

    message_start, then per content block (thinking, text, tool_use, in the order the
    model wrote them) content_block_start, content_block_delta (thinking_delta,
    text_delta, input_json_delta) ... content_block_stop, with one ping after the
    first block starts; then message_delta (stop_reason, stop_sequence, usage) and
    message_stop. An error after the first byte is an ``error`` event.

Choices an agent makes without asking the model (Claude Code always sends
``thinking: {type: "adaptive"}``): ``enabled`` or ``adaptive`` thinking is a wish the model
honours when its template can think, and is dropped (not a 400) when it cannot; Anthropic's
own tool types (``bash_20250124``, ``web_search_20250305``, ...) are dropped with a warning,
since nothing here runs them. ``stop_reason`` is ``end_turn``, ``max_tokens`` or
``tool_use``, or ``stop_sequence`` when one of the request's ``stop_sequences`` ended the
answer: the runner names the stop string that matched in its last event, and the relay's
``FinalChunk`` carries it here without it ever becoming a field of ``/api/chat``'s chunks.

Errors are Anthropic's ``{"type": "error", "error": {"type", "message"}}`` with the status
the same error has on ``/api/chat``. The ``x-api-key``, ``anthropic-version`` and
``anthropic-beta`` headers are accepted and not needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from corral.api.anthropic import CountTokensRequest, MessagesRequest, Tool
from corral.api.options import Options, validate_options
from corral.api.types import ChatRequest, Message
from corral.errors import BadRequestError, CorralError
from corral.server.codec import Event, all_chunks, first_chunk, parse_json, sse_response
from corral.server.context_fit import estimate_text
from corral.server.models import ResolvedModel
from corral.server.relay import Chunk, stop_sequence_of
from corral.server.routes import Api
from corral.server.shaping import plan_tools

__all__ = ["MessageEncoder", "Messages", "anthropic_routes", "chat_request", "error_body"]

logger = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def anthropic_errors(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except CorralError as exc:
            if exc.status >= 500:
                logger.warning("%s failed: %s", request.url.path, exc.message)
            return JSONResponse(error_body(exc.status, exc.message), status_code=exc.status)

    return wrapped


def message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def tool_use_id() -> str:
    return "toolu_" + secrets.token_hex(12)


# ---- request → ChatRequest ---------------------------------------------------------------


def chat_request(body: MessagesRequest | CountTokensRequest, *, thinks: bool) -> ChatRequest:
    """The internal chat request for ``body``; ``thinks``: the model's template can think."""
    if not body.model:
        raise BadRequestError("model: Field required")
    if body.messages is None:
        raise BadRequestError("messages: Field required")
    if not body.messages:
        raise BadRequestError("messages: at least one message is required")
    fields: dict[str, Any] = {
        "model": body.model,
        "messages": _messages(body),
        "tools": _tools(body.tools),
        "tool_choice": _tool_choice(body),
        "think": _think(body, thinks),
    }
    if isinstance(body, MessagesRequest):
        if body.max_tokens is None:
            raise BadRequestError("max_tokens: Field required")
        if body.max_tokens < 1:
            raise BadRequestError("max_tokens: Input should be greater than or equal to 1")
        fields["options"] = _options(body)
        fields["format"] = _format(body)
        fields["keep_alive"] = body.keep_alive
    return ChatRequest.model_validate(fields)


def _options(body: MessagesRequest) -> dict[str, Any]:
    options: dict[str, Any] = dict(body.options or {})
    options["num_predict"] = body.max_tokens
    for name, value in (
        ("temperature", body.temperature),
        ("top_p", body.top_p),
        ("top_k", body.top_k),
    ):
        if value is not None:
            options[name] = value
    if body.stop_sequences:
        options["stop"] = list(body.stop_sequences)
    return options


def _format(body: MessagesRequest) -> dict[str, Any] | None:
    config = body.output_config or {}
    fmt = config.get("format") if isinstance(config, dict) else None
    fmt = fmt if fmt is not None else body.output_format
    if fmt is None:
        return None
    schema = fmt.get("schema") if isinstance(fmt, dict) else None
    if (
        not isinstance(fmt, dict)
        or fmt.get("type") != "json_schema"
        or not isinstance(schema, dict)
    ):
        raise BadRequestError(
            'output_config.format: expected {"type": "json_schema", "schema": {...}}'
        )
    return schema


def _think(body: MessagesRequest | CountTokensRequest, thinks: bool) -> bool | None:
    config = body.thinking
    if config is None:
        return None
    if config.type == "disabled":
        return False
    if config.type in ("enabled", "adaptive"):
        return True if thinks else None
    raise BadRequestError(
        f"thinking.type: Input should be 'enabled', 'adaptive' or 'disabled', not {config.type!r}"
    )


def _tools(tools: list[Tool] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    out = []
    dropped = []
    for tool in tools:
        if tool.type not in (None, "custom"):
            dropped.append(f"{tool.name} ({tool.type})")
            continue
        schema = tool.input_schema if tool.input_schema is not None else {"type": "object"}
        function = {"name": tool.name, "description": tool.description or "", "parameters": schema}
        out.append({"type": "function", "function": function})
    if dropped:
        logger.warning("ignoring server tools no model here can run: %s", ", ".join(dropped))
    return out or None


def _tool_choice(body: MessagesRequest | CountTokensRequest) -> str | dict[str, Any] | None:
    choice = body.tool_choice
    if choice is None:
        return None
    if choice.type in ("auto", "none"):
        return choice.type
    if choice.type == "any":
        return "required"
    if choice.type == "tool":
        if not choice.name:
            raise BadRequestError("tool_choice.name: Field required")
        return {"name": choice.name}
    raise BadRequestError(
        f"tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none', not {choice.type!r}"
    )


def _system_text(system: str | list[dict[str, Any]] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    texts = []
    for i, block in enumerate(system):
        if block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise BadRequestError(f"system.{i}: expected a text block")
        texts.append(block["text"])
    return "\n".join(texts)


def _messages(body: MessagesRequest | CountTokensRequest) -> list[Message]:
    """The conversation as chat messages. A ``system`` message inside ``messages`` (Claude
    Code sends them, under a beta) joins the system prompt: many chat templates refuse a
    system message after the first turn, and the rest read the system prompt alone."""
    out: list[Message] = []
    systems = [_system_text(body.system)]
    names: dict[str, str] = {}  # tool_use id → tool name, for the tool results
    for i, message in enumerate(body.messages or ()):
        if message.role not in ("user", "assistant", "system"):
            raise BadRequestError(
                f"messages.{i}.role: Input should be 'user' or 'assistant', not {message.role!r}"
            )
        if message.role == "system":
            systems.append(_system_text(message.content))
        elif isinstance(message.content, str):
            out.append(Message(role=message.role, content=message.content))
        else:
            out.extend(_block_messages(message.role, message.content, f"messages.{i}", names))
    system = "\n\n".join(text for text in systems if text)
    if system:
        out.insert(0, Message(role="system", content=system))
    return out


def _block_messages(
    role: str, blocks: list[dict[str, Any]], where: str, names: dict[str, str]
) -> list[Message]:
    """One message's content blocks as messages: its tool results (each a ``tool`` message,
    before the rest, as they answer the calls before them), then the message itself."""
    texts: list[str] = []
    images: list[str] = []
    calls: list[dict[str, Any]] = []
    thinking = ""
    results: list[Message] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        kind = block.get("type")
        if kind == "text":
            texts.append(_string(block, "text", at))
        elif kind == "image":
            images.append(_image(block, at))
        elif kind == "tool_use":
            ident = _string(block, "id", at)
            name = _string(block, "name", at)
            arguments = block.get("input", {})
            if not isinstance(arguments, dict):
                raise BadRequestError(f"{at}.input: Input should be an object")
            names[ident] = name
            calls.append({"id": ident, "function": {"name": name, "arguments": arguments}})
        elif kind == "tool_result":
            results.append(_tool_result(block, at, names))
        elif kind == "thinking":
            thinking += _string(block, "thinking", at)
        elif kind == "redacted_thinking":
            continue  # encrypted by Anthropic: nothing a local model can read
        else:
            raise BadRequestError(f"{at}.type: unsupported content block type {kind!r}")
    out = results
    if texts or images or calls or thinking or not results:
        fields: dict[str, Any] = {"role": role, "content": "\n".join(texts)}
        if images:
            fields["images"] = images
        if calls:
            fields["tool_calls"] = calls
        if thinking:
            fields["thinking"] = thinking
        out.append(Message.model_validate(fields))
    return out


def _string(block: dict[str, Any], field: str, at: str) -> str:
    value = block.get(field)
    if not isinstance(value, str):
        raise BadRequestError(f"{at}.{field}: Field required (a string)")
    return value


def _image(block: dict[str, Any], at: str) -> str:
    source = block.get("source")
    if not isinstance(source, dict):
        raise BadRequestError(f"{at}.source: Field required")
    if source.get("type") != "base64":
        raise BadRequestError(
            f"{at}.source.type: only base64 images are supported, not {source.get('type')!r}"
        )
    return _string(source, "data", f"{at}.source")


def _tool_result(block: dict[str, Any], at: str, names: dict[str, str]) -> Message:
    ident = _string(block, "tool_use_id", at)
    content = block.get("content")
    images: list[str] = []
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            where = f"{at}.content.{k}"
            if not isinstance(part, dict):
                raise BadRequestError(f"{where}: expected a content block")
            if part.get("type") == "text":
                texts.append(_string(part, "text", where))
            elif part.get("type") == "image":
                images.append(_image(part, where))
            else:
                raise BadRequestError(f"{where}.type: unsupported in a tool result")
        text = "\n".join(texts)
    else:
        raise BadRequestError(f"{at}.content: expected a string or content blocks")
    if block.get("is_error"):
        text = f"Error: {text}"
    fields: dict[str, Any] = {"role": "tool", "content": text, "tool_call_id": ident}
    if ident in names:
        fields["tool_name"] = names[ident]
    if images:
        fields["images"] = images
    return Message.model_validate(fields)


# ---- chat chunks → Anthropic's message and events ------------------------------------------


class MessageEncoder:
    """One answer as Anthropic's stream events, and as its final message object."""

    def __init__(self, ident: str, model: str, stop_sequences: Sequence[str] = ()) -> None:
        self.ident = ident
        self.model = model
        self.stop_sequences = tuple(stop_sequences)
        self.content: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self._started = False
        self._pinged = False
        self._open: str | None = None  # the type of the text or thinking block being written

    def message(self) -> dict[str, Any]:
        return {
            "id": self.ident,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [dict(block) for block in self.content],
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": dict(self.usage),
        }

    def feed(self, chunk: Chunk) -> list[Event]:
        events: list[Event] = []
        if not self._started:
            self._started = True
            start = self.message()
            events.append(("message_start", {"type": "message_start", "message": start}))
        message = chunk.get("message") or {}
        if message.get("thinking"):
            events += self._write("thinking", message["thinking"])
        if message.get("content"):
            events += self._write("text", message["content"])
        for call in message.get("tool_calls") or ():
            events += self._tool_use(call)
        if chunk.get("done"):
            events += self._finish(chunk)
        return events

    def fail(self, status: int, message: str) -> list[Event]:
        return [("error", error_body(status, message))]

    def _start(self, block: dict[str, Any]) -> list[Event]:
        self.content.append(block)
        index = len(self.content) - 1
        start = {"type": "content_block_start", "index": index, "content_block": dict(block)}
        events: list[Event] = [("content_block_start", start)]
        if not self._pinged:
            self._pinged = True
            events.append(("ping", {"type": "ping"}))
        return events

    def _stop(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        index = len(self.content) - 1
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _write(self, kind: str, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open != kind:
            events += self._stop()
            block = {"type": kind, kind: ""}
            if kind == "thinking":
                block["signature"] = ""
            events += self._start(block)
            self._open = kind
        self.content[-1][kind] += text
        delta = {"type": f"{kind}_delta", kind: text}
        index = len(self.content) - 1
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        )
        return events

    def _tool_use(self, call: dict[str, Any]) -> list[Event]:
        events = self._stop()
        function = call.get("function") or {}
        arguments = function.get("arguments") or {}
        block = {"type": "tool_use", "id": tool_use_id(), "name": function.get("name", "")}
        events += self._start({**block, "input": {}})
        self.content[-1]["input"] = arguments
        index = len(self.content) - 1
        delta = {"type": "input_json_delta", "partial_json": json.dumps(arguments)}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        return events

    def _finish(self, done: Chunk) -> list[Event]:
        events = self._stop()
        if not self._pinged:
            self._pinged = True
            events.append(("ping", {"type": "ping"}))
        self.usage = {
            "input_tokens": int(done.get("prompt_eval_count", 0)),
            "output_tokens": int(done.get("eval_count", 0)),
        }
        self.stop_reason, self.stop_sequence = stop_reason(done, self.content, self.stop_sequences)
        delta = {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence}
        events.append(
            ("message_delta", {"type": "message_delta", "delta": delta, "usage": dict(self.usage)})
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events


def stop_reason(
    done: Chunk, content: list[dict[str, Any]], stop_sequences: Sequence[str] = ()
) -> tuple[str, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for a final chat chunk: a stop
    string counts only when it is one of the request's ``stop_sequences`` (a model's own
    stop strings, such as a template's end-of-turn text, end the turn)."""
    if any(block["type"] == "tool_use" for block in content):
        return "tool_use", None
    if done.get("done_reason") == "length":
        return "max_tokens", None
    sequence = stop_sequence_of(done)
    if sequence and sequence in stop_sequences:
        return "stop_sequence", sequence
    return "end_turn", None


# ---- routes ------------------------------------------------------------------------------


class Messages:
    """``/v1/messages`` over an ``Api``."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def _model(self, name: str | None) -> ResolvedModel:
        if not name:
            raise BadRequestError("model: Field required")
        return await asyncio.to_thread(self.api.models.resolve, name)

    async def create(self, request: Request) -> Response:
        body = await parse_json(request, MessagesRequest)
        model = await self._model(body.model)
        req = chat_request(body, thinks=model.template.supports_thinking)
        opened = await self.api.open_chat(req)
        if isinstance(opened, Response):  # cannot happen: messages are required
            raise BadRequestError("messages: at least one message is required")
        encoder = MessageEncoder(message_id(), req.model, body.stop_sequences or ())
        if not body.stream:
            for chunk in await all_chunks(request, opened):
                encoder.feed(chunk)
            return JSONResponse(encoder.message())
        first = await first_chunk(request, opened)
        return sse_response(request, opened, first, encoder)

    async def count_tokens(self, request: Request) -> Response:
        """The prompt's tokens as the model would see it: the model's template renders the
        conversation and tools, and its runner (loaded if it is not) tokenizes it."""
        body = await parse_json(request, CountTokensRequest)
        model = await self._model(body.model)
        if model.is_embedding:
            raise BadRequestError(f'"{body.model}" does not support chat')
        req = chat_request(body, thinks=model.template.supports_thinking)
        if req.tools and not model.template.supports_tools:
            raise BadRequestError(f"{model.name.display_long} does not support tools")
        planned = await asyncio.to_thread(plan_tools, model.template, req.tools, req.tool_choice)
        tools = planned.tools
        messages = [m.to_template() for m in req.messages]
        if model.messages:
            history = [Message.model_validate(m) for m in model.messages if "role" in m]
            messages = [m.to_template() for m in history] + messages
        if model.system and messages[0]["Role"] != "system":
            messages.insert(0, Message(role="system", content=model.system).to_template())
        think = req.think if model.template.supports_thinking else None
        prompt = await asyncio.to_thread(
            model.template.render, messages, tools, bool(think) if think is not None else None
        )
        options = Options.merged(
            model.params,
            validate_options(req.options),
            num_ctx_default=self.api.settings.context_length,
        )
        # sized for the prompt, as the request that follows will want it (one load, not two)
        need = estimate_text(prompt, options)
        async with self.api.scheduler.acquire(
            model.spec(), options, req.keep_alive, need=need
        ) as ref:
            tokens = await ref.runner.tokenize(prompt, add_special=True)
        return JSONResponse({"input_tokens": len(tokens)})


def anthropic_routes(api: Api) -> list[Route]:
    messages = Messages(api)
    return [
        Route("/v1/messages", anthropic_errors(messages.create), methods=["POST"]),
        Route(
            "/v1/messages/count_tokens",
            anthropic_errors(messages.count_tokens),
            methods=["POST"],
        ),
    ]
