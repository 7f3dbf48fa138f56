"""Reranking in the runner process: what a (query, document) pair is for a cross-encoder.

A reranker is a model whose pooled output is a relevance score: llama.cpp's RANK pooling
(``bert.pooling_type`` 4, or a GGUF with ``*.classifier.output_labels``, which llama.cpp's own
converter writes without the pooling type). ``Embedder.rerank`` decodes one pair per
sequence and reads the first value of each pooled row, as llama-server's ``/rerank`` does.

The pair, in the first form that applies:

- the model's ``rerank`` chat template (Qwen3-style rerankers): ``{query}`` and
  ``{document}`` replaced, tokenized with special tokens parsed, as llama-server does;
- a BERT (WordPiece) vocabulary: the tokenizer's own pair, ``[CLS] query [SEP] document
  [SEP]``, the document being the second segment (token type 1), as Hugging Face encodes it
  for a sentence-transformers CrossEncoder;
- otherwise llama-server's pair: BOS query EOS SEP document EOS, each where the vocabulary
  adds it (RoBERTa-style ``<s> q </s></s> d </s>``).

Token types: llama.cpp's BERT graph adds token type 0 to every token, but a cross-encoder
was trained with the document as type 1, and its scores change with it. Where the model has
a second token type, the runner feeds the pair as input embeddings instead of token ids:
each row is the token's embedding plus ``type[1] - type[0]`` for the document's tokens, to
which the graph adds ``type[0]`` and the position. Those rows come from the GGUF itself (the
``gguf`` library maps the file; only the rows a pair uses are read), so the scores are the
ones Hugging Face computes from the same weights. llama-server does not do this: its
scores for such a model differ from the original's.

Truncation: a pair longer than the context loses the end of its document (the closing
token, or a template's end, kept); a query that leaves no room for the document is a
``QueryTooLongError``, and any cut the request does not allow a ``TruncationRefusedError``
(the Embedder answers both as ``InputTooLongError``: a 400). A LoRA model's pairs go in as
token ids (an adapter may change the token embeddings these rows would bypass).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import llama_cpp as llama
import numpy as np

__all__ = [
    "Pair",
    "PairBuilder",
    "PairFormat",
    "QueryTooLongError",
    "SegmentEmbeddings",
    "Tokenize",
    "TruncationRefusedError",
    "model_is_reranker",
]

logger = logging.getLogger(__name__)

_RANK = 4  # LLAMA_POOLING_TYPE_RANK, as the GGUF stores it


class QueryTooLongError(ValueError):
    """The query (with the pair's special tokens) leaves no room for a document."""


class TruncationRefusedError(ValueError):
    """A pair is longer than the context and the request did not allow cutting it."""

    def __init__(self) -> None:
        super().__init__("the input length exceeds the context length")


@dataclass(frozen=True, slots=True)
class Pair:
    """The tokens of one (query, document) pair; from ``second`` on, the document's segment
    (token type 1); ``second == len(tokens)`` when the pair has one segment."""

    tokens: list[int]
    second: int


def meta_value(model: Any, key: str) -> str | None:
    """A GGUF metadata value of a loaded model as text (None when absent)."""
    size = 256
    buffer = ctypes.create_string_buffer(size)
    length = int(llama.llama_model_meta_val_str(model, key.encode(), buffer, size))
    if length < 0:
        return None
    if length >= size:
        buffer = ctypes.create_string_buffer(length + 1)
        llama.llama_model_meta_val_str(model, key.encode(), buffer, length + 1)
    return buffer.value.decode("utf-8", errors="replace")


def model_is_reranker(model: Any) -> bool:
    """RANK pooling in the GGUF, or a classification head's labels (llama.cpp's converter
    writes those for a cross-encoder but leaves the pooling to llama-server's flag)."""
    arch = meta_value(model, "general.architecture") or ""
    if meta_value(model, f"{arch}.pooling_type") == str(_RANK):
        return True
    return meta_value(model, f"{arch}.classifier.output_labels") is not None or bool(
        llama.llama_model_cls_label(model, 0)
    )


@dataclass(frozen=True, slots=True)
class PairFormat:
    """What a model's vocabulary says about pairs (ids are -1 where it has none)."""

    template: str | None  # the GGUF's "rerank" chat template
    wordpiece: bool
    bos: int
    eos: int  # the SEP token where the vocabulary has no EOS, as llama-server takes it
    sep: int
    add_bos: bool
    add_eos: bool
    add_sep: bool

    @classmethod
    def of(cls, model: Any, vocab: Any) -> PairFormat:
        template = llama.llama_model_chat_template(model, b"rerank")
        eos, sep = int(llama.llama_vocab_eos(vocab)), int(llama.llama_vocab_sep(vocab))
        return cls(
            template=template.decode("utf-8", errors="replace") if template else None,
            wordpiece=int(llama.llama_vocab_type(vocab)) == int(llama.LLAMA_VOCAB_TYPE_WPM),
            bos=int(llama.llama_vocab_bos(vocab)),
            eos=eos if eos >= 0 else sep,
            sep=sep,
            add_bos=bool(llama.llama_vocab_get_add_bos(vocab)),
            add_eos=bool(llama.llama_vocab_get_add_eos(vocab)),
            add_sep=bool(llama.llama_vocab_get_add_sep(vocab)),
        )


#: ``tokenize(text, add_special, parse_special)``: the model's tokenizer
Tokenize = Callable[[str, bool, bool], list[int]]


class PairBuilder:
    """Builds the pairs of one model in its ``PairFormat``."""

    def __init__(self, pair_format: PairFormat, tokenize: Tokenize) -> None:
        self._tokenize = tokenize
        self.template = pair_format.template
        self.wordpiece = pair_format.wordpiece
        self._bos, self._eos, self._sep = pair_format.bos, pair_format.eos, pair_format.sep
        self._add_bos = pair_format.add_bos
        self._add_eos = pair_format.add_eos
        self._add_sep = pair_format.add_sep

    def query_part(self, query: str) -> list[int]:
        """The tokens before the document (without a template): reused for every pair."""
        if self.wordpiece:
            return list(self._tokenize(query, True, False))
        head = [self._bos] if self._add_bos and self._bos >= 0 else []
        head += self._tokenize(query, False, False)
        if self._add_eos and self._eos >= 0:
            head.append(self._eos)
        if self._add_sep and self._sep >= 0:
            head.append(self._sep)
        return head

    def closing(self) -> list[int]:
        """The tokens after the document (without a template)."""
        if self.wordpiece:
            return [self._sep] if self._sep >= 0 else []
        return [self._eos] if self._add_eos and self._eos >= 0 else []

    def build(
        self, query: str, head: list[int], document: str, *, limit: int, truncate: bool
    ) -> Pair:
        """The pair of ``query`` (``head``: its ``query_part``) and ``document`` in at most
        ``limit`` tokens; ``QueryTooLongError`` or ``TruncationRefusedError``."""
        if self.template is not None:
            return self._templated(query, document, limit=limit, truncate=truncate)
        tail = self.closing()
        body = self._tokenize(document, False, False)
        room = limit - len(head) - len(tail)
        if room < 1:
            raise QueryTooLongError("the query is longer than the context")
        if len(body) > room:
            if not truncate:
                raise TruncationRefusedError()
            body = body[:room]
        second = len(head) if self.wordpiece else len(head) + len(body) + len(tail)
        return Pair(tokens=head + body + tail, second=second)

    def _templated(self, query: str, document: str, *, limit: int, truncate: bool) -> Pair:
        assert self.template is not None
        whole = self.template.replace("{query}", query).replace("{document}", document)
        tokens = self._tokenize(whole, False, True)
        if len(tokens) <= limit:
            return Pair(tokens=tokens, second=len(tokens))
        if not truncate:
            raise TruncationRefusedError()
        # the document is cut, not the template's end (which asks the question scored)
        before, _, after = self.template.partition("{document}")
        head = self._tokenize(before.replace("{query}", query), False, True)
        tail = self._tokenize(after.replace("{query}", query), False, True)
        room = limit - len(head) - len(tail)
        if room < 1:
            raise QueryTooLongError("the query is longer than the context")
        body = self._tokenize(document, False, False)[:room]
        tokens = head + body + tail
        return Pair(tokens=tokens, second=len(tokens))


class SegmentEmbeddings:
    """Input rows for a pair with its document as token type 1 (see the module docstring).

    ``load`` returns None when the model has no second token type, or when its rows cannot
    be read (then the pair goes in as token ids, everything type 0, as llama-server does).
    """

    def __init__(self, tokens: Any, delta: np.ndarray[Any, Any], tensor_type: Any) -> None:
        self._tokens = tokens  # the token_embd rows as stored (a view of the mapped file)
        self._delta = delta  # type[1] - type[0], float32
        self._tensor_type = tensor_type
        self.n_embd = int(delta.shape[0])

    @classmethod
    def load(cls, model_path: str, n_embd: int) -> SegmentEmbeddings | None:
        try:
            import gguf  # only a reranker needs it: the runner starts without it

            reader = gguf.GGUFReader(model_path)
            tensors = {t.name: t for t in reader.tensors}
            types = tensors.get("token_types.weight")
            embd = tensors.get("token_embd.weight")
            if types is None or embd is None or int(types.shape[1]) < 2:
                return None
            rows = _rows(types.data, types.tensor_type, [0, 1])
            if rows.shape[1] != n_embd or int(embd.shape[0]) != n_embd:
                return None
            return cls(embd.data, (rows[1] - rows[0]).astype(np.float32), embd.tensor_type)
        except Exception:
            logger.warning("token type embeddings unreadable: the document goes in as type 0")
            return None

    def rows(self, pair: Pair) -> np.ndarray[Any, Any]:
        """float32 rows, one per token of ``pair``."""
        out = _rows(self._tokens, self._tensor_type, pair.tokens)
        out[pair.second :] += self._delta
        return out


def _rows(data: Any, tensor_type: Any, indices: list[int]) -> np.ndarray[Any, Any]:
    """Rows ``indices`` of a GGUF tensor (as ``GGUFReader`` maps it) as float32."""
    import gguf

    picked = np.asarray(data)[np.asarray(indices, dtype=np.int64)]
    if tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return picked.astype(np.float32)
    return np.asarray(gguf.quants.dequantize(picked, tensor_type), dtype=np.float32)
