"""Wire types of ``POST /api/rerank`` and ``/v1/rerank``: the Jina/Cohere rerank shape.

Request: ``{model, query, documents, top_n?, return_documents?}``; each document is a string
or Cohere's ``{"text": ...}``. llama-server's other spellings are accepted too: Hugging Face
TEI's ``texts`` (then the answer is TEI's bare list with ``score`` and, with ``return_text``,
``text``). Ollama's own fields: ``options``, ``keep_alive``, ``truncate`` (default true: a
pair longer than the context loses the end of its document; false: a 400).

Response: ``{model, object: "list", results: [{index, relevance_score, document?}],
usage: {prompt_tokens, total_tokens}}``, results sorted by score, highest first, at most
``top_n`` of them. ``relevance_score`` is the model's raw score (a logit for a BERT
cross-encoder), as llama-server gives it: it orders documents; it is not a probability.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from corral.api.types import KeepAlive

__all__ = ["RerankRequest", "RerankResult", "document_text"]


class RerankRequest(KeepAlive):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    model: str = ""
    query: str | None = None
    documents: list[Any] | None = None  # strings or {"text": ...}; checked by document_text
    texts: list[Any] | None = None  # TEI's name
    top_n: int | None = None
    return_documents: bool = False
    return_text: bool = False  # TEI's name
    truncate: bool = True
    options: dict[str, Any] | None = None

    @field_validator("top_n")
    @classmethod
    def _top_n(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("top_n must be at least 1")
        return value

    @property
    def tei(self) -> bool:
        """Hugging Face TEI's shape: ``texts`` in, a bare list out."""
        return self.documents is None and self.texts is not None


def document_text(index: int, value: Any) -> str:
    """A document as text: a string or ``{"text": str}``; ``ValueError`` names the index."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return str(value["text"])
    raise ValueError(f'documents[{index}] must be a string or an object with a "text" string')


class RerankResult(BaseModel):
    """One result: the document's position in the request, its score, and (if asked) it."""

    index: int
    relevance_score: float
    document: dict[str, str] | None = None
