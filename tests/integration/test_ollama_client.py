"""A real server, a real model, driven by the real ``ollama`` Python client."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0, "seed": 42}


@pytest.fixture(scope="module")
def client(server: ServerProcess, smollm2: str) -> Iterator[ollama.Client]:
    api = ollama.Client(host=server.url)
    yield api
    api._client.close()


def test_root_and_version(server: ServerProcess) -> None:
    response = httpx.get(server.url + "/")
    assert response.status_code == 200
    assert response.text == "Ollama is running"
    assert httpx.head(server.url + "/").status_code == 200
    version = httpx.get(server.url + "/api/version").json()
    assert isinstance(version["version"], str) and version["version"]


def test_generate_non_stream(client: ollama.Client) -> None:
    result = client.generate(
        model="smollm2:135m", prompt="Why is the sky blue?", options={**GREEDY, "num_predict": 24}
    )
    assert result.done
    assert result.done_reason in {"stop", "length"}
    assert result.response.strip()
    assert 0 < result.eval_count <= 24
    assert result.prompt_eval_count and result.prompt_eval_count > 5
    assert result.total_duration and result.total_duration >= (result.eval_duration or 0)
    assert result.context and len(result.context) >= result.prompt_eval_count


def test_generate_stream_matches_non_stream(client: ollama.Client) -> None:
    options = {**GREEDY, "num_predict": 20}
    whole = client.generate(model="smollm2:135m", prompt="Name three colors.", options=options)
    chunks = list(
        client.generate(
            model="smollm2:135m", prompt="Name three colors.", options=options, stream=True
        )
    )
    assert len(chunks) > 2
    assert all(not c.done for c in chunks[:-1])
    assert chunks[-1].done and chunks[-1].eval_count == whole.eval_count
    assert "".join(c.response for c in chunks) == whole.response


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_deterministic_with_seed(
    client: ollama.Client, server: ServerProcess, temperature: float
) -> None:
    # The second request finds its prompt in the cache; the answer must not change.
    options = {"temperature": temperature, "seed": 7, "num_predict": 16}
    client.generate(model="smollm2:135m", prompt="Something else first.", options=options)
    first = client.generate(model="smollm2:135m", prompt="Tell me a story.", options=options)
    read_before = server.metric("corral_prompt_tokens_evaluated_total")
    second = client.generate(model="smollm2:135m", prompt="Tell me a story.", options=options)
    # the whole prompt is counted, as newest Ollama does; the runner read one token of it
    assert second.prompt_eval_count == first.prompt_eval_count > 1
    assert server.metric("corral_prompt_tokens_evaluated_total") - read_before == 1
    assert first.response == second.response


def test_num_predict_honoured(client: ollama.Client) -> None:
    result = client.generate(
        model="smollm2:135m",
        prompt="Write a long essay about rivers.",
        options={**GREEDY, "num_predict": 5},
    )
    assert result.eval_count <= 5
    assert result.done_reason == "length"


def test_stop_sequence(client: ollama.Client) -> None:
    result = client.generate(
        model="smollm2:135m",
        prompt="1, 2, 3, 4,",
        raw=True,
        options={**GREEDY, "num_predict": 30, "stop": [" 7"]},
    )
    assert result.done_reason == "stop"
    assert " 7" not in result.response
    assert "6" in result.response


def test_chat_multi_turn_with_system(client: ollama.Client) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    first = client.chat(
        model="smollm2:135m", messages=messages, options={**GREEDY, "num_predict": 30}
    )
    assert first.message.role == "assistant"
    assert "Paris" in first.message.content
    messages += [
        {"role": "assistant", "content": first.message.content},
        {"role": "user", "content": "And of Italy?"},
    ]
    second = client.chat(
        model="smollm2:135m", messages=messages, options={**GREEDY, "num_predict": 30}
    )
    assert second.message.content.strip()
    assert second.done_reason in {"stop", "length"}


def test_chat_stream(client: ollama.Client) -> None:
    parts = list(
        client.chat(
            model="smollm2:135m",
            messages=[{"role": "user", "content": "Say hello."}],
            stream=True,
            options={**GREEDY, "num_predict": 12},
        )
    )
    assert parts[-1].done
    assert parts[-1].eval_count and parts[-1].eval_count <= 12
    assert "".join(p.message.content for p in parts).strip()


def test_list_show_ps(client: ollama.Client) -> None:
    models = client.list().models
    assert [m.model for m in models] == ["smollm2:135m"]
    assert models[0].size and models[0].size > 90_000_000
    assert models[0].details and models[0].details.family == "llama"
    shown = client.show("smollm2:135m")
    assert shown.details.quantization_level == "Q4_1"
    assert shown.details.parameter_size == "134.52M"
    assert "<|im_start|>" in (shown.template or "")
    assert "stop" in (shown.parameters or "")
    assert shown.modelinfo and shown.modelinfo["general.architecture"] == "llama"
    assert "FROM " in (shown.modelfile or "")
    client.generate(model="smollm2:135m", prompt="hi", options={"num_predict": 1})
    running = client.ps().models
    assert [m.model for m in running] == ["smollm2:135m"]
    assert running[0].expires_at is not None
    assert running[0].size_vram == 0


def test_pull_streams_progress(server: ServerProcess, client: ollama.Client) -> None:
    statuses = [p.status for p in client.pull("smollm2:135m", stream=True)]
    assert statuses[0] == "pulling manifest"
    assert any(s and s.startswith("pulling ") and s != "pulling manifest" for s in statuses)
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]


def test_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model="does-not-exist", prompt="hi")
    assert info.value.status_code == 404
    assert "not found" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="does-not-exist", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404


def test_load_and_unload_with_empty_prompt(server: ServerProcess, client: ollama.Client) -> None:
    loaded = httpx.post(server.url + "/api/generate", json={"model": "smollm2:135m"}).json()
    assert loaded["done_reason"] == "load"
    unloaded = httpx.post(
        server.url + "/api/generate", json={"model": "smollm2:135m", "keep_alive": 0}
    ).json()
    assert unloaded["done_reason"] == "unload"
    assert client.ps().models == []


def test_json_format_and_schema(client: ollama.Client) -> None:
    import json

    import jsonschema

    free = client.generate(
        model="smollm2:135m",
        prompt="Describe a cat as JSON.",
        format="json",
        options={"temperature": 0, "num_predict": 200},
    )
    if free.done_reason == "stop":
        assert isinstance(json.loads(free.response), dict)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 30},
            "colors": {
                "type": "array",
                "items": {"enum": ["black", "white", "orange"]},
                "maxItems": 3,
            },
        },
        "required": ["name", "age", "colors"],
    }
    reply = client.chat(
        model="smollm2:135m",
        messages=[{"role": "user", "content": "Describe a cat."}],
        format=schema,
        options={"temperature": 0, "num_predict": 200},
    )
    assert reply.done_reason == "stop"
    jsonschema.validate(json.loads(reply.message.content), schema)


def test_unusable_schema_is_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model="smollm2:135m", prompt="x", format={"type": "no-such-type"})
    assert info.value.status_code == 400
    assert "schema" in info.value.error


# ---- logprobs (newest Ollama's native fields) ---------------------------------------------


def _check_logprobs(entries: list[Any], top_n: int) -> None:
    assert entries
    for entry in entries:
        assert entry.logprob <= 0
        top = entry.top_logprobs or []
        assert len(top) == top_n
        assert sum(math.exp(t.logprob) for t in top) <= 1 + 1e-6
        assert all(entry.logprob >= t.logprob - 1e-9 for t in top)  # greedy: the argmax


def test_generate_logprobs(client: ollama.Client) -> None:
    options = {**GREEDY, "num_predict": 10}
    whole = client.generate(
        model="smollm2:135m", prompt="Name a fruit.", options=options, logprobs=True, top_logprobs=2
    )
    assert whole.logprobs is not None
    _check_logprobs(list(whole.logprobs), 2)
    assert "".join(e.token for e in whole.logprobs) == whole.response
    assert len(whole.logprobs) == whole.eval_count
    chunks = list(
        client.generate(
            model="smollm2:135m",
            prompt="Name a fruit.",
            options=options,
            logprobs=True,
            top_logprobs=2,
            stream=True,
        )
    )
    streamed = [e for c in chunks for e in c.logprobs or []]
    assert [(e.token, e.logprob) for e in streamed] == [
        (e.token, e.logprob) for e in whole.logprobs
    ]
    assert chunks[-1].done and not chunks[-1].logprobs
    plain = client.generate(model="smollm2:135m", prompt="Name a fruit.", options=options)
    assert plain.logprobs is None


def test_chat_logprobs_in_each_chunk(server: ServerProcess, client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Say hello."}]
    options = {**GREEDY, "num_predict": 8}
    whole = client.chat(model="smollm2:135m", messages=messages, options=options, logprobs=True)
    assert whole.logprobs is not None
    _check_logprobs(list(whole.logprobs), 0)
    assert "".join(e.token for e in whole.logprobs) == whole.message.content
    # raw NDJSON: the entries sit at the top of each chunk, as Ollama puts them
    lines = httpx.post(
        server.url + "/api/chat",
        json={
            "model": "smollm2:135m",
            "messages": messages,
            "options": options,
            "logprobs": True,
            "top_logprobs": 1,
        },
        timeout=60,
    ).text.splitlines()
    chunks = [json.loads(line) for line in lines]
    content = [c for c in chunks if not c["done"]]
    assert all(len(c["logprobs"]) >= 1 for c in content)
    entry = content[0]["logprobs"][0]
    assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
    assert set(entry["top_logprobs"][0]) == {"token", "logprob", "bytes"}
    assert "logprobs" not in chunks[-1]
    bad = httpx.post(
        server.url + "/api/chat",
        json={"model": "smollm2:135m", "messages": messages, "top_logprobs": 25},
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == "top_logprobs must be between 0 and 20"
