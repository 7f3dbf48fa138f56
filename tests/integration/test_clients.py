"""Tools, thinking and structured output through real clients: ``ollama``, LangChain's
``ChatOllama``, and raw HTTP for the native ``tool_choice`` extension; plus the request
pattern Open WebUI sends (many tools, a title request running beside the answer)."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama
from pydantic import BaseModel, Field

from tests.conftest import ServerProcess
from tests.integration.chat_templates import CHATML, THINKER, TOOLCALLER

pytestmark = [
    pytest.mark.model,
    # LangChain's clients leave their sockets to the garbage collector
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

MODEL = "smollm2:135m"
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city"}},
            "required": ["city"],
        },
    },
}
GREEDY = {"temperature": 0, "seed": 1}


def _create(server: ServerProcess, name: str, template: str) -> None:
    response = httpx.post(
        server.url + "/api/create",
        json={"model": name, "from": MODEL, "template": template, "stream": False},
        timeout=120,
    )
    assert response.status_code == 200, response.text


@pytest.fixture(autouse=True)
def _collect_langchain_clients() -> Iterator[None]:
    """LangChain's clients leave sockets to the garbage collector: collect them while this
    module's warning filters apply, not during a later module's test."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def client(server: ServerProcess, smollm2: str) -> Iterator[ollama.Client]:
    assert TOOLCALLER != CHATML and THINKER != CHATML
    _create(server, "toolcaller", TOOLCALLER)
    _create(server, "thinker", THINKER)
    api = ollama.Client(host=server.url)
    yield api
    api._client.close()


def test_ollama_tool_call_round_trip(client: ollama.Client) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat(model="toolcaller", messages=messages, tools=[WEATHER], options=GREEDY)
    calls = first.message.tool_calls
    assert calls and len(calls) == 1
    assert calls[0].function.name == "get_weather"
    assert isinstance(calls[0].function.arguments.get("city"), str)
    assert first.message.content == ""
    messages.append(first.message)
    messages.append({"role": "tool", "content": "22 degrees and sunny", "tool_name": "get_weather"})
    second = client.chat(
        model="toolcaller",
        messages=messages,
        tools=[WEATHER],
        options={**GREEDY, "num_predict": 40},
    )
    assert not second.message.tool_calls
    assert second.message.content.strip()


def test_ollama_tool_call_streamed(client: ollama.Client) -> None:
    chunks = list(
        client.chat(
            model="toolcaller",
            messages=[{"role": "user", "content": "Weather in Oslo?"}],
            tools=[WEATHER],
            options=GREEDY,
            stream=True,
        )
    )
    calls = [c for chunk in chunks for c in chunk.message.tool_calls or []]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert chunks[-1].done
    assert not "".join(chunk.message.content for chunk in chunks).strip()


def test_native_tool_choice(server: ServerProcess, client: ollama.Client) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [WEATHER],
        "tool_choice": "required",
        "stream": False,
        "options": GREEDY,
    }
    forced = httpx.post(server.url + "/api/chat", json=body, timeout=120).json()
    assert forced["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    none = httpx.post(
        server.url + "/api/chat",
        json={**body, "tool_choice": "none", "options": {**GREEDY, "num_predict": 16}},
        timeout=120,
    ).json()
    assert "tool_calls" not in none["message"] and none["message"]["content"]
    bad = httpx.post(server.url + "/api/chat", json={**body, "tool_choice": "sometimes"})
    assert bad.status_code == 400 and "tool_choice" in bad.json()["error"]
    unknown = httpx.post(
        server.url + "/api/chat",
        json={**body, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
    )
    assert unknown.status_code == 400 and "nope" in unknown.json()["error"]


def test_tools_on_a_model_without_tool_support(
    server: ServerProcess, client: ollama.Client
) -> None:
    _create(server, "plain", "{{ .Prompt }}")
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="plain", messages=[{"role": "user", "content": "x"}], tools=[WEATHER])
    assert caught.value.status_code == 400
    assert "does not support tools" in caught.value.error


def test_think(client: ollama.Client) -> None:
    thought = client.chat(
        model="thinker",
        messages=[{"role": "user", "content": "What is 2+2?"}],
        think=True,
        options={**GREEDY, "num_predict": 24},
    )
    assert thought.message.thinking and thought.message.thinking.strip()
    assert "<think>" not in (thought.message.content or "")
    plain = client.chat(
        model="thinker",
        messages=[{"role": "user", "content": "What is 2+2?"}],
        think=False,
        options={**GREEDY, "num_predict": 24},
    )
    assert not plain.message.thinking and plain.message.content.strip()
    generated = client.generate(
        model="thinker", prompt="What is 2+2?", think=True, options={**GREEDY, "num_predict": 8}
    )
    assert generated.thinking and not generated.response
    shown = client.show("thinker")
    assert shown.capabilities is not None and "thinking" in shown.capabilities
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model=MODEL, messages=[{"role": "user", "content": "x"}], think=True)
    assert caught.value.status_code == 400
    assert caught.value.error == f'"{MODEL}" does not support thinking'


def test_langchain_invoke_and_stream(server: ServerProcess, client: ollama.Client) -> None:
    llm = ChatOllama(model=MODEL, base_url=server.url, temperature=0, num_predict=16)
    answer = llm.invoke([HumanMessage("Say hello.")])
    assert isinstance(answer, AIMessage) and str(answer.content).strip()
    assert answer.usage_metadata and answer.usage_metadata["output_tokens"] > 0
    streamed = "".join(str(chunk.content) for chunk in llm.stream("Say hello."))
    assert streamed == answer.content


def test_langchain_bind_tools_round_trip(server: ServerProcess, client: ollama.Client) -> None:
    @tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return f"22 degrees and sunny in {city}"

    llm = ChatOllama(model="toolcaller", base_url=server.url, temperature=0, num_predict=48)
    bound = llm.bind_tools([get_weather])
    question = HumanMessage("What is the weather in Paris?")
    reply = bound.invoke([question])
    assert isinstance(reply, AIMessage)
    assert [c["name"] for c in reply.tool_calls] == ["get_weather"]
    call = reply.tool_calls[0]
    result = get_weather.invoke(call["args"])
    final = bound.invoke(
        [question, reply, ToolMessage(content=result, tool_call_id=call["id"] or "")]
    )
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert str(final.content).strip()


def test_langchain_structured_output(server: ServerProcess, client: ollama.Client) -> None:
    class City(BaseModel):
        name: str = Field(max_length=30)
        country: str = Field(max_length=30)

    llm = ChatOllama(model=MODEL, base_url=server.url, temperature=0, num_predict=80)
    structured = llm.with_structured_output(City, method="json_schema")
    city = structured.invoke("Name a famous city and its country.")
    assert isinstance(city, City) and city.name and city.country


def test_open_webui_pattern(server: ServerProcess, client: ollama.Client) -> None:
    """36 tools on every message, a non-streamed title request beside the streamed answer:
    both finish, the title does not wait for the answer, and /api/ps stays quick."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": f"Tool number {i} does something useful with its input.",
                "parameters": {
                    "type": "object",
                    "properties": {"query": {"type": "string", "description": "what to do"}},
                    "required": ["query"],
                },
            },
        }
        for i in range(36)
    ]
    done: dict[str, float] = {}
    started = time.monotonic()

    def title() -> None:
        response = httpx.post(
            server.url + "/api/chat",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Title for: tell me about otters"}],
                "stream": False,
                "options": {"num_predict": 12},
            },
            timeout=300,
        )
        assert response.status_code == 200
        done["title"] = time.monotonic() - started

    thread = threading.Thread(target=title)
    thread.start()
    with httpx.stream(
        "POST",
        server.url + "/api/chat",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "Tell me about otters."}],
            "tools": tools,
            "options": {"num_predict": 64},
        },
        timeout=300,
    ) as response:
        assert response.status_code == 200
        polls = []
        for i, _ in enumerate(response.iter_lines()):
            if i % 16 == 0:
                t0 = time.monotonic()
                assert httpx.get(server.url + "/api/ps", timeout=5).status_code == 200
                polls.append(time.monotonic() - t0)
    done["answer"] = time.monotonic() - started
    thread.join(timeout=300)
    assert "title" in done
    assert done["title"] < done["answer"]
    assert max(polls) < 1.0


@pytest.mark.timeout(900)  # a prefill of 8192 tokens on two shared cores
def test_open_webui_tools_longer_than_the_context(
    server: ServerProcess, client: ollama.Client
) -> None:
    """Open WebUI's tools with real descriptions outgrow the default 4096-token context, and
    this model's training length too (about 9800 tokens): the runner loads with all of its
    8192 and the request still answers, the prompt cut to it keeping its start and the
    user's last message at its end (tests/runner/test_sampling_and_keep.py checks which
    tokens)."""
    description = (
        "Search the user's knowledge base, files, notes and web bookmarks for documents that"
        " match the query, rank them by relevance and recency, and return short excerpts."
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"workspace_tool_{i}",
                "description": f"{description} Variant {i}.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        name: {"type": "string", "description": f"{name}: {description}"}
                        for name in ("query", "scope", "language", "since")
                    },
                    "required": ["query"],
                },
            },
        }
        for i in range(36)
    ]
    response = httpx.post(
        server.url + "/api/chat",
        json={
            "model": MODEL,
            "messages": [
                {"role": "user", "content": "Hello!"},
                {"role": "assistant", "content": "Hi! How can I help?"},
                {"role": "user", "content": "Tell me one fact about otters."},
            ],
            "tools": tools,
            "stream": False,
            "options": {"num_predict": 16},  # only to bound the test's time
        },
        timeout=600,
    )
    assert response.status_code == 200, response.text
    final = response.json()
    assert final["done"] is True
    assert 4096 < final["prompt_eval_count"] <= 8192  # more than the default could hold
    assert httpx.get(server.url + "/", timeout=5).status_code == 200
    loaded = httpx.get(server.url + "/api/ps", timeout=5).json()["models"]
    assert next(m["context_length"] for m in loaded if m["name"] == MODEL) == 8192
    # and the log says what was cut (the older messages; the tools alone overflow)
    assert (
        f"the chat for {MODEL} does not fit its context (num_ctx 8192): dropped the 2 oldest"
    ) in server.log_path.read_text()
