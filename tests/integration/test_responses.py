"""OpenAI's Responses API on a real server, through the official ``openai`` SDK (sync and
async, ``responses.create`` and ``responses.stream``) and raw httpx for the SSE framing."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
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
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "the city"}},
        "required": ["city"],
    },
    "strict": False,
}


@pytest.fixture(scope="module")
def client(server: ServerProcess, smollm2: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as api:
        yield api


def test_responses_create(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        instructions="You are terse.",
        input="Name a colour.",
        max_output_tokens=16,
        temperature=0,
        metadata={"trace": "t-1"},
        user="u-1",
    )
    assert response.id.startswith("resp_")
    assert response.object == "response" and response.model == MODEL
    assert response.status in {"completed", "incomplete"}
    assert response.instructions == "You are terse."
    assert response.metadata == {"trace": "t-1"}
    message = response.output[-1]
    assert message.type == "message" and message.role == "assistant"
    assert response.output_text.strip()
    assert response.usage is not None
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 16
    usage = response.usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    if response.status == "incomplete":
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"


def test_responses_stream(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=MODEL, input="Say hi.", max_output_tokens=12, temperature=0
    ) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in {"response.completed", "response.incomplete"}
    numbers = [event.sequence_number for event in events]
    assert numbers == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    last = events[-1]
    assert last.type in {"response.completed", "response.incomplete"}
    # the SDK's get_final_response() wants response.completed; a cut answer ends with
    # response.incomplete, as OpenAI's does, and carries the response all the same
    assert text and last.response.output_text == text
    assert last.response.status == last.type.removeprefix("response.")


def test_async_create_and_stream(server: ServerProcess, smollm2: str) -> None:
    async def main() -> tuple[str, str]:
        async with openai.AsyncOpenAI(
            base_url=server.url + "/v1", api_key="unused", max_retries=0
        ) as api:
            created = await api.responses.create(
                model=MODEL, input="Hello", max_output_tokens=8, temperature=0
            )
            async with api.responses.stream(
                model=MODEL, input="Hello", max_output_tokens=8, temperature=0
            ) as stream:
                events = [event async for event in stream]
        last = events[-1]
        assert last.type in {"response.completed", "response.incomplete"}
        return created.output_text, last.response.output_text

    created, streamed = asyncio.run(main())
    assert created and created == streamed  # greedy: the same words both ways


def test_raw_sse_framing_and_event_order(server: ServerProcess, smollm2: str) -> None:
    response = httpx.post(
        server.url + "/v1/responses",
        json={
            "model": MODEL,
            "input": "Hi",
            "max_output_tokens": 5,
            "temperature": 0,
            "stream": True,
        },
        timeout=120,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    names = [name for name, _ in events]
    assert all(data["type"] == name for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert names[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert names[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert set(names[4:-4]) == {"response.output_text.delta"}
    final = events[-1][1]["response"]
    assert final["status"] == "incomplete" and final["usage"]["output_tokens"] == 5
    item = events[-2][1]["item"]
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert item["content"][0]["text"] == text == final["output"][0]["content"][0]["text"]


def test_tool_round_trip(client: openai.OpenAI) -> None:
    """A forced call, its output sent back with the history, the final answer."""
    question: Any = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.responses.create(
        model=MODEL,
        input=[question],
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=64,
        temperature=0,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather" and call.call_id
    arguments = json.loads(call.arguments)
    assert isinstance(arguments.get("city"), str)
    output: Any = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}
    history: Any = [question, *[item.model_dump() for item in first.output], output]
    with client.responses.stream(
        model=MODEL, input=history, tools=[WEATHER], max_output_tokens=32, temperature=0
    ) as stream:
        final = stream.get_final_response()
    assert final.status in {"completed", "incomplete"}
    assert final.output


def test_streamed_function_call(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=MODEL,
        input="Weather in Rome?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=64,
        temperature=0,
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    call = next(item for item in final.output if item.type == "function_call")
    assert call.name == "get_weather" and "city" in json.loads(call.arguments)


def test_previous_response_id_continues_and_the_store(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=MODEL,
        input="My name is Ada. Reply with OK.",
        max_output_tokens=8,
        temperature=0,
    )
    assert getattr(first, "store") is True  # noqa: B009 (not in the SDK type)
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input="What is my name?",
        max_output_tokens=8,
        temperature=0,
    )
    assert second.previous_response_id == first.id
    assert second.output_text
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > 0
    with client.responses.stream(
        model=MODEL, previous_response_id=second.id, input="Again?", max_output_tokens=4
    ) as stream:
        last = list(stream)[-1]
    assert last.type == "response.incomplete"
    assert last.response.previous_response_id == second.id
    fetched = client.responses.retrieve(first.id)
    assert fetched.id == first.id and fetched.output_text == first.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(first.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, previous_response_id=first.id, input="x")
    assert "Previous response" in str(caught.value)
    unstored = client.responses.create(model=MODEL, input="hi", store=False, max_output_tokens=2)
    assert getattr(unstored, "store") is False  # noqa: B009
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_structured_output(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model=MODEL,
        input="Invent a person.",
        text={
            "format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}
        },
        max_output_tokens=64,
        temperature=0,
    )
    jsonschema.validate(json.loads(response.output_text), schema)
    loose = client.responses.create(
        model=MODEL,
        input="A JSON object with one key.",
        text={"format": {"type": "json_object"}},
        max_output_tokens=48,
        temperature=0,
    )
    if loose.status == "completed":
        assert isinstance(json.loads(loose.output_text), dict)


def test_reasoning_on_a_thinking_template(client: openai.OpenAI, server: ServerProcess) -> None:
    assert THINKER != CHATML
    created = httpx.post(
        server.url + "/api/create",
        json={"model": "thinker", "from": MODEL, "template": THINKER, "stream": False},
        timeout=120,
    )
    assert created.status_code == 200, created.text
    response = client.responses.create(
        model="thinker",
        input="Why is the sky blue?",
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        max_output_tokens=12,
        temperature=0,
    )
    reasoning = response.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.summary and reasoning.summary[0].text.strip()
    assert reasoning.encrypted_content == reasoning.summary[0].text
    with client.responses.stream(
        model="thinker",
        input="Why is the sky blue?",
        reasoning={"effort": "low"},
        max_output_tokens=12,
        temperature=0,
    ) as stream:
        events = list(stream)
    deltas = [e.delta for e in events if e.type == "response.reasoning_summary_text.delta"]
    assert "".join(deltas) == reasoning.summary[0].text
    # the reasoning item goes back as input: the thinking of the turn it came with
    history: Any = [
        {"role": "user", "content": "Why is the sky blue?"},
        *[item.model_dump() for item in response.output],
        {"role": "user", "content": "Shorter?"},
    ]
    follow = client.responses.create(
        model="thinker",
        input=history,
        reasoning={"effort": "none"},
        max_output_tokens=4,
    )
    assert all(item.type == "message" for item in follow.output)


def test_a_codex_shaped_request(server: ServerProcess, smollm2: str) -> None:
    """What Codex sends: developer messages, namespace tools, the hosted web_search, store
    off, encrypted reasoning asked for, and its own fields; the stream completes."""
    body = {
        "model": MODEL,
        "stream": True,
        "instructions": None,
        "input": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "developer",
                "content": [{"type": "input_text", "text": "You are a coding agent."}],
            },
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        ],
        "tools": [
            WEATHER,
            {
                "type": "namespace",
                "name": "multi_agent_v1",
                "description": "sub-agents",
                "tools": [
                    {"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}
                ],
            },
            {"type": "web_search", "external_web_access": False},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "k",
        "client_metadata": {"session_id": "s"},
        "max_output_tokens": 6,
    }
    headers = {"authorization": "Bearer unused", "originator": "codex_exec"}
    response = httpx.post(server.url + "/v1/responses", json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    names = [name for name, _ in sse_events(response)]
    assert names[0] == "response.created"
    assert names[-1] in {"response.completed", "response.incomplete"}


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return str(error["message"])


@pytest.mark.parametrize("stream", [False, True])
def test_error_shapes(server: ServerProcess, smollm2: str, stream: bool) -> None:
    url = server.url + "/v1/responses"

    def post(body: dict[str, Any]) -> httpx.Response:
        return httpx.post(url, json={"stream": stream, **body}, timeout=60)

    assert "model" in error_of(post({"input": "hi"}), 400)
    assert "input" in error_of(post({"model": MODEL}), 400)
    missing = post({"model": "no-such:1b", "input": "hi"})
    assert "no-such:1b" in error_of(missing, 404)
    assert missing.json()["error"]["code"] == "model_not_found"
    hosted = post({"model": MODEL, "input": "hi", "tools": [{"type": "code_interpreter"}]})
    assert "code_interpreter" in error_of(hosted, 400)
    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
    vision = post({"model": MODEL, "input": [{"role": "user", "content": [image]}]})
    assert "does not support vision" in error_of(vision, 400)
    effort = post({"model": MODEL, "input": "hi", "reasoning": {"effort": "extreme"}})
    assert "reasoning.effort" in error_of(effort, 400)
    bad_json = httpx.post(url, content=b"[1, 2", timeout=60)
    assert "invalid JSON" in error_of(bad_json, 400)
    wrong_type = post({"model": MODEL, "input": "hi", "max_output_tokens": "lots"})
    assert "max_output_tokens" in error_of(wrong_type, 400)
    assert "not found" in error_of(httpx.get(url + "/resp_nope"), 404)


def test_a_client_that_leaves_mid_stream_frees_the_slot(one_slot: ServerProcess) -> None:
    def canceled() -> float:
        labels = {"route": "/v1/responses", "outcome": "canceled"}
        return metric(one_slot, "corral_requests_total", labels)

    before = canceled()
    leaving = send(
        one_slot,
        {
            "model": MODEL,
            "input": "Count from 1 to 1000: 1, 2, 3, 4, 5,",
            "max_output_tokens": 4000,
            "temperature": 0,
            "stream": True,
        },
        path="/v1/responses",
    )
    read_until(leaving, b"response.output_text.delta")
    assert in_use(one_slot) == 1
    leaving.shutdown(socket.SHUT_RDWR)
    leaving.close()
    wait_for(lambda: in_use(one_slot) == 0, "the stream to let go", one_slot)
    wait_for(lambda: canceled() == before + 1, "the request to count as canceled", one_slot)
    assert_slot_free(one_slot)
