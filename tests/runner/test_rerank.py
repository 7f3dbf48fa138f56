"""Reranking in the runner: a tiny random cross-encoder, converted by corral, scored by the
Embedder on real llama.cpp and compared with a numpy forward of the same weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from corral.convert import convert_checkpoint
from tests.convert.tiny import write_tiny_bert
from tests.convert.tiny_rerank import (
    VOCAB,
    cross_encoder_scores,
    pair_ids,
    reference_score,
    write_tiny_cross_encoder,
)

pytestmark = pytest.mark.model

QUERY = "the cat sat"
DOCUMENTS = [
    "the cat sat on a mat.",
    "a dog runs",
    "cats, dogs",
    "the mat",
    "a dog sat on the cat",
    "running dogs sat",
    "the the the",
]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    folder = tmp_path_factory.mktemp("ce")
    tensors = write_tiny_cross_encoder(folder / "ce")
    return tensors, convert_checkpoint(folder / "ce", folder / "ce.gguf", file_type="f32")


def _embedder(path: Path, **kwargs: Any) -> Iterator[Any]:
    from corral.runner.embed import Embedder
    from corral.runner.engine import Engine
    from corral.runner.settings import LoadSettings

    engine = Engine(LoadSettings(model_path=str(path), num_ctx=kwargs.pop("num_ctx", 64)))
    engine.load()
    embedder = Embedder(engine, **kwargs)
    try:
        yield embedder
    finally:
        embedder.close()
        engine.close()


@pytest.fixture(scope="module")
def reranker(weights: tuple[dict[str, Any], Path]) -> Iterator[Any]:
    yield from _embedder(weights[1])


def test_scores_match_the_numpy_forward(reranker: Any, weights: Any) -> None:
    tensors, _ = weights
    output = reranker.rerank(QUERY, DOCUMENTS)
    want = [reference_score(tensors, QUERY, doc) for doc in DOCUMENTS]
    np.testing.assert_allclose(output.scores, want, rtol=0, atol=1e-2)
    assert np.argsort(output.scores).tolist() == np.argsort(want).tolist()
    assert output.prompt_eval_count == sum(len(pair_ids(QUERY, d)[0]) for d in DOCUMENTS)


def test_the_document_is_the_second_segment(reranker: Any, weights: Any) -> None:
    """Hugging Face's pair: [CLS] q [SEP] d [SEP], the document as token type 1. Scored with
    every token as type 0 (llama-server's way) the numbers differ: this test tells them apart."""
    tensors, _ = weights
    builder = reranker._pair_builder()
    pair = builder.build(QUERY, builder.query_part(QUERY), DOCUMENTS[0], limit=64, truncate=True)
    tokens, types = pair_ids(QUERY, DOCUMENTS[0])
    assert pair.tokens == tokens
    assert pair.second == types.index(1)
    got = reranker.rerank(QUERY, DOCUMENTS[:1]).scores[0]
    type0 = float(cross_encoder_scores(tensors, tokens, [0] * len(tokens))[0])
    assert abs(got - reference_score(tensors, QUERY, DOCUMENTS[0])) < 1e-2
    assert abs(got - type0) > 0.05


def test_many_decode_calls_give_the_same_scores(weights: Any) -> None:
    tensors, path = weights
    for small in _embedder(path, max_sequences=2, batch_tokens=16):
        output = small.rerank(QUERY, DOCUMENTS * 3)
    want = [reference_score(tensors, QUERY, doc) for doc in DOCUMENTS * 3]
    np.testing.assert_allclose(output.scores, want, rtol=0, atol=1e-2)


def test_a_long_document_loses_its_end(reranker: Any, weights: Any) -> None:
    tensors, _ = weights
    long_doc = " ".join(["the cat sat on a mat."] * 20)  # > 64 tokens
    output = reranker.rerank(QUERY, [long_doc], max_tokens=20)
    head = [VOCAB.index("[CLS]")] + [VOCAB.index(w) for w in ("the", "cat", "sat")]
    head.append(VOCAB.index("[SEP]"))
    tokens, types = pair_ids(QUERY, long_doc)
    kept = [*tokens[:19], VOCAB.index("[SEP]")]
    assert kept[:5] == head and output.prompt_eval_count == 20
    want = float(cross_encoder_scores(tensors, kept, types[:20])[0])
    assert abs(output.scores[0] - want) < 1e-2


def test_refusals(reranker: Any) -> None:
    from corral.runner.embed import InputTooLongError, NotSupportedError

    with pytest.raises(InputTooLongError, match="exceeds the context length"):
        reranker.rerank(QUERY, ["the cat " * 40], truncate=False)
    with pytest.raises(InputTooLongError, match="query is longer than the context"):
        reranker.rerank("the cat " * 40, ["a dog"])
    with pytest.raises(NotSupportedError, match="reranker"):
        reranker.embed(["the cat"])
    assert reranker.rerank(QUERY, []).scores == []


def test_an_embedding_model_does_not_rerank(tmp_path: Path) -> None:
    from corral.runner.embed import NotSupportedError

    write_tiny_bert(tmp_path / "bert")
    path = convert_checkpoint(tmp_path / "bert", tmp_path / "bert.gguf", file_type="f32")
    for embedder in _embedder(path):
        assert not embedder.is_reranker
        with pytest.raises(NotSupportedError, match="does not support reranking"):
            embedder.rerank(QUERY, ["a dog"])
        assert embedder.embed(["the cat"]).vectors.shape == (1, 32)


def test_a_two_label_head_scores_with_its_first_label(tmp_path: Path) -> None:
    tensors = write_tiny_cross_encoder(tmp_path / "ce", labels=2, seed=5)
    path = convert_checkpoint(tmp_path / "ce", tmp_path / "ce.gguf", file_type="f32")
    for embedder in _embedder(path):
        output = embedder.rerank(QUERY, DOCUMENTS[:3])
    for doc, got in zip(DOCUMENTS[:3], output.scores, strict=True):
        assert abs(got - reference_score(tensors, QUERY, doc)) < 1e-2
