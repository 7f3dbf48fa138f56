"""BERT cross-encoders (``BertForSequenceClassification``) converted as rerankers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from corral.convert import convert_checkpoint
from corral.errors import BadRequestError
from tests.convert.tiny import write_tiny_bert
from tests.convert.tiny_rerank import write_tiny_cross_encoder


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    reader = gguf.GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    return fields, {t.name: t for t in reader.tensors}


def test_cross_encoder_is_written_as_a_reranker(tmp_path: Path) -> None:
    tensors = write_tiny_cross_encoder(tmp_path / "ce")
    fields, written = _read(convert_checkpoint(tmp_path / "ce", tmp_path / "ce.gguf"))
    assert fields["general.architecture"] == "bert"
    assert fields["bert.pooling_type"] == gguf.PoolingType.RANK
    assert fields["bert.classifier.output_labels"] == ["LABEL_0"]
    shapes = {name: tuple(int(d) for d in t.shape) for name, t in written.items()}
    assert shapes["cls.weight"] == (32, 32)  # the pooler's dense layer
    assert shapes["cls.bias"] == (32,)
    assert shapes["cls.output.weight"] == (32, 1)  # the classifier, one row per label
    assert shapes["cls.output.bias"] == (1,)
    # the classifier stays float32 in an f16 file: it makes the score
    assert written["cls.output.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert written["cls.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    np.testing.assert_array_equal(
        np.asarray(written["cls.output.weight"].data).reshape(1, 32), tensors["classifier.weight"]
    )
    # the encoder under "bert." is named as an embedding model's, nothing is left over
    assert "blk.1.ffn_down.weight" in written and "token_types.weight" in written
    assert not any("pooler" in name or "classifier" in name for name in written)
    assert len(written) == 5 + 2 * 16 + 4


def test_embedding_bert_has_no_head(tmp_path: Path) -> None:
    write_tiny_bert(tmp_path / "bert")  # its checkpoint has a pooler: not written
    fields, written = _read(convert_checkpoint(tmp_path / "bert", tmp_path / "b.gguf"))
    assert fields["bert.pooling_type"] == gguf.PoolingType.MEAN
    assert "bert.classifier.output_labels" not in fields
    assert not any(name.startswith("cls") for name in written)


def test_labels_follow_id2label_order(tmp_path: Path) -> None:
    write_tiny_cross_encoder(tmp_path, labels=3)
    config = json.loads((tmp_path / "config.json").read_text())
    config["id2label"] = {"2": "high", "0": "low", "1": "mid"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    fields, written = _read(convert_checkpoint(tmp_path, tmp_path / "out.gguf"))
    assert fields["bert.classifier.output_labels"] == ["low", "mid", "high"]
    assert tuple(int(d) for d in written["cls.output.weight"].shape) == (32, 3)


def test_labels_from_num_labels_without_id2label(tmp_path: Path) -> None:
    write_tiny_cross_encoder(tmp_path, labels=2)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["id2label"], config["label2id"]
    config["num_labels"] = 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    fields, _ = _read(convert_checkpoint(tmp_path, tmp_path / "out.gguf"))
    assert fields["bert.classifier.output_labels"] == ["LABEL_0", "LABEL_1"]


def test_without_a_pooler_the_classifier_reads_cls_directly(tmp_path: Path) -> None:
    write_tiny_cross_encoder(tmp_path, pooler=False)
    _, written = _read(convert_checkpoint(tmp_path, tmp_path / "out.gguf"))
    assert "cls.output.weight" in written and "cls.weight" not in written


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id2label": {"0": "a", "2": "b"}}, "number its labels"),
        ({"id2label": {"x": "a"}}, "bad index"),
        ({"id2label": None, "num_labels": 0}, "num_labels"),
        ({"id2label": {"0": "a", "1": "b"}}, r"classifier\.weight has shape \[1, 32\]"),
    ],
)
def test_bad_head_configs_are_refused(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    write_tiny_cross_encoder(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BadRequestError, match=message):
        convert_checkpoint(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_missing_classifier_is_refused(tmp_path: Path) -> None:
    tensors = write_tiny_cross_encoder(tmp_path)
    del tensors["classifier.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(BadRequestError, match=r"no classifier\.weight"):
        convert_checkpoint(tmp_path, tmp_path / "out.gguf")


def test_half_a_pooler_is_refused(tmp_path: Path) -> None:
    tensors = write_tiny_cross_encoder(tmp_path)
    del tensors["bert.pooler.dense.bias"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(BadRequestError, match="pooler"):
        convert_checkpoint(tmp_path, tmp_path / "out.gguf")
