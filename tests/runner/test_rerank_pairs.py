"""The (query, document) pairs a reranker scores, for each vocabulary kind, and the token-type
rows read from a GGUF: no model run, a word-per-token stand-in tokenizer."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from corral.runner.rerank import (
    Pair,
    PairBuilder,
    PairFormat,
    QueryTooLongError,
    SegmentEmbeddings,
    Tokenize,
    TruncationRefusedError,
)

CLS, SEP, BOS, EOS = 1, 2, 3, 4
SPECIALS = {"<cls>": CLS, "<sep>": SEP, "<s>": BOS, "</s>": EOS}


def _word_id(word: str) -> int:
    return 10 + sum(ord(c) for c in word) % 90


def _tokenizer(wordpiece: bool) -> Tokenize:
    def tokenize(text: str, add_special: bool, parse_special: bool) -> list[int]:
        ids = [
            SPECIALS[w] if parse_special and w in SPECIALS else _word_id(w) for w in text.split()
        ]
        if add_special and wordpiece:
            ids = [CLS, *ids, SEP]
        return ids

    return tokenize


def _builder(*, wordpiece: bool, template: str | None = None, **flags: bool) -> PairBuilder:
    pair_format = PairFormat(
        template=template,
        wordpiece=wordpiece,
        bos=CLS if wordpiece else BOS,
        eos=SEP if wordpiece else EOS,
        sep=SEP if wordpiece else EOS,
        add_bos=flags.get("add_bos", True),
        add_eos=flags.get("add_eos", not wordpiece),
        add_sep=flags.get("add_sep", True),
    )
    return PairBuilder(pair_format, _tokenizer(wordpiece))


def _pair(builder: PairBuilder, query: str, doc: str, limit: int = 100, **kw: bool) -> Pair:
    return builder.build(query, builder.query_part(query), doc, limit=limit, **kw)


def test_wordpiece_pair_is_bert_s_with_the_document_second() -> None:
    pair = _pair(_builder(wordpiece=True), "q1 q2", "d1 d2 d3", truncate=True)
    q, d = [_word_id(w) for w in ("q1", "q2")], [_word_id(w) for w in ("d1", "d2", "d3")]
    assert pair.tokens == [CLS, *q, SEP, *d, SEP]
    assert pair.second == 4  # from the document on: token type 1


def test_roberta_style_pair_as_llama_server_builds_it() -> None:
    pair = _pair(_builder(wordpiece=False), "q", "d", truncate=True)
    assert pair.tokens == [BOS, _word_id("q"), EOS, EOS, _word_id("d"), EOS]  # <s>q</s></s>d</s>
    assert pair.second == len(pair.tokens)  # one segment: every token type 0


def test_templated_pair_parses_its_special_tokens() -> None:
    builder = _builder(wordpiece=False, template="<s> ask {query} about {document} </s> yes")
    pair = _pair(builder, "q", "d", truncate=True)
    w = _word_id
    assert pair.tokens == [BOS, w("ask"), w("q"), w("about"), w("d"), EOS, w("yes")]


def test_templated_truncation_keeps_the_template_s_end() -> None:
    builder = _builder(wordpiece=False, template="<s> {query} : {document} </s> yes")
    pair = _pair(builder, "q", " ".join(["d"] * 50), limit=10, truncate=True)
    assert len(pair.tokens) == 10
    assert pair.tokens[-2:] == [EOS, _word_id("yes")]
    with pytest.raises(TruncationRefusedError):
        _pair(builder, "q", " ".join(["d"] * 50), limit=10, truncate=False)
    with pytest.raises(QueryTooLongError):
        _pair(builder, " ".join(["q"] * 20), "d d", limit=10, truncate=True)


def test_truncation_cuts_the_document_and_keeps_the_closing_token() -> None:
    builder = _builder(wordpiece=True)
    pair = _pair(builder, "q", " ".join(f"d{i}" for i in range(30)), limit=8, truncate=True)
    assert (
        len(pair.tokens) == 8
        and pair.tokens[-1] == SEP
        and pair.tokens[:3]
        == [
            CLS,
            _word_id("q"),
            SEP,
        ]
    )
    with pytest.raises(TruncationRefusedError, match="exceeds the context length"):
        _pair(builder, "q", " ".join(["d"] * 30), limit=8, truncate=False)
    with pytest.raises(QueryTooLongError, match="query is longer than the context"):
        _pair(builder, " ".join(["q"] * 8), "d", limit=8, truncate=True)


@pytest.mark.parametrize(
    "tensor_type", [gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.Q8_0]
)
def test_segment_rows_are_token_rows_plus_the_type_difference(
    tmp_path: Path, tensor_type: gguf.GGMLQuantizationType
) -> None:
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((20, 64)).astype(np.float32)
    types = rng.standard_normal((2, 64)).astype(np.float32)
    writer = gguf.GGUFWriter(tmp_path / "m.gguf", "bert")
    stored = gguf.quants.quantize(tokens, tensor_type)
    writer.add_tensor("token_embd.weight", stored, raw_dtype=tensor_type)
    writer.add_tensor("token_types.weight", types)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    segments = SegmentEmbeddings.load(str(tmp_path / "m.gguf"), 64)
    assert segments is not None
    rows = segments.rows(Pair(tokens=[3, 5, 7, 9], second=2))
    want = gguf.quants.dequantize(stored, tensor_type)[[3, 5, 7, 9]]
    want[2:] += types[1] - types[0]
    np.testing.assert_allclose(rows, want, rtol=0, atol=1e-6)
    assert SegmentEmbeddings.load(str(tmp_path / "m.gguf"), 32) is None  # a size mismatch


def test_one_token_type_or_a_broken_file_means_no_segment_rows(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(tmp_path / "one.gguf", "bert")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.add_tensor("token_types.weight", np.zeros((1, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert SegmentEmbeddings.load(str(tmp_path / "one.gguf"), 8) is None
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\x00" * 10)
    assert SegmentEmbeddings.load(str(tmp_path / "bad.gguf"), 8) is None
