"""The rerank route's own logic: request fields, document forms, ranking, reranker detection."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydantic import ValidationError

from corral.api.rerank import RerankRequest, document_text
from corral.server.rerank import _ranked, is_reranker


def test_ranking_is_by_score_then_request_order() -> None:
    scores = [0.5, 2.0, -1.0, 2.0, 0.5]
    assert _ranked(scores, None) == [1, 3, 0, 4, 2]
    assert _ranked(scores, 2) == [1, 3]
    assert _ranked(scores, 99) == [1, 3, 0, 4, 2]


def test_documents_are_strings_or_text_objects() -> None:
    assert document_text(0, "plain") == "plain"
    assert document_text(1, {"text": "cohere", "id": "x"}) == "cohere"
    for bad in (3, None, {"image": "x"}, {"text": 5}, ["a"]):
        with pytest.raises(ValueError, match=r"documents\[2\]"):
            document_text(2, bad)


def test_request_fields() -> None:
    req = RerankRequest.model_validate(
        {"model": "m", "query": "q", "documents": ["a"], "keep_alive": "5m", "extra": 1}
    )
    assert (req.top_n, req.return_documents, req.truncate, req.keep_alive) == (
        None,
        False,
        True,
        300.0,
    )
    assert not req.tei
    assert RerankRequest.model_validate({"query": "q", "texts": ["a"]}).tei
    for top_n in (0, -1):
        with pytest.raises(ValidationError, match="top_n"):
            RerankRequest.model_validate({"query": "q", "documents": ["a"], "top_n": top_n})


def _model(arch: str, metadata: dict[str, Any]) -> Any:
    return cast(Any, SimpleNamespace(gguf=SimpleNamespace(architecture=arch, metadata=metadata)))


def test_rerankers_are_known_by_rank_pooling_or_classifier_labels() -> None:
    assert is_reranker(_model("bert", {"bert.pooling_type": 4}))
    assert is_reranker(_model("bert", {"bert.classifier.output_labels": ["LABEL_0"]}))
    assert is_reranker(_model("qwen3", {"qwen3.pooling_type": 4}))
    assert not is_reranker(_model("bert", {"bert.pooling_type": 1}))
    assert not is_reranker(_model("llama", {}))
