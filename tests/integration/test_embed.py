"""Embeddings end to end: a real server, all-minilm pulled from the bundled catalogue."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ollama
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.model

REFERENCE = Path(__file__).resolve().parent.parent / "data" / "minilm_reference.json"


@pytest.fixture(scope="module")
def minilm(server: ServerProcess) -> str:
    started = time.perf_counter()
    response = httpx.post(
        server.url + "/api/pull", json={"model": "all-minilm", "stream": False}, timeout=300
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success"}
    first = time.perf_counter() - started
    assert first < 60
    return "all-minilm"


@pytest.fixture(scope="module")
def client(server: ServerProcess, minilm: str) -> Iterator[ollama.Client]:
    api = ollama.Client(host=server.url)
    yield api
    api._client.close()


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


def test_second_pull_finds_the_converted_blob(server: ServerProcess, minilm: str) -> None:
    lines = httpx.post(
        server.url + "/api/pull", json={"model": "all-minilm:l6-v2"}, timeout=60
    ).text.splitlines()
    events = [json.loads(line) for line in lines]
    pulling = [e for e in events if e["status"].startswith("pulling ") and "total" in e]
    assert pulling[0]["completed"] == pulling[0]["total"]  # nothing converted again
    assert events[-1] == {"status": "success"}
    tags = httpx.get(server.url + "/api/tags").json()["models"]
    names = {m["name"]: m for m in tags}
    assert {"all-minilm:latest", "all-minilm:l6-v2"} <= set(names)
    assert names["all-minilm:latest"]["details"]["family"] == "bert"
    assert names["all-minilm:latest"]["digest"] == names["all-minilm:l6-v2"]["digest"]


def test_embed_list_through_the_ollama_client(client: ollama.Client) -> None:
    result = client.embed(model="all-minilm", input=["The cat sat on the mat.", "Hello!"])
    assert result.model == "all-minilm"
    assert len(result.embeddings) == 2
    for vector in result.embeddings:
        assert len(vector) == 384
        assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-6)
    assert result.prompt_eval_count == 9 + 4  # [CLS] ... [SEP] of each input
    assert result.total_duration is not None and result.load_duration is not None
    assert result.total_duration >= result.load_duration > 0


def test_legacy_embeddings_are_not_normalised(client: ollama.Client) -> None:
    legacy = client.embeddings(model="all-minilm", prompt="The cat sat on the mat.")
    norm = math.sqrt(math.fsum(v * v for v in legacy.embedding))
    assert len(legacy.embedding) == 384
    assert norm > 1.5  # mean pooling of MiniLM: about 5, far from 1
    batch = client.embed(model="all-minilm", input="The cat sat on the mat.")
    assert _cosine(legacy.embedding, batch.embeddings[0]) > 0.99999


def test_vectors_match_sentence_transformers(client: ollama.Client) -> None:
    reference = json.loads(REFERENCE.read_text())
    result = client.embed(model="all-minilm", input=reference["sentences"])
    assert len(result.embeddings) == len(reference["vectors"]) == 20
    cosines = [
        _cosine(got, want)
        for got, want in zip(result.embeddings, reference["vectors"], strict=True)
    ]
    assert min(cosines) >= 0.99, cosines


def test_batched_equals_one_by_one(client: ollama.Client) -> None:
    texts = [f"Sentence number {i} is about {'cats' if i % 2 else 'trains'}." for i in range(40)]
    batch = client.embed(model="all-minilm", input=texts).embeddings
    for index in (0, 17, 39):
        single = client.embed(model="all-minilm", input=texts[index]).embeddings[0]
        assert _cosine(batch[index], single) > 0.9999


def test_related_sentences_score_higher(client: ollama.Client) -> None:
    vectors = client.embed(
        model="all-minilm",
        input=[
            "A man is playing a guitar.",
            "Someone strums an acoustic guitar on stage.",
            "The central bank raised interest rates again.",
            "How to change a flat tyre on a bicycle",
        ],
    ).embeddings
    related = _cosine(vectors[0], vectors[1])
    assert related > _cosine(vectors[0], vectors[2]) + 0.3
    assert related > _cosine(vectors[0], vectors[3]) + 0.3


def test_dimensions_cut_and_renormalise(client: ollama.Client) -> None:
    full = client.embed(model="all-minilm", input="Dimensions").embeddings[0]
    cut = client.embed(model="all-minilm", input="Dimensions", dimensions=64).embeddings[0]
    assert len(cut) == 64
    assert math.isclose(math.fsum(v * v for v in cut), 1.0, rel_tol=1e-6)
    assert _cosine(cut, full[:64]) > 0.99999


def test_long_input_truncated_or_refused(server: ServerProcess, minilm: str) -> None:
    long_text = "word " * 1000
    cut = httpx.post(
        server.url + "/api/embed", json={"model": minilm, "input": long_text}, timeout=60
    )
    assert cut.status_code == 200, cut.text
    assert cut.json()["prompt_eval_count"] == 512
    refused = httpx.post(
        server.url + "/api/embed",
        json={"model": minilm, "input": ["short", long_text], "truncate": False},
        timeout=60,
    )
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length"}
    small_ctx = httpx.post(
        server.url + "/api/embed",
        json={"model": minilm, "input": "one two three four five six", "options": {"num_ctx": 4}},
        timeout=60,
    )
    assert small_ctx.status_code == 200 and small_ctx.json()["prompt_eval_count"] == 4


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/embed", {"model": "all-minilm", "input": 5}, 400, "input"),
        ("/api/embed", {"model": "all-minilm", "input": [1, 2]}, 400, "input"),
        ("/api/embed", {"model": "nope-model", "input": "x"}, 404, "not found"),
        ("/api/embed", {"model": "", "input": "x"}, 400, "model is required"),
        ("/api/embed", {"model": "bad//name", "input": "x"}, 400, "invalid model name"),
        ("/api/embed", {"model": "all-minilm", "input": "x", "dimensions": -3}, 400, "dimensions"),
        ("/api/embed", {"model": "all-minilm", "input": "x", "options": {"num_ctx": "x"}}, 400, ""),
        ("/api/embed", {"model": "all-minilm", "input": "x", "truncate": [1]}, 400, "truncate"),
        ("/api/embeddings", {"prompt": "x"}, 400, "model is required"),
        ("/api/embeddings", {"model": "all-minilm", "prompt": 3}, 400, "prompt"),
    ],
)
def test_bad_input(
    server: ServerProcess, minilm: str, path: str, body: dict[str, Any], status: int, message: str
) -> None:
    response = httpx.post(server.url + path, json=body, timeout=60)
    assert response.status_code == status, response.text[:300]
    assert message in response.json()["error"]
    assert httpx.get(server.url + "/").status_code == 200


def test_empty_input_loads_only(server: ServerProcess, minilm: str) -> None:
    bodies: list[dict[str, Any]] = [{"input": ""}, {"input": []}, {}]
    for body in bodies:
        response = httpx.post(server.url + "/api/embed", json={"model": minilm, **body}, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["embeddings"] == []
    legacy = httpx.post(server.url + "/api/embeddings", json={"model": minilm}, timeout=60)
    assert legacy.json() == {"embedding": []}


def test_generate_and_chat_refused_for_embedding_model(server: ServerProcess, minilm: str) -> None:
    response = httpx.post(
        server.url + "/api/generate", json={"model": minilm, "prompt": "hi"}, timeout=60
    )
    assert response.status_code == 400
    assert response.json() == {"error": f'"{minilm}" does not support generate'}


def test_chat_model_embeds_with_mean_pooling(server: ServerProcess, smollm2: str) -> None:
    api = ollama.Client(host=server.url)
    try:
        result = api.embed(
            model=smollm2, input=["The cat sat on the mat.", "A kitten rests on a rug.", "GDP"]
        )
    finally:
        api._client.close()
    vectors = result.embeddings
    assert len(vectors) == 3 and len(vectors[0]) == 576
    assert all(math.isfinite(v) for v in vectors[0])
    assert math.isclose(math.fsum(v * v for v in vectors[0]), 1.0, rel_tol=1e-6)
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])


def test_langchain_ollama_embeddings(server: ServerProcess, minilm: str) -> None:
    embeddings_module = pytest.importorskip("langchain_ollama")
    model = embeddings_module.OllamaEmbeddings(model=minilm, base_url=server.url)
    try:
        documents = model.embed_documents(["The cat sat on the mat.", "Stocks fell."])
        query = model.embed_query("Where did the cat sit?")
    finally:
        model._client._client.close()  # the sync ollama client's httpx client
    assert len(documents) == 2 and len(query) == 384
    assert _cosine(query, documents[0]) > _cosine(query, documents[1])
