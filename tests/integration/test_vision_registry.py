"""A vision model's projector travels with it: push to a real registry, delete, pull back."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.store import MEDIA_TYPE_PROJECTOR, Manifest, ModelStore, Name
from tests.conftest import ServerProcess
from tests.registry.registry_process import Registry, running_registry
from tests.runner.tiny_vision import png_bytes, write_tiny_vision_pair

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def _upload(server: ServerProcess, path: Path) -> str:
    data = path.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = httpx.post(f"{server.url}/api/blobs/{digest}", content=data, timeout=120)
    assert response.status_code in (200, 201)
    return digest


def _post(server: ServerProcess, path: str, body: dict[str, Any]) -> httpx.Response:
    response = httpx.post(server.url + path, json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response


def test_push_and_pull_carry_the_projector(
    server: ServerProcess, registry: Registry, tmp_path: Path
) -> None:
    model, projector = write_tiny_vision_pair(tmp_path)
    files = {"model.gguf": _upload(server, model), "mmproj.gguf": _upload(server, projector)}
    name = f"{registry.host}/test/vision:1"
    _post(server, "/api/create", {"model": name, "files": files, "stream": False})
    store = ModelStore(server.models_dir)
    before = Manifest.from_json(store.read_manifest_bytes(Name.parse(name)))
    layer = before.layer(MEDIA_TYPE_PROJECTOR)
    assert layer is not None and layer.digest == files["mmproj.gguf"]

    pushed = _post(server, "/api/push", {"model": name, "insecure": True})
    assert json.loads(pushed.text.splitlines()[-1]) == {"status": "success"}
    httpx.request("DELETE", server.url + "/api/delete", json={"model": name})
    assert not (server.models_dir / "blobs" / f"sha256-{layer.digest[7:]}").exists()
    _post(server, "/api/pull", {"model": name, "insecure": True})

    after = Manifest.from_json(store.read_manifest_bytes(Name.parse(name)))
    assert after.digests == before.digests
    shown = _post(server, "/api/show", {"model": name}).json()
    assert "vision" in shown["capabilities"]
    image = base64.b64encode(png_bytes(32, 32, seed=4)).decode()
    answer = _post(
        server,
        "/api/generate",
        {
            "model": name,
            "prompt": "what is this?",
            "images": [image],
            "raw": True,
            "stream": False,
            "options": {"num_predict": 4, "temperature": 0},
        },
    ).json()
    assert answer["prompt_eval_count"] >= 16
