"""Llama conversion: a tiny random checkpoint's GGUF gives the logits numpy computes."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from corral.convert import convert_checkpoint
from corral.convert.llama import permute_rotary
from corral.errors import BadRequestError
from tests.convert.tiny import LLAMA, llama_forward, write_tiny_llama


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("llama") / "ckpt"
    tensors = write_tiny_llama(folder)
    out = convert_checkpoint(folder, folder.parent / "tiny.gguf", file_type="f32")
    return out, tensors


def test_metadata_vocabulary_and_tensors(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, tensors = tiny
    reader = gguf.GGUFReader(path)
    kv = {name: field.contents() for name, field in reader.fields.items()}
    n_vocab = tensors["model.embed_tokens.weight"].shape[0]
    assert kv["general.architecture"] == "llama"
    assert kv["llama.block_count"] == LLAMA["layers"]
    assert kv["llama.attention.head_count"] == LLAMA["heads"]
    assert kv["llama.attention.head_count_kv"] == LLAMA["kv_heads"]
    assert kv["llama.rope.dimension_count"] == LLAMA["hidden"] // LLAMA["heads"]
    assert kv["llama.rope.freq_base"] == pytest.approx(LLAMA["theta"])
    assert kv["tokenizer.ggml.model"] == "gpt2"
    assert len(kv["tokenizer.ggml.tokens"]) == n_vocab
    assert kv["tokenizer.ggml.merges"] == ["h e", "l l", "he ll", "Ġ w"]
    assert kv["tokenizer.ggml.bos_token_id"] == n_vocab - 2
    assert kv["tokenizer.ggml.eos_token_id"] == n_vocab - 1
    assert kv["tokenizer.ggml.token_type"][n_vocab - 1] == gguf.TokenType.CONTROL
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output_norm.weight", "output.weight"} <= names
    assert "blk.1.ffn_gate.weight" in names and "blk.1.attn_k.weight" in names
    assert len(names) == 3 + 9 * LLAMA["layers"]


@pytest.mark.model
def test_logits_match_numpy(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    import llama_cpp

    path, tensors = tiny
    model = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False)
    try:
        tokens = model.tokenize(b"hello world", add_bos=True)
        assert tokens[0] == tensors["model.embed_tokens.weight"].shape[0] - 2
        assert len(tokens) < len(b"hello world") + 1  # the merges were applied
        tokens = [*tokens, 7, 42, 130]
        model.eval(tokens)
        got = np.array(model.scores[: len(tokens)], dtype=np.float64)
    finally:
        model.close()
    want = llama_forward(tensors, tokens)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-3 * scale)
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_rotary_permutation_interleaves_halves() -> None:
    # one head of dimension 4: rows (a0, a1, b0, b1) become (a0, b0, a1, b1)
    rows = np.arange(4, dtype=np.float32)[:, None]
    assert permute_rotary(rows, 1)[:, 0].tolist() == [0, 2, 1, 3]


def test_sentencepiece_style_tokenizer_is_refused(tmp_path: Path) -> None:
    write_tiny_llama(tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    data["model"]["byte_fallback"] = True
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(BadRequestError, match="byte_fallback"):
        convert_checkpoint(tmp_path, tmp_path / "out.gguf")


def test_rope_scaling_is_refused(tmp_path: Path) -> None:
    write_tiny_llama(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BadRequestError, match="rope_scaling"):
        convert_checkpoint(tmp_path, tmp_path / "out.gguf")
