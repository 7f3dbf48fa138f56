"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``.

A request's input items (after those of its ``previous_response_id``) become the one
internal ``ChatRequest`` (``translate``), opened with ``Api.open_chat`` as ``/api/chat`` is;
``ResponseEncoder`` turns the chat chunks into the response object or its stream (see
``codec.py``), every event numbered by ``sequence_number``:

    response.created, response.in_progress; per output item, in the order the model
    wrote them: response.output_item.added, then for reasoning
    response.reasoning_summary_part.added, response.reasoning_summary_text.delta ...
    .done, response.reasoning_summary_part.done; for a message
    response.content_part.added, response.output_text.delta ... .done,
    response.content_part.done; for a function call
    response.function_call_arguments.delta, .done; then response.output_item.done;
    last response.completed (response.incomplete when max_output_tokens cut it,
    response.failed when it broke after the first byte).

Tools: ``function`` tools; ``custom`` (freeform) tools as a function of one string,
``input``, answered as ``custom_tool_call`` items; ``namespace`` groups (Codex sends its
sub-agent tools so) flattened to ``namespace.name`` and split again in the answer. The
hosted ``web_search``, which Codex sends in every request, is dropped (nothing here searches
the web); any other hosted tool type is a 400 naming it.

``store`` (default true) keeps the response and its conversation in a bounded in-memory
``ResponseStore``, the oldest forgotten first, so ``previous_response_id`` can continue it
(``instructions`` are not carried over, as OpenAI's are not). A server restart forgets them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from corral.api.jsonbody import load_json
from corral.api.responses import ResponsesRequest
from corral.api.types import ChatRequest, think_from_effort
from corral.errors import BadRequestError, NotFoundError
from corral.server.codec import Event, all_chunks, first_chunk, parse_json, sse_response
from corral.server.openai import openai_errors
from corral.server.relay import Chunk
from corral.server.routes import Api

__all__ = [
    "ResponseEncoder",
    "ResponseStore",
    "Responses",
    "StoredResponse",
    "Translated",
    "responses_routes",
    "translate",
]

#: hosted tools an agent sends that cannot run here: dropped, not refused
_DROPPED_TOOLS = ("web_search", "web_search_preview")


def _ident(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# ---- request → ChatRequest ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Translated:
    request: ChatRequest
    items: list[dict[str, Any]]  # the conversation's items, previous response's included
    custom: frozenset[str]  # names of custom tools: their calls are custom_tool_call items
    namespaces: frozenset[str]


def translate(
    body: ResponsesRequest, *, thinks: bool, previous: list[dict[str, Any]] | None = None
) -> Translated:
    """The internal chat request for ``body`` after the items of ``previous``; ``thinks``:
    the model's template can think."""
    if not body.model:
        raise BadRequestError("model: Field required")
    if body.background:
        raise BadRequestError("background: background responses are not supported")
    if body.conversation is not None:
        raise BadRequestError("conversation: not supported; continue with previous_response_id")
    if isinstance(body.input, str):
        new: list[dict[str, Any]] = [{"type": "message", "role": "user", "content": body.input}]
    else:
        new = list(body.input or [])
    if not new and not previous:
        raise BadRequestError("input: Field required")
    items = list(previous or []) + new
    messages: list[dict[str, Any]] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    messages += _messages(items, first=len(items) - len(new))
    tools, custom, namespaces = _tools(body.tools)
    options: dict[str, Any] = dict(body.options or {})
    for name, value in (
        ("num_predict", body.max_output_tokens),
        ("temperature", body.temperature),
        ("top_p", body.top_p),
    ):
        if value is not None:
            options[name] = value
    request = ChatRequest.model_validate(
        {
            "model": body.model,
            "messages": messages,
            "tools": tools,
            "tool_choice": _tool_choice(body.tool_choice),
            "format": _format(body),
            "think": _think(body, thinks),
            "options": options,
            "keep_alive": body.keep_alive,
        }
    )
    return Translated(request, items, custom, namespaces)


def _think(body: ResponsesRequest, thinks: bool) -> bool | str | None:
    effort = body.reasoning.effort if body.reasoning is not None else None
    if effort is None:
        return None
    try:
        think = think_from_effort(effort)
    except BadRequestError as exc:
        raise BadRequestError(f"reasoning.effort: {exc.message}") from None
    if think is False:
        return False
    return think if thinks else None  # agents ask every model: only a thinking one thinks


def _format(body: ResponsesRequest) -> str | dict[str, Any] | None:
    fmt = body.text.format if body.text is not None else None
    if not fmt or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return "json"
    if fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise BadRequestError("text.format.schema: Field required for json_schema")
        return schema
    raise BadRequestError(f"text.format.type: unsupported format {fmt.get('type')!r}")


def _tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if choice is None or isinstance(choice, str):
        return choice
    kind = choice.get("type")
    if kind in ("function", "custom"):
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequestError("tool_choice.name: Field required")
        namespace = choice.get("namespace")
        return {"name": f"{namespace}.{name}" if namespace else name}
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        return mode if isinstance(mode, str) else "auto"
    raise BadRequestError(f"tool_choice: hosted tool {kind!r} is not supported")


def _function(spec: dict[str, Any], where: str, name: str | None = None) -> dict[str, Any]:
    own = spec.get("name")
    if not isinstance(own, str) or not own:
        raise BadRequestError(f"{where}.name: Field required")
    parameters = spec.get("parameters")
    if not isinstance(parameters, dict):
        parameters = {"type": "object", "properties": {}}
    function = {
        "name": name or own,
        "description": spec.get("description") or "",
        "parameters": parameters,
    }
    return {"type": "function", "function": function}


def _tools(
    tools: list[dict[str, Any]] | None,
) -> tuple[list[dict[str, Any]] | None, frozenset[str], frozenset[str]]:
    out: list[dict[str, Any]] = []
    custom: set[str] = set()
    namespaces: set[str] = set()
    for i, tool in enumerate(tools or ()):
        where = f"tools[{i}]"
        kind = tool.get("type")
        if kind == "function":
            out.append(_function(tool, where))
        elif kind == "custom":
            function = _function(tool, where)
            function["function"]["parameters"] = {
                "type": "object",
                "properties": {"input": {"type": "string"}},
                "required": ["input"],
            }
            custom.add(function["function"]["name"])
            out.append(function)
        elif kind == "namespace":
            namespace = tool.get("name")
            if not isinstance(namespace, str) or not namespace:
                raise BadRequestError(f"{where}.name: Field required")
            namespaces.add(namespace)
            for j, inner in enumerate(tool.get("tools") or ()):
                inner_where = f"{where}.tools[{j}]"
                if not isinstance(inner, dict) or inner.get("type", "function") != "function":
                    raise BadRequestError(
                        f"{inner_where}: only function tools can be in a namespace"
                    )
                out.append(_function(inner, inner_where, f"{namespace}.{inner.get('name')}"))
        elif isinstance(kind, str) and kind.startswith(_DROPPED_TOOLS):
            continue
        else:
            raise BadRequestError(
                f"{where}.type: the hosted tool {kind!r} is not supported (function, custom and"
                " namespace tools are; web_search is ignored)"
            )
    return out or None, frozenset(custom), frozenset(namespaces)


def _messages(items: list[dict[str, Any]], *, first: int) -> list[dict[str, Any]]:
    """Input items as chat messages; ``first``: the index of the request's own first item
    (those before it came from ``previous_response_id``), for the errors' ``input[i]``."""
    messages: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # call_id → tool name, for the outputs
    thinking = ""  # a reasoning item's text, for the assistant turn that follows it
    for i, item in enumerate(items):
        where = f"input[{i - first}]"
        if not isinstance(item, dict):
            raise BadRequestError(f"{where}: expected an object")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            message = _message(item, where)
            if thinking and message["role"] == "assistant":
                message["thinking"], thinking = thinking, ""
            elif thinking:  # a turn that was all thinking: it stays a turn
                messages.append({"role": "assistant", "content": "", "thinking": thinking})
                thinking = ""
            messages.append(message)
        elif kind in ("function_call", "custom_tool_call"):
            call = _call(item, where, kind)
            names[call["id"]] = call["function"]["name"]
            last = messages[-1] if messages else None
            if last is None or last["role"] != "assistant":
                last = {"role": "assistant", "content": ""}
                messages.append(last)
            last.setdefault("tool_calls", []).append(call)
            if thinking:
                last["thinking"], thinking = thinking, ""
        elif kind in ("function_call_output", "custom_tool_call_output"):
            messages.append(_tool_output(item, where, names))
        elif kind == "reasoning":
            thinking += _reasoning_text(item)
        else:
            raise BadRequestError(f"{where}.type: unsupported input item type {kind!r}")
    if thinking:
        messages.append({"role": "assistant", "content": "", "thinking": thinking})
    return messages


def _tool_output(item: dict[str, Any], where: str, names: dict[str, str]) -> dict[str, Any]:
    """A tool's output as a ``tool`` message. Codex also sends outputs of its own with no
    call before them, named instead (``namespace``, ``name``): those keep their name."""
    text, images = _content_text(item.get("output"), f"{where}.output")
    tool: dict[str, Any] = {"role": "tool", "content": text}
    call_id = item.get("call_id")
    name = item.get("name")
    if isinstance(call_id, str) and call_id:
        tool["tool_call_id"] = call_id
        name = names.get(call_id, name)
    elif not isinstance(name, str) or not name:
        raise BadRequestError(f"{where}.call_id: Field required")
    elif isinstance(item.get("namespace"), str) and item["namespace"]:
        name = f"{item['namespace']}.{name}"
    if isinstance(name, str) and name:
        tool["tool_name"] = name
    if images:
        tool["images"] = images
    return tool


def _text_field(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequestError(f"{where}.{name}: Field required")
    return value


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role == "developer":
        role = "system"
    if role not in ("user", "assistant", "system"):
        raise BadRequestError(
            f"{where}.role: must be 'user', 'assistant', 'system' or 'developer', not {role!r}"
        )
    text, images = _content_text(item.get("content"), f"{where}.content")
    message: dict[str, Any] = {"role": role, "content": text}
    if images:
        message["images"] = images
    return message


def _content_text(content: Any, where: str) -> tuple[str, list[str]]:
    """A message's (or a tool output's) content: a string, or parts; its text and images."""
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise BadRequestError(f"{where}: expected a string or a list of content parts")
    texts: list[str] = []
    images: list[str] = []
    for k, part in enumerate(content):
        at = f"{where}[{k}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            texts.append(str(part.get("text", "")))
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
        elif kind == "input_image":
            url = part.get("image_url") if isinstance(part, dict) else None
            if not isinstance(url, str) or not url.startswith("data:"):
                raise BadRequestError(
                    f"{at}.image_url: only base64 data URLs are supported (no file_id, no URL)"
                )
            images.append(url.partition(",")[2])
        elif kind == "input_file":
            raise BadRequestError(f"{at}: file inputs are not supported")
        else:
            raise BadRequestError(f"{at}.type: unsupported content type {kind!r}")
    return "\n".join(texts), images


def _call(item: dict[str, Any], where: str, kind: str) -> dict[str, Any]:
    call_id = _text_field(item, "call_id", where)
    name = _text_field(item, "name", where)
    namespace = item.get("namespace")
    if isinstance(namespace, str) and namespace:
        name = f"{namespace}.{name}"
    if kind == "custom_tool_call":
        text = item.get("input")
        if not isinstance(text, str):
            raise BadRequestError(f"{where}.input: Field required (a string)")
        arguments: Any = {"input": text}
    else:
        raw = item.get("arguments") or "{}"
        try:
            arguments = load_json(raw) if isinstance(raw, str) else raw
        except BadRequestError:
            raise BadRequestError(f"{where}.arguments: not valid JSON") from None
        if not isinstance(arguments, dict):
            raise BadRequestError(f"{where}.arguments: expected a JSON object")
    return {"id": call_id, "function": {"name": name, "arguments": arguments}}


def _reasoning_text(item: dict[str, Any]) -> str:
    """What a reasoning item carried: its text, else its summary, else the thinking we put
    in ``encrypted_content`` (plain text here: nothing is encrypted)."""
    for key in ("content", "summary"):
        parts = item.get(key)
        if isinstance(parts, list) and parts:
            return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
    encrypted = item.get("encrypted_content")
    return encrypted if isinstance(encrypted, str) else ""


# ---- chat chunks → the response object and its events ------------------------------------


class ResponseEncoder:
    """One answer as the Responses API's stream events, and as its response object."""

    def __init__(
        self,
        ident: str,
        body: ResponsesRequest,
        translated: Translated,
        *,
        store: bool,
        on_done: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.ident = ident
        self.body = body
        self.store = store
        self.created_at = int(time.time())
        self.status = "in_progress"
        self.output: list[dict[str, Any]] = []
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.incomplete: dict[str, Any] | None = None
        self.completed_at: int | None = None
        self._custom = translated.custom
        self._namespaces = translated.namespaces
        self._encrypted = "reasoning.encrypted_content" in (body.include or ())
        self._on_done = on_done
        self._sequence = 0
        self._started = False
        self._open: str | None = None  # "reasoning" or "message": the item being written
        self._text = ""  # the open item's text so far

    def response(self) -> dict[str, Any]:
        body = self.body
        reasoning = body.reasoning
        return {
            "id": self.ident,
            "object": "response",
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "status": self.status,
            "background": False,
            "error": self.error,
            "incomplete_details": self.incomplete,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "max_tool_calls": None,
            "model": body.model,
            "output": json.loads(json.dumps(self.output)),
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id,
            "reasoning": {
                "effort": reasoning.effort if reasoning else None,
                "summary": reasoning.summary if reasoning else None,
            },
            "service_tier": "default",
            "store": self.store,
            "temperature": body.temperature,
            "text": {"format": (body.text.format if body.text else None) or {"type": "text"}},
            "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
            "tools": body.tools or [],
            "top_logprobs": 0,
            "top_p": body.top_p,
            "truncation": body.truncation or "disabled",
            "usage": self.usage,
            "user": body.user,
            "metadata": body.metadata or {},
        }

    def feed(self, chunk: Chunk) -> list[Event]:
        events: list[Event] = []
        if not self._started:
            self._started = True
            events.append(self._event("response.created", response=self.response()))
            events.append(self._event("response.in_progress", response=self.response()))
        message = chunk.get("message") or {}
        if message.get("thinking"):
            events += self._write("reasoning", message["thinking"])
        if message.get("content"):
            events += self._write("message", message["content"])
        for call in message.get("tool_calls") or ():
            events += self._call(call)
        if chunk.get("done"):
            events += self._finish(chunk)
        return events

    def fail(self, status: int, message: str) -> list[Event]:
        self.status = "failed"
        code = "server_error" if status >= 500 else "invalid_request_error"
        self.error = {"code": code, "message": message}
        return [self._event("response.failed", response=self.response())]

    # ---- the items -----------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> Event:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return kind, json.loads(json.dumps(data))  # a copy: the items change as text comes

    def _write(self, kind: str, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open != kind:
            events += self._close()
            events += self._begin(kind)
        self._text += text
        item = self.output[-1]
        place = {"item_id": item["id"], "output_index": len(self.output) - 1}
        if kind == "reasoning":
            events.append(
                self._event(
                    "response.reasoning_summary_text.delta", **place, summary_index=0, delta=text
                )
            )
        else:
            events.append(
                self._event(
                    "response.output_text.delta", **place, content_index=0, delta=text, logprobs=[]
                )
            )
        return events

    def _begin(self, kind: str) -> list[Event]:
        self._open = kind
        self._text = ""
        if kind == "reasoning":
            item: dict[str, Any] = {"id": _ident("rs"), "type": "reasoning", "summary": []}
        else:
            item = {
                "id": _ident("msg"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
        self.output.append(item)
        place = {"item_id": item["id"], "output_index": len(self.output) - 1}
        events = [
            self._event("response.output_item.added", output_index=place["output_index"], item=item)
        ]
        if kind == "reasoning":
            part: dict[str, Any] = {"type": "summary_text", "text": ""}
            events.append(
                self._event(
                    "response.reasoning_summary_part.added", **place, summary_index=0, part=part
                )
            )
        else:
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events.append(
                self._event("response.content_part.added", **place, content_index=0, part=part)
            )
        return events

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        kind, text = self._open, self._text
        self._open, self._text = None, ""
        item = self.output[-1]
        place = {"item_id": item["id"], "output_index": len(self.output) - 1}
        if kind == "reasoning":
            part: dict[str, Any] = {"type": "summary_text", "text": text}
            item["summary"] = [part]
            if self._encrypted:
                item["encrypted_content"] = text  # plain text: nothing here is encrypted
            events = [
                self._event(
                    "response.reasoning_summary_text.done", **place, summary_index=0, text=text
                ),
                self._event(
                    "response.reasoning_summary_part.done", **place, summary_index=0, part=part
                ),
            ]
        else:
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item["content"] = [part]
            item["status"] = "completed"
            events = [
                self._event(
                    "response.output_text.done", **place, content_index=0, text=text, logprobs=[]
                ),
                self._event("response.content_part.done", **place, content_index=0, part=part),
            ]
        events.append(
            self._event("response.output_item.done", output_index=place["output_index"], item=item)
        )
        return events

    def _call(self, call: dict[str, Any]) -> list[Event]:
        events = self._close()
        function = call.get("function") or {}
        name = str(function.get("name", ""))
        arguments = function.get("arguments") or {}
        call_id = call.get("id") or _ident("call")
        index = len(self.output)
        if name in self._custom:
            text = str(arguments.get("input", "")) if isinstance(arguments, dict) else ""
            item: dict[str, Any] = {
                "id": _ident("ctc"),
                "type": "custom_tool_call",
                "call_id": call_id,
                "name": name,
                "input": text,
            }
            place = {"item_id": item["id"], "output_index": index}
            events.append(
                self._event(
                    "response.output_item.added", output_index=index, item={**item, "input": ""}
                )
            )
            events.append(self._event("response.custom_tool_call_input.delta", **place, delta=text))
            events.append(self._event("response.custom_tool_call_input.done", **place, input=text))
        else:
            serialized = json.dumps(arguments, ensure_ascii=False)
            item = {
                "id": _ident("fc"),
                "type": "function_call",
                "status": "completed",
                "call_id": call_id,
                "name": name,
                "arguments": serialized,
            }
            namespace, _, short = name.partition(".")
            if short and namespace in self._namespaces:
                item["namespace"], item["name"] = namespace, short
            place = {"item_id": item["id"], "output_index": index}
            added = {**item, "status": "in_progress", "arguments": ""}
            events.append(self._event("response.output_item.added", output_index=index, item=added))
            events.append(
                self._event("response.function_call_arguments.delta", **place, delta=serialized)
            )
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    **place,
                    name=item["name"],
                    arguments=serialized,
                )
            )
        self.output.append(item)
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    def _finish(self, done: Chunk) -> list[Event]:
        events = self._close()
        prompt = int(done.get("prompt_eval_count", 0))
        completion = int(done.get("eval_count", 0))
        self.usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        }
        self.completed_at = int(time.time())
        if done.get("done_reason") == "length":
            self.status = "incomplete"
            self.incomplete = {"reason": "max_output_tokens"}
        else:
            self.status = "completed"
        response = self.response()
        events.append(self._event(f"response.{self.status}", response=response))
        if self._on_done is not None:
            self._on_done(response)
        return events


# ---- the store and the routes --------------------------------------------------------------


@dataclass(slots=True)
class StoredResponse:
    response: dict[str, Any]
    items: list[dict[str, Any]]  # the whole conversation, the response's output last


@dataclass(slots=True)
class ResponseStore:
    """The last ``capacity`` stored responses, in memory; the least recently used go first."""

    capacity: int = 256
    _entries: OrderedDict[str, StoredResponse] = field(default_factory=OrderedDict)

    def get(self, ident: str) -> StoredResponse | None:
        entry = self._entries.get(ident)
        if entry is not None:
            self._entries.move_to_end(ident)
        return entry

    def put(self, ident: str, entry: StoredResponse) -> None:
        self._entries[ident] = entry
        self._entries.move_to_end(ident)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def delete(self, ident: str) -> bool:
        return self._entries.pop(ident, None) is not None

    def __len__(self) -> int:
        return len(self._entries)


class Responses:
    """``/v1/responses`` over an ``Api``, with its store of past responses."""

    def __init__(self, api: Api, store: ResponseStore | None = None) -> None:
        self.api = api
        self.store = store if store is not None else ResponseStore()

    async def create(self, request: Request) -> Response:
        body = await parse_json(request, ResponsesRequest)
        if not body.model:
            raise BadRequestError("model: Field required")
        model = await asyncio.to_thread(self.api.models.resolve, body.model)
        previous = None
        if body.previous_response_id:
            stored = self.store.get(body.previous_response_id)
            if stored is None:
                raise BadRequestError(
                    f"Previous response with id '{body.previous_response_id}' not found."
                )
            previous = stored.items
        translated = translate(body, thinks=model.template.supports_thinking, previous=previous)
        opened = await self.api.open_chat(translated.request)
        if isinstance(opened, Response):  # cannot happen: input is required
            raise BadRequestError("input: Field required")
        ident = _ident("resp")
        keep = body.store is not False

        def remember(response: dict[str, Any]) -> None:
            items = translated.items + response["output"]
            self.store.put(ident, StoredResponse(response, items))

        encoder = ResponseEncoder(
            ident, body, translated, store=keep, on_done=remember if keep else None
        )
        if not body.stream:
            for chunk in await all_chunks(request, opened):
                encoder.feed(chunk)
            return JSONResponse(encoder.response())
        first = await first_chunk(request, opened)
        return sse_response(request, opened, first, encoder)

    async def retrieve(self, request: Request) -> Response:
        ident = str(request.path_params["response_id"])
        stored = self.store.get(ident)
        if stored is None:
            raise NotFoundError(f"Response with id '{ident}' not found.")
        return JSONResponse(stored.response)

    async def delete(self, request: Request) -> Response:
        ident = str(request.path_params["response_id"])
        if not self.store.delete(ident):
            raise NotFoundError(f"Response with id '{ident}' not found.")
        return JSONResponse({"id": ident, "object": "response", "deleted": True})


def responses_routes(api: Api) -> list[Route]:
    responses = Responses(api)
    path = "/v1/responses/{response_id}"
    return [
        Route("/v1/responses", openai_errors(responses.create), methods=["POST"]),
        Route(path, openai_errors(responses.retrieve), methods=["GET"]),
        Route(path, openai_errors(responses.delete), methods=["DELETE"]),
    ]
