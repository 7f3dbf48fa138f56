"""``corral serve`` prunes unreferenced blobs and stale partial downloads at start, unless
``OLLAMA_NOPRUNE`` is set; blobs a manifest names and fresh files always stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from corral.registry.pull import partial_files
from corral.store import MEDIA_TYPE_MODEL, Layer, Manifest, ModelStore, Name
from corral.store.layers import config_layer
from tests.conftest import started
from tests.registry.tiny import write_tiny_gguf

pytestmark = pytest.mark.model

TWO_HOURS_AGO = time.time() - 2 * 3600


def _age(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (TWO_HOURS_AGO, TWO_HOURS_AGO))


def _store_with_leftovers(models: Path) -> dict[str, Path]:
    """A store with one model and every kind of leftover, all but ``fresh`` two hours old."""
    store = ModelStore(models)
    weights = store.import_file(write_tiny_gguf(models.parent / "w.gguf"))
    model = Layer(MEDIA_TYPE_MODEL, weights.digest, weights.size)
    config = config_layer(store, model, [model])
    store.write_manifest(Name.parse("kept:1"), Manifest(config, (model,)))
    partial, state = partial_files(store, "sha256:" + "a" * 64)
    partial.write_bytes(b"half a download")
    state.write_bytes(b"{}")
    files = {
        "config": store.blob_path(config.digest),
        "weights": store.blob_path(weights.digest),
        "orphan": store.blob_path(store.write_blob_bytes(b"nobody's").digest),
        "partial": partial,
        "state": state,
        "tmp": store.blobs_dir / ".tmp-crashed-upload",
        "fresh": store.blob_path(store.write_blob_bytes(b"uploaded just now").digest),
    }
    files["tmp"].write_bytes(b"x")
    _age(*(path for key, path in files.items() if key != "fresh"))
    return files


def _present(files: dict[str, Path]) -> set[str]:
    return {key for key, path in files.items() if path.exists()}


def test_prune_at_start_unless_noprune(tmp_path: Path) -> None:
    files = _store_with_leftovers(tmp_path / "models")

    with started(tmp_path, OLLAMA_NOPRUNE="1") as server:
        assert httpx.get(server.url + "/api/tags").json()["models"][0]["name"] == "kept:1"
    assert _present(files) == set(files)

    with started(tmp_path) as server:
        assert httpx.get(server.url + "/api/tags").json()["models"][0]["name"] == "kept:1"
        assert "pruned" in server.log_tail()
    assert _present(files) == {"config", "weights", "fresh"}
