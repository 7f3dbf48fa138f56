"""Anthropic's Messages API on a real server, through the official ``anthropic`` SDK (sync and
async, ``messages.create`` and ``messages.stream``) and raw httpx for the SSE framing."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from tests.conftest import ServerProcess
from tests.integration.chat_templates import CHATML, THINKER, sse_events
from tests.integration.test_disconnect import (
    assert_slot_free,
    in_use,
    metric,
    one_slot,
    read_until,
    send,
    wait_for,
)

pytestmark = pytest.mark.model

__all__ = ["one_slot"]  # the one-slot server of test_disconnect, for the leaving client

MODEL = "smollm2:135m"
HEADERS = {
    "x-api-key": "unused",
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
}
WEATHER: Any = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "the city"}},
        "required": ["city"],
    },
}
GREEDY = {"temperature": 0}  # the SDK no longer has a temperature argument: extra_body


@pytest.fixture(scope="module")
def client(server: ServerProcess, smollm2: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=server.url, api_key="unused", max_retries=0, default_headers=HEADERS
    ) as api:
        yield api


def test_messages_create(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=16,
        system="You are terse.",
        messages=[{"role": "user", "content": "Name a colour."}],
        metadata={"user_id": "u-1"},
        extra_body=GREEDY,
    )
    assert message.id.startswith("msg_")
    assert message.type == "message" and message.role == "assistant"
    assert message.model == MODEL
    assert message.content and message.content[0].type == "text"
    assert message.content[0].text.strip()
    assert message.stop_reason in {"end_turn", "max_tokens"}
    assert message.stop_sequence is None
    assert message.usage.input_tokens > 0
    assert 0 < message.usage.output_tokens <= 16


def test_messages_stream(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=12,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}],
        extra_body=GREEDY,
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.stop_reason in {"end_turn", "max_tokens"}
    assert final.usage.output_tokens > 0


def test_async_create_and_stream(server: ServerProcess, smollm2: str) -> None:
    async def main() -> tuple[anthropic.types.Message, str]:
        async with anthropic.AsyncAnthropic(
            base_url=server.url, api_key="unused", max_retries=0
        ) as api:
            created = await api.messages.create(
                model=MODEL,
                max_tokens=8,
                messages=[{"role": "user", "content": "Hello"}],
                extra_body=GREEDY,
            )
            async with api.messages.stream(
                model=MODEL,
                max_tokens=8,
                messages=[{"role": "user", "content": "Hello"}],
                extra_body=GREEDY,
            ) as stream:
                streamed = "".join([text async for text in stream.text_stream])
        return created, streamed

    created, streamed = asyncio.run(main())
    assert created.content[0].type == "text" and created.content[0].text
    assert streamed  # greedy: the same words as the created answer
    assert created.content[0].text == streamed


def test_raw_sse_framing_and_event_order(server: ServerProcess, smollm2: str) -> None:
    response = httpx.post(
        server.url + "/v1/messages?beta=true",
        headers=HEADERS,
        json={
            "model": MODEL,
            "max_tokens": 6,
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 0,
        },
        timeout=120,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    names = [name for name, _ in events]
    assert all(data["type"] == name for name, data in events)
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert all(delta["type"] == "text_delta" and delta["text"] for delta in deltas)
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "max_tokens"
    assert final["usage"]["output_tokens"] == 6


def test_tool_round_trip(client: anthropic.Anthropic) -> None:
    """A forced call, its result sent back, the final answer: the whole agent loop."""
    question: Any = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.messages.create(
        model=MODEL,
        max_tokens=64,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        messages=[question],
        extra_body=GREEDY,
    )
    assert first.stop_reason == "tool_use"
    uses = [block for block in first.content if block.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.name == "get_weather" and use.id.startswith("toolu_")
    assert isinstance(use.input, dict) and isinstance(use.input.get("city"), str)
    result: Any = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 24 C"}],
    }
    history = [question, {"role": "assistant", "content": first.content}, result]
    with client.messages.stream(
        model=MODEL,
        max_tokens=32,
        tools=[WEATHER],
        messages=history,
        extra_body=GREEDY,
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason in {"end_turn", "max_tokens", "tool_use"}
    assert final.content


def test_streamed_tool_use_carries_its_input_as_json_deltas(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        extra_body=GREEDY,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    use = next(block for block in final.content if block.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input, dict) and "city" in use.input
    assert final.stop_reason == "tool_use"


def test_structured_output(client: anthropic.Anthropic) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    message = client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Invent a person."}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
        extra_body=GREEDY,
    )
    assert message.content[0].type == "text"
    jsonschema.validate(json.loads(message.content[0].text), schema)


def test_count_tokens(client: anthropic.Anthropic) -> None:
    messages: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    bare = client.messages.count_tokens(model=MODEL, messages=messages)
    with_tools = client.messages.count_tokens(
        model=MODEL, messages=messages, system="Be terse.", tools=[WEATHER]
    )
    assert 5 < bare.input_tokens < with_tools.input_tokens
    answered = client.messages.create(model=MODEL, max_tokens=1, messages=messages)
    assert answered.usage.input_tokens <= bare.input_tokens  # the cache may hold a prefix


def test_thinking_on_a_thinking_template(
    client: anthropic.Anthropic, server: ServerProcess
) -> None:
    assert THINKER != CHATML
    created = httpx.post(
        server.url + "/api/create",
        json={"model": "thinker", "from": MODEL, "template": THINKER, "stream": False},
        timeout=120,
    )
    assert created.status_code == 200, created.text
    question: Any = [{"role": "user", "content": "Why is the sky blue?"}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    message = client.messages.create(
        model="thinker", max_tokens=12, thinking=thinking, messages=question, extra_body=GREEDY
    )
    block = message.content[0]
    assert block.type == "thinking" and block.thinking.strip()
    with client.messages.stream(
        model="thinker", max_tokens=12, thinking=thinking, messages=question, extra_body=GREEDY
    ) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_message()
    assert "thinking" in kinds
    assert final.content[0].type == "thinking"
    assert final.content[0].thinking == block.thinking
    plain = client.messages.create(
        model="thinker",
        max_tokens=4,
        thinking={"type": "disabled"},
        messages=question,
        extra_body=GREEDY,
    )
    assert all(block.type == "text" for block in plain.content)
    # Claude Code asks every model for adaptive thinking: one that cannot think just answers
    adaptive = client.messages.create(
        model=MODEL, max_tokens=4, thinking={"type": "adaptive"}, messages=question
    )
    assert adaptive.content[0].type == "text"


def error_of(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    assert set(body) == {"type", "error"} and set(body["error"]) == {"type", "message"}
    return str(body["error"]["message"])


@pytest.mark.parametrize("stream", [False, True])
def test_error_shapes(server: ServerProcess, smollm2: str, stream: bool) -> None:
    """Every error before the first byte keeps its status, in Anthropic's shape, streamed
    or not; the server answers the next request as before."""
    url = server.url + "/v1/messages"
    base = {"model": MODEL, "max_tokens": 8, "stream": stream}
    hi = [{"role": "user", "content": "hi"}]

    def post(body: dict[str, Any]) -> httpx.Response:
        return httpx.post(url, headers=HEADERS, json=body, timeout=60)

    assert "max_tokens: Field required" in error_of(
        post({"model": MODEL, "messages": hi}), 400, "invalid_request_error"
    )
    assert "messages" in error_of(post({**base, "messages": []}), 400, "invalid_request_error")
    missing = error_of(
        post({**base, "model": "no-such:1b", "messages": hi}), 404, "not_found_error"
    )
    assert "no-such:1b" in missing
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}
    vision = post({**base, "messages": [{"role": "user", "content": [image]}]})
    assert "does not support vision" in error_of(vision, 400, "invalid_request_error")
    bad_json = httpx.post(url, headers=HEADERS, content=b"{nope", timeout=60)
    assert "invalid JSON" in error_of(bad_json, 400, "invalid_request_error")
    wrong_type = post({**base, "messages": hi, "max_tokens": "many"})
    assert "max_tokens" in error_of(wrong_type, 400, "invalid_request_error")
    options = post({**base, "messages": hi, "top_k": -1.5})
    error_of(options, 400, "invalid_request_error")
    assert httpx.get(server.url + "/v1/messages").status_code == 405


def test_sdk_raises_typed_errors(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(
            model="no-such:1b", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 404
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=8, messages=[])


@pytest.mark.timeout(900)  # a prefill of 8192 tokens on two shared cores
def test_agent_sized_request_on_a_small_context(client: anthropic.Anthropic) -> None:
    """Claude Code sends a system prompt and tools larger than even this model's training
    length (8192): the runner loads with all of it instead of the default 4096, and the
    request still answers, cut to fit (the newest turn kept)."""
    system = "\n".join(f"Rule {i}: answer briefly and stay on the task." for i in range(600))
    tools: Any = [
        {**WEATHER, "name": f"tool_{i}", "description": f"Tool number {i}. " * 10}
        for i in range(30)
    ]
    count = client.messages.count_tokens(
        model=MODEL, system=system, tools=tools, messages=[{"role": "user", "content": "Hi"}]
    )
    assert count.input_tokens > 8192
    message = client.messages.create(
        model=MODEL,
        max_tokens=4,
        system=system,
        tools=tools,
        messages=[{"role": "user", "content": "Say hi."}],
        extra_body=GREEDY,
    )
    assert message.content and message.usage.output_tokens > 0
    assert 4096 < message.usage.input_tokens <= 8192


def test_a_client_that_leaves_mid_stream_frees_the_slot(one_slot: ServerProcess) -> None:
    def canceled() -> float:
        labels = {"route": "/v1/messages", "outcome": "canceled"}
        return metric(one_slot, "corral_requests_total", labels)

    before = canceled()
    leaving = send(
        one_slot,
        {
            "model": MODEL,
            "max_tokens": 4000,
            "stream": True,
            "temperature": 0,
            "messages": [{"role": "user", "content": "Count from 1 to 1000: 1, 2, 3, 4, 5,"}],
        },
        path="/v1/messages",
    )
    read_until(leaving, b"content_block_delta")  # it streams, holding the one slot
    assert in_use(one_slot) == 1
    leaving.shutdown(socket.SHUT_RDWR)
    leaving.close()
    wait_for(lambda: in_use(one_slot) == 0, "the stream to let go", one_slot)
    wait_for(lambda: canceled() == before + 1, "the request to count as canceled", one_slot)
    assert_slot_free(one_slot)
