"""OpenAI's API as Ollama's ``/v1`` speaks it: request types and their translation.

Requests are translated into Ollama's own (``ChatRequest``, ``GenerateRequest``), answered
by the same handlers, and the answers translated back, as Ollama's OpenAI middleware does.
Defaults follow Ollama's: ``temperature`` and ``top_p`` are 1.0 when absent. Beyond Ollama:
``options`` and ``keep_alive`` in the request body reach the model (``num_ctx`` through the
OpenAI SDK's ``extra_body``), and ``tool_choice`` is honoured.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from corral.api.jsonbody import load_json
from corral.api.types import (
    ChatRequest,
    GenerateRequest,
    KeepAlive,
    Message,
    check_top_logprobs,
    think_from_effort,
)
from corral.errors import BadRequestError

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "chat_completion",
    "chat_logprobs",
    "chat_request",
    "chunk",
    "completion",
    "completion_chunk",
    "completion_id",
    "completion_logprobs",
    "error_body",
    "generate_request",
    "usage",
]

_FINGERPRINT = "fp_ollama"


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class StreamOptions(_Body):
    include_usage: bool = False


class ChatCompletionRequest(_Body, KeepAlive):
    model: str = ""
    messages: list[dict[str, Any]] = Field(default_factory=list)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[Any] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    reasoning_effort: str | None = None
    reasoning: dict[str, Any] | None = None
    # Ollama's own, through extra_body
    options: dict[str, Any] | None = None
    think: bool | str | None = None


class CompletionRequest(_Body, KeepAlive):
    model: str = ""
    prompt: str | list[Any] = ""
    suffix: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[Any] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    echo: bool | None = None
    n: int | None = None
    logprobs: int | None = None
    best_of: int | None = None
    options: dict[str, Any] | None = None


class EmbeddingRequest(_Body, KeepAlive):
    model: str = ""
    input: Any = None
    encoding_format: str = "float"
    dimensions: int | None = None
    options: dict[str, Any] | None = None


# ---- requests → Ollama's ---------------------------------------------------------------


def _stop_list(stop: str | list[Any] | None) -> list[str] | None:
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    for item in stop:
        if not isinstance(item, str):
            raise BadRequestError(f"invalid type for 'stop' field: {_go_kind(item)}")
    return list(stop)


def _go_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "float64"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__


def _options(
    body: ChatCompletionRequest | CompletionRequest, max_tokens: int | None
) -> dict[str, Any]:
    options: dict[str, Any] = dict(body.options or {})
    options["temperature"] = body.temperature if body.temperature is not None else 1.0
    options["top_p"] = body.top_p if body.top_p is not None else 1.0
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    if body.seed is not None:
        options["seed"] = body.seed
    if body.frequency_penalty is not None:
        options["frequency_penalty"] = body.frequency_penalty
    if body.presence_penalty is not None:
        options["presence_penalty"] = body.presence_penalty
    stop = _stop_list(body.stop)
    if stop is not None:
        options["stop"] = stop
    # The options of Ollama's own that clients put at the top level of the body.
    for key, value in (body.model_extra or {}).items():
        if key in _OLLAMA_OPTIONS and key not in options:
            options[key] = value
    return options


_OLLAMA_OPTIONS = frozenset(
    {"num_ctx", "num_keep", "num_batch", "num_gpu", "num_thread", "top_k", "min_p"}
    | {"typical_p", "repeat_last_n", "repeat_penalty", "mirostat", "mirostat_tau"}
    | {"mirostat_eta", "use_mmap", "num_predict"}
)


def _format(response_format: dict[str, Any] | None) -> str | dict[str, Any] | None:
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise BadRequestError("response_format json_schema requires json_schema.schema")
        return schema
    if kind in (None, "text"):
        return None
    raise BadRequestError(f"invalid response_format type: {kind}")


def _content_text(content: Any) -> tuple[str, list[str]]:
    """A message's content (a string or a list of parts) as text, and its images."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise BadRequestError(f"invalid message content type: {_go_kind(content)}")
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            raise BadRequestError("invalid message format")
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str) or not url.startswith("data:"):
                raise BadRequestError(
                    "image URLs are not currently supported, please use base64 encoded data instead"
                )
            _, _, data = url.partition(",")
            if not data:
                raise BadRequestError("invalid image input")
            images.append(data)
        else:
            raise BadRequestError(f"invalid message content type: {kind}")
    return "\n".join(texts), images


def _messages(raw: list[dict[str, Any]]) -> list[Message]:
    messages: list[Message] = []
    names_by_id: dict[str, str] = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("role"), str):
            raise BadRequestError("invalid message format")
        role = item["role"]
        if role == "developer":
            role = "system"
        text, images = _content_text(item.get("content"))
        calls = []
        for call in item.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise BadRequestError("invalid tool call")
            arguments = function.get("arguments") or "{}"
            if isinstance(arguments, str):
                try:
                    arguments = load_json(arguments)  # hostile nesting, lone surrogates
                except BadRequestError:
                    raise BadRequestError("invalid tool call arguments") from None
            if not isinstance(arguments, dict):
                raise BadRequestError("invalid tool call arguments")
            call_id = call.get("id")
            if isinstance(call_id, str):
                names_by_id[call_id] = function["name"]
            calls.append(
                {"id": call_id, "function": {"name": function["name"], "arguments": arguments}}
            )
        tool_call_id = item.get("tool_call_id")
        tool_name = item.get("name")
        if role == "tool" and not tool_name and isinstance(tool_call_id, str):
            tool_name = names_by_id.get(tool_call_id)
        fields: dict[str, Any] = {"role": role, "content": text}
        if images:
            fields["images"] = images
        if calls:
            fields["tool_calls"] = calls
        if isinstance(tool_name, str):
            fields["tool_name"] = tool_name
        if isinstance(tool_call_id, str):
            fields["tool_call_id"] = tool_call_id
        reasoning = item.get("reasoning") or item.get("reasoning_content")
        if isinstance(reasoning, str):
            fields["thinking"] = reasoning
        messages.append(Message.model_validate(fields))
    return messages


def chat_request(body: ChatCompletionRequest) -> ChatRequest:
    if not body.messages:
        raise BadRequestError("[] is too short - 'messages'")
    if body.n is not None and body.n > 1:
        raise BadRequestError("n > 1 is not supported: ask once per completion")
    think: bool | str | None = body.think
    effort = body.reasoning_effort
    if effort is None and isinstance(body.reasoning, dict):
        effort = body.reasoning.get("effort")
    if effort is not None:
        think = think_from_effort(effort if isinstance(effort, str) else str(effort))
    max_tokens = (
        body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    )
    return ChatRequest(
        model=body.model,
        messages=_messages(body.messages),
        tools=body.tools or None,
        tool_choice=body.tool_choice,
        stream=body.stream,
        format=_format(body.response_format),
        options=_options(body, max_tokens),
        think=think,
        keep_alive=body.keep_alive,
        logprobs=bool(body.logprobs),
        top_logprobs=_top_logprobs(body.top_logprobs),
    )


def _top_logprobs(value: int | None) -> int:
    try:
        return check_top_logprobs(value or 0)
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None


def generate_request(body: CompletionRequest) -> GenerateRequest:
    if body.echo:
        raise BadRequestError("echo is not supported: the prompt is not repeated in the answer")
    if (body.n is not None and body.n > 1) or (body.best_of is not None and body.best_of > 1):
        raise BadRequestError("n > 1 is not supported: ask once per completion")
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise BadRequestError("invalid prompt: expected a string (or a list of one string)")
        prompt = prompt[0]
    return GenerateRequest(
        model=body.model,
        prompt=prompt,
        suffix=body.suffix or "",
        stream=body.stream,
        options=_options(body, body.max_tokens),
        keep_alive=body.keep_alive,
        # OpenAI's legacy ``logprobs: N``: the sampled token's logprob and N alternatives
        logprobs=body.logprobs is not None,
        top_logprobs=_top_logprobs(body.logprobs),
    )


# ---- answers → OpenAI's ----------------------------------------------------------------


def completion_id(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(12)}"


def usage(final: dict[str, Any]) -> dict[str, int]:
    prompt = int(final.get("prompt_eval_count", 0))
    completion_tokens = int(final.get("eval_count", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


def finish_reason(final: dict[str, Any], tool_calls: bool) -> str:
    if tool_calls:
        return "tool_calls"
    return "length" if final.get("done_reason") == "length" else "stop"


def openai_tool_calls(calls: list[dict[str, Any]], *, streaming: bool) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls):
        function = call["function"]
        item: dict[str, Any] = {
            "id": call.get("id") or "call_" + secrets.token_hex(4),
            "type": "function",
            "function": {
                "name": function["name"],
                "arguments": json.dumps(function.get("arguments", {}), ensure_ascii=False),
            },
        }
        if streaming:
            item["index"] = function.get("index", i)
        out.append(item)
    return out


def chat_logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """Ollama's logprob entries as a chat choice's ``logprobs`` (None when not asked).

    OpenAI's entry has the same fields as Ollama's but ``top_logprobs`` is always there."""
    if not entries:
        return None
    content = [
        {
            "token": entry["token"],
            "logprob": entry["logprob"],
            "bytes": entry.get("bytes"),
            "top_logprobs": entry.get("top_logprobs", []),
        }
        for entry in entries
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(
    entries: list[dict[str, Any]] | None, text_offset: int = 0
) -> dict[str, Any] | None:
    """Ollama's logprob entries in the legacy completions shape: parallel lists, and each
    position's alternatives as ``{token: logprob}`` including the sampled token (OpenAI's
    "up to logprobs + 1"). ``text_offset`` counts characters of the generated text, from
    ``text_offset`` (where the entries start when a stream sent text before them)."""
    if not entries:
        return None
    offsets = []
    for entry in entries:
        offsets.append(text_offset)
        text_offset += len(entry["token"])
    return {
        "tokens": [entry["token"] for entry in entries],
        "token_logprobs": [entry["logprob"] for entry in entries],
        "top_logprobs": [
            {top["token"]: top["logprob"] for top in entry.get("top_logprobs", ())}
            | {entry["token"]: entry["logprob"]}
            for entry in entries
        ],
        "text_offset": offsets,
    }


def chat_completion(ident: str, model: str, merged: dict[str, Any]) -> dict[str, Any]:
    message = merged.get("message", {})
    calls = message.get("tool_calls") or []
    out_message: dict[str, Any] = {"role": "assistant", "content": message.get("content", "")}
    if message.get("thinking"):
        out_message["reasoning"] = message["thinking"]
    if calls:
        out_message["tool_calls"] = openai_tool_calls(calls, streaming=False)
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": _FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": out_message,
                "finish_reason": finish_reason(merged, bool(calls)),
                "logprobs": chat_logprobs(merged.get("logprobs")),
            }
        ],
        "usage": usage(merged),
    }


def chunk(
    ident: str,
    model: str,
    delta: dict[str, Any],
    finish: str | None = None,
    *,
    choices: bool = True,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": _FINGERPRINT,
        "choices": (
            [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]
            if choices
            else []
        ),
    }
    return body


def completion(ident: str, model: str, merged: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": _FINGERPRINT,
        "choices": [
            {
                "text": merged.get("response", ""),
                "index": 0,
                "logprobs": completion_logprobs(merged.get("logprobs")),
                "finish_reason": finish_reason(merged, False),
            }
        ],
        "usage": usage(merged),
    }


def completion_chunk(
    ident: str,
    model: str,
    text: str,
    finish: str | None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": _FINGERPRINT,
        "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}],
    }


def error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    if status == 503:
        kind = "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
