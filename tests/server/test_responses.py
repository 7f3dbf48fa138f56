"""OpenAI's Responses API without a model: input items as the one internal chat request,
chat chunks as the response object and its numbered events, and the response store."""

from __future__ import annotations

import json
from typing import Any

import pytest

from corral.api.responses import ResponsesRequest
from corral.errors import BadRequestError
from corral.server.responses import (
    ResponseEncoder,
    ResponseStore,
    StoredResponse,
    Translated,
    translate,
)
from tests.server.chat_chunks import chunk, done

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}


def body(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", "input": "hi"} | fields)


def test_items_become_one_chat_request() -> None:
    translated = translate(
        body(
            instructions="Be terse.",
            input=[
                {
                    "type": "message",
                    "role": "developer",
                    "content": [{"type": "input_text", "text": "Rules."}],
                },
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [{"type": "summary_text", "text": "a tool"}],
                },
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "get_weather",
                    "arguments": '{"city": "Paris"}',
                },
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Sunny."}],
                },
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Thanks"}],
                },
            ],
            tools=[WEATHER, {"type": "web_search", "external_web_access": False}],
            tool_choice={"type": "function", "name": "get_weather"},
            max_output_tokens=50,
            temperature=0.2,
            top_p=0.9,
            text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
            reasoning={"effort": "low", "summary": "auto"},
            keep_alive=0,
            options={"num_ctx": 2048},
        ),
        thinks=True,
    )
    req = translated.request
    assert [(m.role, m.content) for m in req.messages] == [
        ("system", "Be terse."),
        ("system", "Rules."),
        ("user", "Weather in Paris?"),
        ("assistant", ""),
        ("tool", "sunny"),
        ("assistant", "Sunny."),
        ("user", "Thanks"),
    ]
    call_turn, tool = req.messages[3], req.messages[4]
    assert call_turn.thinking == "a tool"
    assert call_turn.tool_calls is not None
    assert call_turn.tool_calls[0].id == "c1"
    assert call_turn.tool_calls[0].function.arguments == {"city": "Paris"}
    assert (tool.tool_call_id, tool.tool_name) == ("c1", "get_weather")
    assert req.tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": WEATHER["parameters"],
            },
        }
    ]  # the hosted web_search Codex always sends is dropped
    assert req.tool_choice == {"name": "get_weather"}
    assert req.format == {"type": "object"}
    assert req.think == "low"  # the effort is the level the template sees
    assert req.options == {"num_ctx": 2048, "num_predict": 50, "temperature": 0.2, "top_p": 0.9}
    assert req.keep_alive == 0
    assert len(translated.items) == 7


def test_codex_namespace_and_custom_tools() -> None:
    translated = translate(
        body(
            tools=[
                {
                    "type": "namespace",
                    "name": "agents",
                    "description": "sub-agents",
                    "tools": [
                        {"type": "function", "name": "spawn", "parameters": {"type": "object"}}
                    ],
                },
                {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
            ],
            input=[
                {
                    "type": "custom_tool_call",
                    "call_id": "c1",
                    "name": "apply_patch",
                    "input": "*** patch",
                },
                {"type": "custom_tool_call_output", "call_id": "c1", "output": "done"},
                {
                    "type": "function_call",
                    "call_id": "c2",
                    "namespace": "agents",
                    "name": "spawn",
                    "arguments": "{}",
                },
            ],
        ),
        thinks=False,
    )
    names = [tool["function"]["name"] for tool in translated.request.tools or ()]
    assert names == ["agents.spawn", "apply_patch"]
    assert translated.custom == {"apply_patch"}
    assert translated.namespaces == {"agents"}
    messages = translated.request.messages
    assert messages[0].tool_calls is not None
    assert messages[0].tool_calls[0].function.arguments == {"input": "*** patch"}
    assert messages[2].tool_calls is not None
    assert messages[2].tool_calls[0].function.name == "agents.spawn"


@pytest.mark.parametrize(
    ("effort", "thinks", "expected"),
    [
        (None, True, None),
        ("none", True, False),
        ("minimal", False, None),  # newest Ollama: minimal is the level "low"
        ("minimal", True, "low"),
        ("medium", True, "medium"),  # the level reaches the template (.ThinkLevel)
        ("xhigh", True, "max"),
        ("high", False, None),  # agents ask every model; one that cannot think does not
    ],
)
def test_reasoning_effort(effort: str | None, thinks: bool, expected: bool | str | None) -> None:
    request = translate(body(reasoning={"effort": effort}), thinks=thinks).request
    assert request.think == expected


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [({"type": "text"}, None), ({"type": "json_object"}, "json")],
)
def test_text_format(fmt: dict[str, Any], expected: str | None) -> None:
    assert translate(body(text={"format": fmt}), thinks=False).request.format == expected


def test_previous_items_come_first() -> None:
    previous: list[dict[str, Any]] = [
        {"type": "message", "role": "user", "content": "My name is Ada."},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi Ada."}],
        },
    ]
    translated = translate(
        body(input="What is my name?", instructions="New rules."), thinks=False, previous=previous
    )
    assert [(m.role, m.content) for m in translated.request.messages] == [
        ("system", "New rules."),
        ("user", "My name is Ada."),
        ("assistant", "Hi Ada."),
        ("user", "What is my name?"),
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": None}, "model: Field required"),
        ({"input": None}, "input: Field required"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        (
            {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
        ),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}]},
            "input[0].arguments",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "file inputs are not supported",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "https://x"}]}
                ]
            },
            "base64 data URLs",
        ),
        (
            {"tools": [{"type": "code_interpreter"}]},
            "tools[0].type: the hosted tool 'code_interpreter'",
        ),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"text": {"format": {"type": "json_schema"}}}, "text.format.schema"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
    ],
)
def test_bad_requests_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        translate(body(**fields), thinks=False)
    assert message in caught.value.message


def encoder_for(request: ResponsesRequest, **kwargs: Any) -> tuple[ResponseEncoder, Translated]:
    translated = translate(request, thinks=True)
    return ResponseEncoder("resp_1", request, translated, store=True, **kwargs), translated


def feed(encoder: ResponseEncoder, *chunks: dict[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for item in chunks:
        out += encoder.feed(item)
    wire: list[tuple[str, Any]] = json.loads(json.dumps(out))
    return wire


def test_stream_events_are_numbered_in_order() -> None:
    stored: list[dict[str, Any]] = []
    request = body(tools=[WEATHER], include=["reasoning.encrypted_content"])
    encoder, _ = encoder_for(request, on_done=stored.append)
    call = {
        "id": "call_1",
        "function": {"index": 0, "name": "get_weather", "arguments": {"city": "P"}},
    }
    events = feed(
        encoder,
        chunk(thinking="hm"),
        chunk(thinking=" ok", content="Sure"),
        chunk(content="."),
        chunk(calls=[call]),
        done(),
    )
    assert [name for name, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(data["type"] == name for name, data in events)
    created = events[0][1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    final = events[-1][1]["response"]
    assert final["status"] == "completed"
    assert final["usage"]["input_tokens"] == 7 and final["usage"]["total_tokens"] == 10
    reasoning, message, function = final["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "hm ok"}]
    assert reasoning["encrypted_content"] == "hm ok"
    assert message["content"][0]["text"] == "Sure."
    assert message["status"] == "completed"
    assert function == {
        "id": function["id"],
        "type": "function_call",
        "status": "completed",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": '{"city": "P"}',
    }
    added = events[16][1]["item"]
    assert added["status"] == "in_progress" and added["arguments"] == ""
    assert events[11][1] == {
        "type": "response.output_text.delta",
        "sequence_number": 11,
        "item_id": message["id"],
        "output_index": 1,
        "content_index": 0,
        "delta": "Sure",
        "logprobs": [],
    }
    assert stored == [final]


def test_max_output_tokens_ends_incomplete() -> None:
    encoder, _ = encoder_for(body())
    events = feed(encoder, chunk(content="abc"), done("length"))
    assert events[-1][0] == "response.incomplete"
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_failed_stream() -> None:
    encoder, _ = encoder_for(body())
    feed(encoder, chunk(content="abc"))
    ((name, data),) = encoder.fail(500, "runner died")
    assert name == "response.failed"
    assert data["response"]["status"] == "failed"
    assert data["response"]["error"] == {"code": "server_error", "message": "runner died"}


def test_namespaced_and_custom_calls_come_back_in_their_own_shape() -> None:
    request = body(
        tools=[
            {
                "type": "namespace",
                "name": "agents",
                "tools": [{"type": "function", "name": "spawn"}],
            },
            {"type": "custom", "name": "apply_patch"},
        ]
    )
    encoder, _ = encoder_for(request)
    calls = [
        {"id": "c1", "function": {"name": "agents.spawn", "arguments": {}}},
        {"id": "c2", "function": {"name": "apply_patch", "arguments": {"input": "*** x"}}},
    ]
    events = feed(encoder, chunk(calls=calls), done())
    spawn, patch = events[-1][1]["response"]["output"]
    assert (spawn["namespace"], spawn["name"]) == ("agents", "spawn")
    assert patch["type"] == "custom_tool_call" and patch["input"] == "*** x"
    assert "response.custom_tool_call_input.delta" in [name for name, _ in events]


def test_store_forgets_the_least_recently_used() -> None:
    store = ResponseStore(capacity=2)
    for ident in ("a", "b"):
        store.put(ident, StoredResponse({"id": ident}, []))
    assert store.get("a") is not None  # now b is the oldest
    store.put("c", StoredResponse({"id": "c"}, []))
    assert store.get("b") is None and len(store) == 2
    assert store.delete("a") and not store.delete("a")


def test_a_turn_that_was_all_reasoning_stays_a_turn() -> None:
    items: Any = [
        {"role": "user", "content": "Why?"},
        {"type": "reasoning", "summary": [], "encrypted_content": "because"},
        {"role": "user", "content": "Shorter?"},
        {"type": "reasoning", "content": [{"type": "reasoning_text", "text": "hm"}]},
    ]
    messages = translate(body(input=items), thinks=True).request.messages
    assert [(m.role, m.content, m.thinking) for m in messages] == [
        ("user", "Why?", None),
        ("assistant", "", "because"),
        ("user", "Shorter?", None),
        ("assistant", "", "hm"),
    ]


def test_codex_outputs_without_a_call_keep_their_name() -> None:
    items: Any = [
        {"role": "user", "content": "Go."},
        {
            "type": "function_call_output",
            "name": "goal_objective",
            "namespace": "agent",
            "output": "x",
        },
    ]
    tool = translate(body(input=items), thinks=False).request.messages[1]
    assert (tool.role, tool.content, tool.tool_name, tool.tool_call_id) == (
        "tool",
        "x",
        "agent.goal_objective",
        None,
    )
    with pytest.raises(BadRequestError, match=r"input\[0\].call_id"):
        translate(body(input=[{"type": "function_call_output", "output": "x"}]), thinks=False)
