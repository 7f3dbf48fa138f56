"""Reranking end to end: a tiny random cross-encoder folder created on a real server (converted
there), scored through the scheduler and a real runner, on every rerank path."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ServerProcess
from tests.convert.tiny import write_tiny_bert
from tests.convert.tiny_rerank import pair_ids, reference_score, write_tiny_cross_encoder

pytestmark = pytest.mark.model

QUERY = "the cat sat"
DOCUMENTS = ["a dog runs", "the cat sat on a mat.", "cats, dogs", "the mat", "running dogs sat"]


@pytest.fixture(scope="module")
def reranker(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("ce") / "cross-encoder"
    tensors = write_tiny_cross_encoder(folder)
    response = httpx.post(
        server.url + "/api/create",
        json={"model": "tiny-rerank", "from": str(folder), "stream": False},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return tensors


@pytest.fixture(scope="module")
def embedder(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("bert") / "bert"
    write_tiny_bert(folder)
    response = httpx.post(
        server.url + "/api/create",
        json={"model": "tiny-embed", "from": str(folder), "stream": False},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return "tiny-embed"


def _post(server: ServerProcess, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=120)


def _want(tensors: dict[str, Any]) -> list[float]:
    return [reference_score(tensors, QUERY, doc) for doc in DOCUMENTS]


def test_api_rerank_sorts_by_the_model_s_scores(
    server: ServerProcess, reranker: dict[str, Any]
) -> None:
    body = {"model": "tiny-rerank", "query": QUERY, "documents": DOCUMENTS}
    response = _post(server, "/api/rerank", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    want = _want(reranker)
    assert answer["model"] == "tiny-rerank"
    results = answer["results"]
    assert [r["index"] for r in results] == sorted(range(5), key=lambda i: -want[i])
    got = [r["relevance_score"] for r in sorted(results, key=lambda r: r["index"])]
    # the folder was converted to f16 on create: scores within f16's rounding
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-2)
    assert all("document" not in r for r in results)
    tokens = sum(len(pair_ids(QUERY, d)[0]) for d in DOCUMENTS)
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert answer["prompt_eval_count"] == tokens
    assert answer["total_duration"] >= answer["load_duration"] > 0


def test_top_n_and_return_documents(server: ServerProcess, reranker: dict[str, Any]) -> None:
    documents: list[Any] = [*DOCUMENTS[:4], {"text": DOCUMENTS[4]}]  # Cohere's object form
    body = {
        "model": "tiny-rerank",
        "query": QUERY,
        "documents": documents,
        "top_n": 2,
        "return_documents": True,
    }
    answer = _post(server, "/v1/rerank", body).json()
    want = _want(reranker)
    best = sorted(range(5), key=lambda i: -want[i])[:2]
    assert [r["index"] for r in answer["results"]] == best
    assert [r["document"] for r in answer["results"]] == [{"text": DOCUMENTS[i]} for i in best]
    assert "total_duration" not in answer  # Ollama's counters on /api/rerank only
    # a top_n beyond the documents returns them all
    body["top_n"] = 50
    assert len(_post(server, "/v1/reranking", body).json()["results"]) == 5


def test_cohere_v2_and_tei_paths(server: ServerProcess, reranker: dict[str, Any]) -> None:
    want = _want(reranker)
    order = sorted(range(5), key=lambda i: -want[i])
    v2 = _post(
        server, "/v2/rerank", {"model": "tiny-rerank", "query": QUERY, "documents": DOCUMENTS}
    )
    assert [r["index"] for r in v2.json()["results"]] == order
    tei = _post(
        server,
        "/api/rerank",
        {"model": "tiny-rerank", "query": QUERY, "texts": DOCUMENTS, "return_text": True},
    ).json()
    assert isinstance(tei, list) and [r["index"] for r in tei] == order
    assert tei[0]["text"] == DOCUMENTS[order[0]] and "score" in tei[0]


def test_keep_alive_zero_unloads(server: ServerProcess, reranker: dict[str, Any]) -> None:
    body = {"model": "tiny-rerank", "query": QUERY, "documents": ["a dog"], "keep_alive": 0}
    assert _post(server, "/api/rerank", body).status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        loaded = httpx.get(server.url + "/api/ps", timeout=10).json()["models"]
        if not any(m["name"].startswith("tiny-rerank") for m in loaded):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the reranker stayed loaded with keep_alive 0")


def test_truncate_false_refuses_a_long_pair(
    server: ServerProcess, reranker: dict[str, Any]
) -> None:
    long_doc = " ".join(["the cat sat on a mat."] * 20)
    body = {
        "model": "tiny-rerank",
        "query": QUERY,
        "documents": [long_doc],
        "options": {"num_ctx": 32},
        "truncate": False,
    }
    response = _post(server, "/api/rerank", body)
    assert response.status_code == 400
    assert response.json() == {"error": "the input length exceeds the context length"}
    body["truncate"] = True
    answer = _post(server, "/api/rerank", body).json()
    assert answer["usage"]["prompt_tokens"] == 32


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"query": "q", "documents": ["d"]}, 400, "model is required"),
        ({"model": "tiny-rerank", "documents": ["d"]}, 400, "query is required"),
        ({"model": "tiny-rerank", "query": "q", "documents": []}, 400, "non-empty"),
        ({"model": "tiny-rerank", "query": "q"}, 400, "non-empty"),
        ({"model": "tiny-rerank", "query": "q", "documents": [3]}, 400, "documents[0]"),
        ({"model": "tiny-rerank", "query": "q", "documents": ["d"], "top_n": 0}, 400, "top_n"),
        ({"model": "tiny-rerank", "query": 5, "documents": ["d"]}, 400, "query"),
        ({"model": "nope", "query": "q", "documents": ["d"]}, 404, "not found"),
    ],
)
def test_bad_requests(
    server: ServerProcess,
    reranker: dict[str, Any],
    body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    response = _post(server, "/api/rerank", body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    v1 = _post(server, "/v1/rerank", body)  # OpenAI's error shape on /v1
    assert v1.status_code == status
    assert message in v1.json()["error"]["message"]
    assert httpx.get(server.url + "/api/version", timeout=10).status_code == 200


def test_models_that_do_not_rerank(
    server: ServerProcess, reranker: dict[str, Any], embedder: str
) -> None:
    body = {"model": embedder, "query": "q", "documents": ["d"]}
    response = _post(server, "/api/rerank", body)
    assert response.status_code == 400
    assert response.json() == {"error": '"tiny-embed" does not support rerank'}
    # and a reranker has no embeddings
    embedded = _post(server, "/api/embed", {"model": "tiny-rerank", "input": "the cat"})
    assert embedded.status_code == 400
    assert "reranker" in embedded.json()["error"]
    assert _post(server, "/api/embed", {"model": embedder, "input": "the cat"}).status_code == 200


def test_show_and_tags_name_the_rerank_capability(
    server: ServerProcess, reranker: dict[str, Any], embedder: str
) -> None:
    show = _post(server, "/api/show", {"model": "tiny-rerank"}).json()
    assert show["capabilities"] == ["rerank"]
    assert _post(server, "/api/show", {"model": embedder}).json()["capabilities"] == ["embedding"]
    tags = httpx.get(server.url + "/api/tags", timeout=30).json()["models"]
    caps = {m["name"]: m["capabilities"] for m in tags}
    assert caps["tiny-rerank:latest"] == ["rerank"]
