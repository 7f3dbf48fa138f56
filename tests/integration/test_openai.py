"""The OpenAI-compatible API, driven by the real ``openai`` SDK (and raw httpx for framing)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.model

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


@pytest.fixture(scope="module")
def client(server: ServerProcess, smollm2: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as api:
        yield api


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert MODEL in ids
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL
    assert model.object == "model"
    assert model.owned_by == "library"
    assert model.created > 1_600_000_000
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model:1b")
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "not_found_error"
    assert body["code"] == "model_not_found"  # as chat says it
    assert body["message"] == 'model "no-such-model:1b" not found'


def test_chat_non_stream(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name a colour."},
        ],
        max_tokens=16,
        temperature=0,
        seed=7,
    )
    assert result.id.startswith("chatcmpl-")
    assert result.object == "chat.completion"
    assert result.model == MODEL
    assert result.system_fingerprint == "fp_ollama"
    choice = result.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in {"stop", "length"}
    assert result.usage is not None
    assert result.usage.completion_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


def test_chat_max_tokens_gives_length(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_completion_tokens=5,
        temperature=0,
    )
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens == 5


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=12,
            temperature=0,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in {"stop", "length"}
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    # the same request without streaming gives the same text (greedy, same seed)
    whole = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=12,
        temperature=0,
        seed=3,
    )
    assert whole.choices[0].message.content == text


def test_chat_stop_strings(client: openai.OpenAI) -> None:
    question = [{"role": "user", "content": "Tell me about the sea."}]
    base = client.chat.completions.create(
        model=MODEL, messages=question, max_tokens=40, temperature=0
    )
    text = base.choices[0].message.content or ""
    words = text.split()
    assert len(words) > 6, text
    stop = words[5]
    stopped = client.chat.completions.create(
        model=MODEL, messages=question, max_tokens=40, temperature=0, stop=["zzzz-never", stop]
    )
    assert stopped.choices[0].message.content == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    single = client.chat.completions.create(
        model=MODEL, messages=question, max_tokens=40, temperature=0, stop=stop
    )
    assert single.choices[0].message.content == text[: text.index(stop)]


def test_response_format_json_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    result = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Invent a person. Answer in JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema},
        },
        temperature=0,
        max_tokens=80,
    )
    data = json.loads(result.choices[0].message.content or "")
    jsonschema.validate(data, schema)


def test_response_format_json_object(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give me a JSON object with a name and a colour."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=120,
        frequency_penalty=0.5,
    )
    assert result.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(result.choices[0].message.content or ""), dict)


def test_tools_required_then_tool_result_round_trip(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="required", temperature=0
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments.get("city"), str)
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "22 degrees, sunny"})
    second = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=40
    )
    assert second.choices[0].finish_reason in {"stop", "length"}
    assert second.choices[0].message.content
    assert not second.choices[0].message.tool_calls


def test_tools_named_choice_streamed(client: openai.OpenAI) -> None:
    other = {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
        },
    }
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What is the weather in Rome?"}],
            tools=[WEATHER, other],
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            temperature=0,
            stream=True,
        )
    )
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1
    assert calls[0].function and calls[0].function.name == "get_time"
    assert calls[0].index == 0
    assert isinstance(json.loads(calls[0].function.arguments or ""), dict)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_options_through_extra_body(server: ServerProcess, client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=2,
        extra_body={"options": {"num_ctx": 6144}, "keep_alive": "7m"},
    )
    loaded = [m for m in httpx.get(server.url + "/api/ps").json()["models"] if m["name"] == MODEL]
    assert [m["context_length"] for m in loaded] == [6144]
    expires = datetime.fromisoformat(loaded[0]["expires_at"])
    left = (expires - datetime.now(expires.tzinfo)).total_seconds()
    assert 6 * 60 < left <= 7 * 60


def test_completions(client: openai.OpenAI) -> None:
    result = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert result.id.startswith("cmpl-")
    assert result.object == "text_completion"
    assert result.choices[0].text.strip()
    assert result.choices[0].finish_reason in {"stop", "length"}
    assert result.usage is not None and result.usage.completion_tokens > 0
    streamed = list(
        client.completions.create(
            model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == result.choices[0].text
    with pytest.raises(openai.BadRequestError, match="echo"):
        client.completions.create(model=MODEL, prompt="x", echo=True)


def test_errors_are_openai_shaped(server: ServerProcess, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="missing-model", messages=[{"role": "user", "content": "x"}]
        )
    body = missing.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found" and body["type"] == "not_found_error"
    assert "missing-model" in body["message"]
    with pytest.raises(openai.BadRequestError, match="too short"):
        client.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError, match="image URLs"):
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}
                    ],
                }
            ],
        )
    raw = httpx.post(server.url + "/v1/chat/completions", content=b"{not json")
    assert raw.status_code == 400
    error = raw.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    bad_stop = httpx.post(
        server.url + "/v1/completions", json={"model": MODEL, "prompt": "x", "stop": [1]}
    )
    assert bad_stop.status_code == 400
    assert bad_stop.json()["error"]["message"] == "invalid type for 'stop' field: float64"


def test_sse_framing_raw(server: ServerProcess) -> None:
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
            "stream": True,
        },
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    for event in events[:-2]:
        assert event.startswith("data: ")
        json.loads(event.removeprefix("data: "))


def test_async_client(server: ServerProcess, smollm2: str) -> None:
    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x") as api:

            async def one(i: int) -> str:
                result = await api.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"Say the number {i}."}],
                    max_tokens=8,
                    temperature=0,
                )
                return result.choices[0].message.content or ""

            return list(await asyncio.gather(*(one(i) for i in range(3))))

    answers = asyncio.run(main())
    assert len(answers) == 3 and all(a.strip() for a in answers)


def test_embeddings(server: ServerProcess, client: openai.OpenAI) -> None:
    pulled = httpx.post(
        server.url + "/api/pull", json={"model": "all-minilm", "stream": False}, timeout=300
    )
    assert pulled.status_code == 200, pulled.text
    result = client.embeddings.create(
        model="all-minilm", input=["A cat sits on the mat.", "A kitten rests on a rug.", "Tax law."]
    )
    assert result.object == "list" and result.model == "all-minilm"
    vectors = [d.embedding for d in result.data]
    assert [d.index for d in result.data] == [0, 1, 2]
    assert all(len(v) == 384 for v in vectors)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
    assert result.usage.prompt_tokens > 0
    # the SDK asks for base64 by default when numpy is there; ask for it explicitly too
    encoded = client.embeddings.create(
        model="all-minilm", input="A cat sits on the mat.", encoding_format="base64"
    )
    raw = encoded.data[0].embedding  # asked for explicitly, the SDK hands base64 over as is
    assert isinstance(raw, str)
    decoded = list(struct.unpack("<384f", base64.b64decode(raw)))
    assert abs(cos(decoded, vectors[0]) - 1) < 1e-5
    short = client.embeddings.create(model="all-minilm", input="hello", dimensions=64)
    assert len(short.data[0].embedding) == 64
    bad = httpx.post(
        server.url + "/v1/embeddings",
        json={"model": "all-minilm", "input": "x", "encoding_format": "int8"},
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["message"].startswith("Invalid value for 'encoding_format'")
    empty = httpx.post(server.url + "/v1/embeddings", json={"model": "all-minilm", "input": []})
    assert empty.status_code == 400
    assert empty.json()["error"]["message"].startswith("invalid input")


# ---- logprobs ----------------------------------------------------------------------------


def _check_greedy_entries(entries: list[Any], top_n: int) -> None:
    """Each sampled token under greedy decoding is the argmax: no alternative beats it."""
    assert entries
    for entry in entries:
        assert entry.logprob <= 0
        assert entry.bytes is not None
        assert bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token
        assert len(entry.top_logprobs) == top_n
        assert sum(math.exp(top.logprob) for top in entry.top_logprobs) <= 1 + 1e-6
        assert all(entry.logprob >= top.logprob - 1e-9 for top in entry.top_logprobs)
        if top_n:
            assert entry.top_logprobs[0].token == entry.token


def test_chat_logprobs(client: openai.OpenAI) -> None:
    question: list[Any] = [{"role": "user", "content": "Name three colours."}]
    result = client.chat.completions.create(
        model=MODEL, messages=question, max_tokens=10, temperature=0, logprobs=True, top_logprobs=3
    )
    choice = result.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    _check_greedy_entries(entries, 3)
    assert "".join(e.token for e in entries) == choice.message.content
    assert result.usage is not None and len(entries) == result.usage.completion_tokens
    # streamed: each content chunk carries the entries of its tokens
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=question,
            max_tokens=10,
            temperature=0,
            logprobs=True,
            top_logprobs=3,
            stream=True,
        )
    )
    streamed = [
        e
        for c in chunks
        if c.choices and c.choices[0].logprobs and c.choices[0].logprobs.content
        for e in c.choices[0].logprobs.content
    ]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in entries]
    # logprobs without top_logprobs: the sampled token only
    only = client.chat.completions.create(
        model=MODEL, messages=question, max_tokens=4, temperature=0, logprobs=True
    )
    assert only.choices[0].logprobs and only.choices[0].logprobs.content
    assert all(e.top_logprobs == [] for e in only.choices[0].logprobs.content)


def test_no_logprobs_unless_asked(server: ServerProcess, client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
    )
    assert result.choices[0].logprobs is None
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
            "stream": True,
        },
        timeout=60,
    ) as response:
        raw = response.read().decode()
    payloads = [e.removeprefix("data: ") for e in raw.split("\n\n") if e.startswith("data: {")]
    assert payloads and all(json.loads(p)["choices"][0]["logprobs"] is None for p in payloads)


def test_logprobs_out_of_range_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="top_logprobs must be between 0 and 20"):
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            logprobs=True,
            top_logprobs=21,
        )
    with pytest.raises(openai.BadRequestError, match="top_logprobs must be between 0 and 20"):
        client.completions.create(model=MODEL, prompt="Hi", logprobs=-1)


def test_completions_logprobs(client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    result = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=8, temperature=0, logprobs=2
    )
    choice = result.choices[0]
    logprobs = choice.logprobs
    assert logprobs is not None
    tokens, values = logprobs.tokens or [], logprobs.token_logprobs or []
    offsets, tops = logprobs.text_offset or [], logprobs.top_logprobs or []
    assert "".join(tokens) == choice.text
    assert len(tokens) == len(values) == len(offsets) == len(tops) > 0
    assert offsets == [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    for token, value, top in zip(tokens, values, tops, strict=True):
        assert token in top and top[token] == value  # the sampled token is among them
        assert 1 <= len(top) <= 3 and value == max(top.values())  # greedy
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-6
    streamed = list(
        client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=8, temperature=0, logprobs=2, stream=True
        )
    )
    parts = [c.choices[0].logprobs for c in streamed if c.choices and c.choices[0].logprobs]
    assert [t for p in parts for t in p.tokens or []] == tokens
    assert [o for p in parts for o in p.text_offset or []] == offsets
    plain = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0)
    assert plain.choices[0].logprobs is None and plain.choices[0].text == choice.text


# ---- completions suffix, embeddings of token arrays ----------------------------------------


def test_completions_suffix_needs_an_insert_template(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="def add(a, b):", suffix="return c")
    assert caught.value.message.endswith("smollm2:135m does not support insert")


def _vocab_tokenize(model_path: str, text: str) -> list[int]:
    """The ids the runner's tokenizer gives ``text`` (with CLS/SEP), from the GGUF's vocab."""
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(model_path.encode(), params)
    assert model
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        data = text.encode()
        buffer = (llama_cpp.llama_token * 512)()
        count = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, 512, True, False)
        assert count > 0
        return list(buffer[:count])
    finally:
        llama_cpp.llama_model_free(model)


def test_embeddings_of_token_arrays(server: ServerProcess, client: openai.OpenAI) -> None:
    pulled = httpx.post(
        server.url + "/api/pull", json={"model": "all-minilm", "stream": False}, timeout=300
    )
    assert pulled.status_code == 200, pulled.text
    shown = httpx.post(server.url + "/api/show", json={"model": "all-minilm"}).json()
    blob = next(
        line.split(" ", 1)[1]
        for line in shown["modelfile"].splitlines()
        if line.startswith("FROM /")
    )
    texts = ["A cat sits on the mat.", "Tax law."]
    ids = [_vocab_tokenize(blob, text) for text in texts]
    by_text = client.embeddings.create(model="all-minilm", input=texts, encoding_format="float")
    by_ids = client.embeddings.create(model="all-minilm", input=ids, encoding_format="float")
    one = client.embeddings.create(model="all-minilm", input=ids[0], encoding_format="float")
    for a, b in zip(by_text.data, by_ids.data, strict=True):
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding, strict=True)) < 1e-5
    assert (
        max(
            abs(x - y)
            for x, y in zip(one.data[0].embedding, by_text.data[0].embedding, strict=True)
        )
        < 1e-5
    )
    assert by_ids.usage.prompt_tokens == by_ids.usage.total_tokens == sum(len(i) for i in ids)
    assert one.usage.prompt_tokens == len(ids[0])
    for bad, message in [
        ([[1, 2], []], "non-empty"),
        ([[1, -2]], "non-negative"),
        ([1, "x"], "invalid input"),
        ([[10_000_000]], "token id 10000000 is out of range"),
    ]:
        response = httpx.post(
            server.url + "/v1/embeddings", json={"model": "all-minilm", "input": bad}
        )
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]["message"]
    assert httpx.get(server.url + "/api/version").status_code == 200
