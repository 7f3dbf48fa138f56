"""Bad requests get Ollama's status and message, and the server keeps answering."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from corral.store import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_MODEL,
    Layer,
    Manifest,
    ModelConfig,
    ModelStore,
    Name,
)
from tests.conftest import ServerProcess

pytestmark = pytest.mark.model


def _post(server: ServerProcess, path: str, body: object | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, timeout=60)


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/generate", b"", 400, "missing request body"),
        ("/api/generate", b"{oops", 400, "invalid"),
        ("/api/generate", {"prompt": "hi"}, 400, "model is required"),
        ("/api/chat", {"messages": []}, 400, "model is required"),
        ("/api/generate", {"model": "../../etc/passwd", "prompt": "hi"}, 400, "invalid model name"),
        ("/api/generate", {"model": "a/b/c/d", "prompt": "hi"}, 400, "invalid model name"),
        (
            "/api/generate",
            {"model": "smollm2:135m", "prompt": "hi", "options": {"num_ctx": "large"}},
            400,
            'option "num_ctx" must be of type integer',
        ),
        (
            "/api/generate",
            {"model": "smollm2:135m", "prompt": "hi", "options": {"temperature": [1]}},
            400,
            'option "temperature" must be of type float32',
        ),
        (
            "/api/generate",
            {"model": "smollm2:135m", "prompt": "hi", "keep_alive": "soon"},
            400,
            'time: invalid duration "soon"',
        ),
        ("/api/generate", {"model": "smollm2:135m", "prompt": 5}, 400, "prompt"),
        (
            "/api/generate",
            {"model": "nobody/nothing", "prompt": "hi"},
            404,
            "model 'nobody/nothing' not found",
        ),
        ("/api/chat", {"model": "smollm2:135m", "messages": "hi"}, 400, "messages"),
        ("/api/show", {"model": "missing"}, 404, "model 'missing' not found"),
        ("/api/show", {}, 400, "model is required"),
        ("/api/pull", {"model": "bad name!"}, 400, "invalid model name"),
        (
            "/api/copy",
            {"source": "smollm2:135m", "destination": "x/../y"},
            400,
            'destination "x/../y" is invalid',
        ),
        ("/api/delete", {"model": "nothing-here"}, 404, "not found"),
        (
            "/api/generate",
            {"model": "smollm2:135m", "prompt": "hi", "think": True},
            400,
            '"smollm2:135m" does not support thinking',
        ),
        (
            "/api/chat",
            {
                "model": "smollm2:135m",
                "messages": [{"role": "user", "content": "hi", "images": ["aGk="]}],
            },
            400,
            "does not support vision",
        ),
        (
            "/api/generate",
            {"model": "smollm2:135m", "prompt": "hi", "format": "xml"},
            400,
            "invalid format",
        ),
        (
            "/api/generate",
            {"model": "smollm2:135m", "prompt": "hi", "raw": True, "system": "x"},
            400,
            "raw mode does not support template, system, or context",
        ),
    ],
)
def test_bad_requests(
    server: ServerProcess, smollm2: str, path: str, body: object, status: int, message: str
) -> None:
    if path == "/api/delete":
        response = httpx.request("DELETE", server.url + path, json=body)
    else:
        response = _post(server, path, body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert httpx.get(server.url + "/api/version").status_code == 200


@pytest.mark.parametrize(
    ("keep_alive", "message"),
    [
        ("10", 'time: missing unit in duration "10"'),  # a string is a Go duration
        ("1h30", 'time: missing unit in duration "1h30"'),
        ("10x", 'time: unknown unit "x" in duration "10x"'),
        ("soon", 'time: invalid duration "soon"'),
        ("", 'time: invalid duration ""'),
        (True, "Unsupported type: 'bool'"),
        ([10], "Unsupported type: '[]interface {}'"),
        ({"s": 1}, "Unsupported type: 'map[string]interface {}'"),
    ],
)
@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_bad_keep_alive_has_gos_words(
    server: ServerProcess, smollm2: str, path: str, keep_alive: object, message: str
) -> None:
    body: dict[str, object] = {"model": smollm2, "keep_alive": keep_alive, "stream": False}
    response = _post(server, path, body)
    assert (response.status_code, response.json()) == (400, {"error": message})
    assert httpx.get(server.url + "/api/version").status_code == 200


def test_unknown_route_and_method(server: ServerProcess) -> None:
    response = httpx.get(server.url + "/api/nothing")
    assert (response.status_code, response.text) == (404, "404 page not found")
    response = httpx.get(server.url + "/api/generate")
    assert (response.status_code, response.text) == (405, "405 method not allowed")


def _write_model(store: ModelStore, name: str, weights: bytes) -> None:
    blob = store.write_blob_bytes(weights)
    config = store.write_blob_bytes(ModelConfig(model_family="llama").to_json())
    manifest = Manifest(
        config=Layer(MEDIA_TYPE_CONFIG, config.digest, config.size),
        layers=(Layer(MEDIA_TYPE_MODEL, blob.digest, blob.size),),
    )
    store.write_manifest(Name.parse(name), manifest)


def test_corrupt_gguf_gives_clear_error(server: ServerProcess, smollm2: str) -> None:
    store = ModelStore(server.models_dir)
    _write_model(store, "broken:truncated", b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    _write_model(store, "broken:notgguf", b"this is not a model at all" * 10)
    for name in ("broken:truncated", "broken:notgguf"):
        response = _post(server, "/api/generate", {"model": name, "prompt": "hi"})
        assert response.status_code == 400, response.text
        assert "GGUF" in response.json()["error"]
    assert (
        _post(
            server,
            "/api/generate",
            {
                "model": "smollm2:135m",
                "prompt": "hi",
                "stream": False,
                "options": {"num_predict": 1},
            },
        ).status_code
        == 200
    )


def test_runner_load_failure_is_500_with_reason(
    server: ServerProcess, smollm2: str, tmp_path: object
) -> None:
    import gguf

    path = server.models_dir.parent / "alien.gguf"
    writer = gguf.GGUFWriter(str(path), "alienarch")
    import numpy as np

    writer.add_tensor("blk.0.weight", np.zeros((32, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _write_model(ModelStore(server.models_dir), "alien:latest", path.read_bytes())
    started = time.monotonic()
    response = _post(server, "/api/generate", {"model": "alien", "prompt": "hi"})
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert "llama runner process has terminated" in error
    assert "alienarch" in error or "failed to load model" in error
    assert time.monotonic() - started < 60
    assert httpx.get(server.url + "/api/ps").json()["models"] == [] or all(
        m["name"] != "alien:latest" for m in httpx.get(server.url + "/api/ps").json()["models"]
    )


def test_runner_killed_mid_stream(server: ServerProcess, smollm2: str) -> None:
    body = {
        "model": "smollm2:135m",
        "prompt": "Write a very long story about dragons.",
        "options": {"num_predict": 2000, "temperature": 0},
    }
    with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        next(lines)
        pids = server.runner_pids()
        assert len(pids) == 1
        os.kill(pids[0], signal.SIGKILL)
        rest = [json.loads(line) for line in lines if line]
    assert "error" in rest[-1]
    assert "stopped" in rest[-1]["error"] or "runner" in rest[-1]["error"]
    again = _post(
        server,
        "/api/generate",
        {"model": "smollm2:135m", "prompt": "hi", "stream": False, "options": {"num_predict": 2}},
    )
    assert again.status_code == 200, again.text
    assert again.json()["done"] is True


def _in_use(server: ServerProcess) -> bool:
    metrics = httpx.get(server.url + "/metrics").text
    return 'corral_runner_requests{model="smollm2:135m"} 1.0' in metrics


def test_runner_killed_during_a_non_streaming_request(server: ServerProcess, smollm2: str) -> None:
    body = {
        "model": smollm2,
        "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
        "raw": True,
        "stream": False,
        "options": {"num_predict": 4000, "temperature": 0},
    }
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_post, server, "/api/generate", body)
        deadline = time.monotonic() + 60
        while not _in_use(server):
            assert time.monotonic() < deadline, server.log_tail()
            assert not pending.done(), pending.result().text
            time.sleep(0.05)
        (pid,) = server.runner_pids()
        os.kill(pid, signal.SIGKILL)
        response = pending.result(timeout=60)
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert error.startswith("model runner has unexpectedly stopped")
    assert "killed by signal 9 (SIGKILL)" in error
    log = server.log_path.read_text()
    assert "stopped unexpectedly: killed by signal 9 (SIGKILL)" in log
    again = _post(
        server,
        "/api/generate",
        {"model": smollm2, "prompt": "hi", "stream": False, "options": {"num_predict": 2}},
    )
    assert again.status_code == 200, again.text
    assert server.runner_pids() != [pid]
