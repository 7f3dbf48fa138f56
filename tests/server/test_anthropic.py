"""Anthropic's Messages API without a model: the request as the one internal chat request,
and chat chunks as Anthropic's message and its exact event sequence."""

from __future__ import annotations

import json
from typing import Any

import pytest

from corral.api.anthropic import CountTokensRequest, MessagesRequest
from corral.errors import BadRequestError
from corral.server.anthropic import MessageEncoder, chat_request, error_body
from corral.server.relay import FinalChunk
from tests.server.chat_chunks import chunk, done

WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def request(**fields: Any) -> MessagesRequest:
    body = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    return MessagesRequest.model_validate(body | fields)


def test_a_full_request_becomes_one_chat_request() -> None:
    req = chat_request(
        request(
            system=[
                {"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Use tools."},
            ],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "a tool", "signature": "s"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "sunny"}],
                        },
                        {"type": "text", "text": "And so?"},
                    ],
                },
            ],
            tools=[WEATHER, {"type": "web_search_20250305", "name": "web_search"}],
            tool_choice={"type": "tool", "name": "get_weather"},
            stop_sequences=["END"],
            temperature=0.5,
            top_p=0.9,
            top_k=20,
            metadata={"user_id": "u"},
            keep_alive="1m",
            options={"num_ctx": 8192},
        ),
        thinks=False,
    )
    assert req.model == "m"
    assert [(m.role, m.content) for m in req.messages] == [
        ("system", "Be terse.\nUse tools."),
        ("user", "Weather in Paris?"),
        ("assistant", "Checking."),
        ("tool", "sunny"),  # the result answers the call before it, ahead of the user's text
        ("user", "And so?"),
    ]
    assistant, tool = req.messages[2], req.messages[3]
    assert assistant.thinking == "a tool"
    assert assistant.tool_calls is not None
    assert assistant.tool_calls[0].id == "toolu_1"
    assert assistant.tool_calls[0].function.arguments == {"city": "Paris"}
    assert (tool.tool_call_id, tool.tool_name) == ("toolu_1", "get_weather")
    assert req.tools == [  # Anthropic's own server tool is dropped: nothing here runs it
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    assert req.tool_choice == {"name": "get_weather"}
    assert req.options == {
        "num_ctx": 8192,
        "num_predict": 16,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 20,
        "stop": ["END"],
    }
    assert req.keep_alive == 60


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none")],
)
def test_tool_choice(choice: dict[str, Any], expected: str) -> None:
    req = chat_request(request(tools=[WEATHER], tool_choice=choice), thinks=False)
    assert req.tool_choice == expected


@pytest.mark.parametrize(
    ("thinking", "thinks", "expected"),
    [
        (None, True, None),
        ({"type": "enabled", "budget_tokens": 1024}, True, True),
        ({"type": "adaptive"}, True, True),
        ({"type": "adaptive"}, False, None),  # a wish: dropped where the model cannot think
        ({"type": "enabled", "budget_tokens": 1024}, False, None),
        ({"type": "disabled"}, True, False),
    ],
)
def test_thinking(thinking: dict[str, Any] | None, thinks: bool, expected: bool | None) -> None:
    assert chat_request(request(thinking=thinking), thinks=thinks).think == expected


def test_structured_output_and_tool_results_that_failed() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = chat_request(
        request(
            output_config={"format": {"type": "json_schema", "schema": schema}},
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": "boom",
                            "is_error": True,
                        }
                    ],
                }
            ],
        ),
        thinks=False,
    )
    assert req.format == schema
    assert [(m.role, m.content) for m in req.messages] == [("tool", "Error: boom")]
    beta = chat_request(
        request(output_format={"type": "json_schema", "schema": schema}), thinks=False
    )
    assert beta.format == schema


def test_images_reach_the_chat_request() -> None:
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    req = chat_request(request(messages=[{"role": "user", "content": [image]}]), thinks=False)
    assert req.messages[0].images == ["AAAA"]  # open_chat answers: does not support vision


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": ""}, "model: Field required"),
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"messages": []}, "messages: at least one message is required"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages.0.content.0"),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_use", "name": "x"}]}]},
            "messages.0.content.0.id",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "url", "url": "u"}}],
                    }
                ]
            },
            "only base64 images",
        ),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"thinking": {"type": "maybe"}}, "thinking.type"),
        ({"output_config": {"format": {"type": "regex"}}}, "output_config.format"),
        ({"system": [{"type": "image"}]}, "system.0"),
    ],
)
def test_bad_requests_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        chat_request(request(**fields), thinks=False)
    assert message in caught.value.message


def test_count_tokens_request_needs_no_max_tokens() -> None:
    body = CountTokensRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER]}
    )
    req = chat_request(body, thinks=False)
    assert req.tools is not None and req.options is None


def events_of(encoder: MessageEncoder, *chunks: dict[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for item in chunks:
        out += encoder.feed(item)
    wire: list[tuple[str, Any]] = json.loads(json.dumps(out))  # what goes on the wire
    return wire


def test_stream_of_thinking_text_and_a_tool_call() -> None:
    encoder = MessageEncoder("msg_1", "m")
    call = {
        "id": "call_1",
        "function": {"index": 0, "name": "get_weather", "arguments": {"city": "P"}},
    }
    events = events_of(
        encoder,
        chunk(thinking="hm"),
        chunk(thinking=" ok", content="Sure"),
        chunk(content="."),
        chunk(calls=[call]),
        done(),
    )
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    }
    assert events[3][1]["delta"] == {"type": "thinking_delta", "thinking": "hm"}
    assert events[6][1]["content_block"] == {"type": "text", "text": ""}
    assert events[7][1] == {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "text_delta", "text": "Sure"},
    }
    tool_start = events[10][1]["content_block"]
    assert tool_start["type"] == "tool_use" and tool_start["input"] == {}
    assert tool_start["id"].startswith("toolu_") and tool_start["name"] == "get_weather"
    assert events[11][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"city": "P"}'}
    assert events[13][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 7, "output_tokens": 3},
    }
    message = encoder.message()
    assert message["content"] == [
        {"type": "thinking", "thinking": "hm ok", "signature": ""},
        {"type": "text", "text": "Sure."},
        {"type": "tool_use", "id": tool_start["id"], "name": "get_weather", "input": {"city": "P"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {"input_tokens": 7, "output_tokens": 3}


@pytest.mark.parametrize(
    ("final", "reason", "sequence"),
    [
        (done("stop"), "end_turn", None),
        (done("length"), "max_tokens", None),
        (FinalChunk(done("stop"), stop_sequence="END"), "stop_sequence", "END"),
        # a model's own stop string (not one the request asked for) ends the turn
        (FinalChunk(done("stop"), stop_sequence="<|im_end|>"), "end_turn", None),
        # never read from a field of the chunk: Ollama's chunks have none
        (done("stop", stop_sequence="END"), "end_turn", None),
    ],
)
def test_stop_reasons(final: dict[str, Any], reason: str, sequence: str | None) -> None:
    encoder = MessageEncoder("msg_1", "m", stop_sequences=["END"])
    events_of(encoder, chunk(content="x"), final)
    assert (encoder.stop_reason, encoder.stop_sequence) == (reason, sequence)


def test_an_empty_answer_still_pings_and_stops() -> None:
    names = [name for name, _ in events_of(MessageEncoder("msg_1", "m"), done())]
    assert names == ["message_start", "ping", "message_delta", "message_stop"]


def test_errors_in_anthropic_shape() -> None:
    assert error_body(400, "bad") == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad"},
    }
    assert error_body(404, "x")["error"]["type"] == "not_found_error"
    assert error_body(503, "x")["error"]["type"] == "overloaded_error"
    assert error_body(500, "x")["error"]["type"] == "api_error"
    assert MessageEncoder("m", "m").fail(500, "boom") == [("error", error_body(500, "boom"))]


def test_system_messages_in_the_conversation_join_the_system_prompt() -> None:
    req = chat_request(
        request(
            system="Be terse.",
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "Agents: explore, plan."},
                {"role": "system", "content": [{"type": "text", "text": "Today is Monday."}]},
            ],
        ),
        thinks=False,
    )
    assert [(m.role, m.content) for m in req.messages] == [
        ("system", "Be terse.\n\nAgents: explore, plan.\n\nToday is Monday."),
        ("user", "hi"),
    ]
