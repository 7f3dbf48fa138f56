"""POST /api/create and /api/blobs on a real server with real (tiny, random) GGUF files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.convert.tiny import write_tiny_bert, write_tiny_llama
from tests.registry.tiny import write_tiny_gguf

pytestmark = pytest.mark.model


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _create(server: ServerProcess, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + "/api/create", json=body, timeout=120)


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


def _show(server: ServerProcess, model: str) -> dict[str, Any]:
    response = httpx.post(server.url + "/api/show", json={"model": model}, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _tags(server: ServerProcess) -> dict[str, dict[str, Any]]:
    models = httpx.get(server.url + "/api/tags", timeout=30).json()["models"]
    return {m["name"]: m for m in models}


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def uploaded(server: ServerProcess, gguf_file: Path) -> str:
    data = gguf_file.read_bytes()
    digest = _digest(data)
    url = f"{server.url}/api/blobs/{digest}"
    assert httpx.head(url).status_code == 404
    assert httpx.post(url, content=data, timeout=60).status_code == 201
    assert httpx.post(url, content=data, timeout=60).status_code == 200
    assert httpx.head(url).status_code == 200
    return digest


def test_blob_upload_mismatch_stores_nothing(server: ServerProcess) -> None:
    wrong = _digest(b"something else")
    response = httpx.post(f"{server.url}/api/blobs/{wrong}", content=b"payload")
    assert response.status_code == 400
    assert response.json()["error"] == (
        f'digest mismatch, expected "{wrong}", got "{_digest(b"payload")}"'
    )
    assert httpx.head(f"{server.url}/api/blobs/{wrong}").status_code == 404
    assert httpx.head(f"{server.url}/api/blobs/{_digest(b'payload')}").status_code == 404
    leftovers = [p.name for p in (server.models_dir / "blobs").iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize(
    "digest", ["sha256:abc", "sha256:" + "g" * 64, "sha256:" + "a" * 64 + "%0A", "md5:00"]
)
def test_blob_bad_digest(server: ServerProcess, digest: str) -> None:
    response = httpx.post(f"{server.url}/api/blobs/{digest}", content=b"x")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid digest format"
    assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 400


def test_create_from_uploaded_file_with_every_field(server: ServerProcess, uploaded: str) -> None:
    response = _create(
        server,
        {
            "model": "tiny-all",
            "files": {"tiny.gguf": uploaded},
            "template": "{{ .System }} {{ .Prompt }}",
            "system": "Be brief.",
            "parameters": {"temperature": 0.25, "stop": ["<end>", "<eot>"], "num_ctx": "512"},
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
            "license": ["MIT", "second"],
        },
    )
    assert response.status_code == 200, response.text
    statuses = [e["status"] for e in _events(response)]
    assert statuses[0] == "parsing GGUF"
    assert f"using existing layer {uploaded}" in statuses
    assert statuses[-2:] == ["writing manifest", "success"]
    shown = _show(server, "tiny-all")
    assert shown["template"] == "{{ .System }} {{ .Prompt }}"
    assert shown["system"] == "Be brief."
    assert shown["license"] == "MIT\nsecond"
    assert shown["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]
    assert "temperature" in shown["parameters"] and "<eot>" in shown["parameters"]
    assert shown["details"]["family"] == "llama"
    assert shown["details"]["quantization_level"] == "F32"
    assert "tiny-all:latest" in _tags(server)


def test_create_from_modelfile_with_server_path(server: ServerProcess, gguf_file: Path) -> None:
    modelfile = f'FROM {gguf_file}\nPARAMETER top_k 7\nSYSTEM """multi\nline"""\n'
    response = _create(server, {"model": "tiny-path", "modelfile": modelfile, "stream": False})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success"}
    shown = _show(server, "tiny-path")
    assert shown["system"] == "multi\nline"
    assert "top_k" in shown["parameters"]


def test_create_from_model_name_inherits(server: ServerProcess, uploaded: str) -> None:
    base = {"model": "tiny-base", "files": {"m.gguf": uploaded}}
    base |= {"system": "base system", "parameters": {"top_k": 5}, "template": "{{ .Prompt }}"}
    assert _create(server, base).status_code == 200
    response = _create(
        server,
        {"model": "tiny-child", "modelfile": "FROM tiny-base\nPARAMETER temperature 0.1\n"},
    )
    assert response.status_code == 200, response.text
    shown = _show(server, "tiny-child")
    assert shown["system"] == "base system"
    assert shown["template"] == "{{ .Prompt }}"
    assert "top_k" in shown["parameters"] and "temperature" in shown["parameters"]


def test_show_modelfile_round_trip(server: ServerProcess, uploaded: str) -> None:
    body = {
        "model": "tiny-rt",
        "files": {"m.gguf": uploaded},
        "template": "{{ if .System }}<sys>{{ .System }}</sys>{{ end }}{{ .Prompt }}",
        "system": "two\nlines",
        "parameters": {"stop": ["<|im_end|>"], "temperature": 0.5, "use_mmap": False},
        "license": "Apache",
        "messages": [{"role": "user", "content": "hello"}],
    }
    assert _create(server, body).status_code == 200
    modelfile = _show(server, "tiny-rt")["modelfile"]
    response = _create(server, {"model": "tiny-rt2", "modelfile": modelfile})
    assert response.status_code == 200, response.text
    tags = _tags(server)
    assert tags["tiny-rt2:latest"]["digest"] == tags["tiny-rt:latest"]["digest"]


def test_quantize_f32_to_q4_k_m(server: ServerProcess, uploaded: str) -> None:
    response = _create(
        server, {"model": "tiny-q", "files": {"m.gguf": uploaded}, "quantize": "q4_K_M"}
    )
    assert response.status_code == 200, response.text
    statuses = [e["status"] for e in _events(response)]
    assert "quantizing F32 model to Q4_K_M" in statuses
    assert _show(server, "tiny-q")["details"]["quantization_level"] == "Q4_K_M"
    again = _create(server, {"model": "tiny-qq", "from": "tiny-q", "quantize": "q8_0"})
    assert again.status_code == 400
    assert "quantization is only supported for F16, BF16 and F32 models" in again.text


def _error(response: httpx.Response) -> str:
    return str(response.json()["error"])


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"modelfile": "FROM x"}, 400, "model is required"),
        ({"model": "../evil", "from": "x"}, 400, "invalid model name"),
        ({"model": "a"}, 400, "neither 'from' or 'files' was specified"),
        ({"model": "a", "modelfile": "FROM x\nBOGUS"}, 400, "line 2: command must be one of"),
        ({"model": "a", "modelfile": "SYSTEM hi"}, 400, "no FROM line"),
        ({"model": "a", "modelfile": "FROM x\nPARAMETER nope 1"}, 400, "unknown parameter"),
        ({"model": "a", "from": "./rel.gguf"}, 400, "invalid model reference"),
        ({"model": "a", "from": "/etc/hostname"}, 400, "supplied file was not in GGUF format"),
        ({"model": "a", "from": "/no/such/file.gguf"}, 400, "no such file"),
        ({"model": "a", "from": "@sha256:" + "0" * 64}, 400, "not found"),
        ({"model": "a", "files": {"../x.gguf": "sha256:" + "0" * 64}}, 400, "must be relative"),
        ({"model": "a", "files": {"/x.gguf": "sha256:" + "0" * 64}}, 400, "must be relative"),
        ({"model": "a", "files": {"x.gguf": "sha256:zz"}}, 400, "invalid digest format"),
        ({"model": "a", "files": {"x.gguf": ""}}, 400, "invalid digest format"),
        ({"model": "a", "from": "x", "parameters": {"nope": 1}}, 400, "unknown parameter"),
        ({"model": "a", "from": "x", "parameters": {"top_k": "z"}}, 400, "invalid int value"),
        (
            {"model": "a", "modelfile": "FROM x\nPARAMETER num_ctx 99999999999999999999999"},
            400,
            "line 2: invalid int value [99999999999999999999999]",
        ),
        (
            {"model": "a", "from": "x", "parameters": {"num_ctx": 99999999999999999999999}},
            400,
            "invalid int value [99999999999999999999999]",
        ),
        ({"model": "a", "from": "x", "parameters": {"num_ctx": 1e30}}, 400, "invalid int value"),
        ({"model": "a", "from": "x", "parameters": {"seed": "1_0"}}, 400, "invalid int value"),
        ({"model": "a", "from": "x", "parameters": {"top_p": 1e39}}, 400, "invalid float value"),
        (
            {"model": "a", "from": "x", "parameters": {"temperature": "inf"}},
            400,
            "invalid float value [inf]",
        ),
        (
            {"model": "a", "modelfile": "FROM x\nPARAMETER temperature NaN"},
            400,
            "line 2: invalid float value [NaN]",
        ),
        ({"model": "a", "from": "x", "messages": [{"role": "bot"}]}, 400, "message role"),
        ({"model": "a", "from": "x", "quantize": "q9_Z"}, 400, "unsupported quantization"),
    ],
)
def test_bad_create_requests(
    server: ServerProcess, body: dict[str, Any], status: int, message: str
) -> None:
    response = _create(server, body)
    assert response.status_code == status, response.text
    assert message in _error(response)
    assert httpx.get(server.url + "/api/version").status_code == 200


def test_two_adapters_refused(server: ServerProcess, uploaded: str) -> None:
    response = _create(
        server,
        {"model": "a", "files": {"m.gguf": uploaded}, "adapters": {"a": uploaded, "b": uploaded}},
    )
    assert response.status_code == 400
    assert _error(response) == "only one adapter is currently supported"


def test_bad_template_refused(server: ServerProcess, uploaded: str) -> None:
    response = _create(
        server, {"model": "a", "files": {"m.gguf": uploaded}, "template": "{{ .Prompt "}
    )
    assert response.status_code == 400
    assert "a:latest" not in _tags(server)


def test_writer_modelfile_round_trips_hostile_text(server: ServerProcess, uploaded: str) -> None:
    """ResolvedModel.modelfile (the writer) survives quotes, triple quotes and newlines."""
    from corral.server.models import ModelCatalog
    from corral.store import ModelStore

    body = {
        "model": "tiny-hostile",
        "files": {"m.gguf": uploaded},
        "template": '{{ if .System }}"""{{ .System }}"""{{ end }}{{ .Prompt }}"',
        "system": ' lead "quoted"\nand a trailing backslash \\',
        "parameters": {"stop": ['"""', " spaced "], "temperature": 1.0, "use_mmap": True},
        "license": ['"', ""],
        "messages": [{"role": "user", "content": "line\nline"}],
    }
    assert _create(server, body).status_code == 200
    model = ModelCatalog(ModelStore(server.models_dir)).resolve("tiny-hostile")
    text = model.modelfile(model.system, model.params)
    assert text.startswith('# Modelfile generated by "corral show"')
    response = _create(server, {"model": "tiny-hostile2", "modelfile": text})
    assert response.status_code == 200, response.text
    tags = _tags(server)
    assert tags["tiny-hostile2:latest"]["digest"] == tags["tiny-hostile:latest"]["digest"]


def _generate(server: ServerProcess, model: str) -> dict[str, Any]:
    body = {
        "model": model,
        "prompt": "hello world",
        "raw": True,
        "stream": False,
        "keep_alive": 0,
        "options": {"num_predict": 4, "temperature": 0},
    }
    response = httpx.post(server.url + "/api/generate", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_create_from_a_safetensors_folder_on_the_server(
    server: ServerProcess, tmp_path: Path
) -> None:
    write_tiny_llama(tmp_path / "llama")
    response = _create(server, {"model": "tiny-llama-st", "from": str(tmp_path / "llama")})
    assert response.status_code == 200, response.text
    statuses = [e["status"] for e in _events(response)]
    assert "converting model" in statuses and statuses[-1] == "success"
    details = _show(server, "tiny-llama-st")["details"]
    assert (details["family"], details["quantization_level"]) == ("llama", "F16")
    answer = _generate(server, "tiny-llama-st")
    assert answer["done"] is True and answer["eval_count"] >= 1

    write_tiny_bert(tmp_path / "bert")
    modelfile = f"FROM {tmp_path / 'bert'}\n"
    response = _create(server, {"model": "tiny-bert-st", "modelfile": modelfile, "stream": False})
    assert response.status_code == 200, response.text
    body = {"model": "tiny-bert-st", "input": ["the cat sat", "a dog"], "keep_alive": 0}
    embedded = httpx.post(server.url + "/api/embed", json=body, timeout=120)
    assert embedded.status_code == 200, embedded.text
    vectors = embedded.json()["embeddings"]
    assert len(vectors) == 2 and len(vectors[0]) == 32
    assert vectors[0] != vectors[1]
