"""``/api/pull`` and ``/api/push`` failures, and ``name@digest``, through the app in-process.

A bundled import that fails (a full disk) reaches the client as an error and leaves no
unretrieved task exception behind; an unreachable registry is a 502 with Ollama's message;
a name with a digest resolves to that exact manifest or not at all.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.config import Settings
from corral.scheduler import Scheduler
from corral.server import transfer
from corral.server.app import create_app
from corral.store import ModelStore
from tests.registry.tiny import write_tiny_gguf


async def _no_runner(config: Any) -> Any:
    raise AssertionError("a pull never starts a runner")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    models = tmp_path / "models"
    settings = Settings(models_dir=models)
    store = ModelStore(models)
    store.blobs_dir.mkdir(parents=True)
    app = create_app(settings, store, Scheduler(settings, _no_runner))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:11434") as c:
        yield c


def _full_disk(store: Any, name: Any, bundled: Any, report: Any, **_options: Any) -> None:
    report({"status": "pulling manifest"})
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("stream", [True, False])
async def test_a_full_disk_bundled_pull_is_reported_and_retrieved(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    monkeypatch.setattr(transfer, "_bundled_installed", lambda bundled: True)
    monkeypatch.setattr(transfer, "pull_bundled", _full_disk)
    unhandled: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: unhandled.append(ctx))

    response = await client.post("/api/pull", json={"model": "smollm2:135m", "stream": stream})
    await asyncio.sleep(0.05)
    gc.collect()
    await asyncio.sleep(0)

    if stream:
        assert response.status_code == 200
        last = json.loads(response.text.splitlines()[-1])
    else:
        assert response.status_code == 500
        last = response.json()
    assert "No space left on device" in last["error"], last
    assert not unhandled, [c.get("message") for c in unhandled]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_registry_is_a_502_on_pull(client: httpx.AsyncClient) -> None:
    port = _closed_port()
    name = f"127.0.0.1:{port}/test/m:1"
    response = await client.post(
        "/api/pull", json={"model": name, "insecure": True, "stream": False}
    )
    assert response.status_code == 502, response.text
    assert response.json() == {
        "error": f'pull model manifest: Get "http://127.0.0.1:{port}/v2/test/m/manifests/1":'
        f" dial tcp 127.0.0.1:{port}: connect: connection refused"
    }


async def test_an_unreachable_registry_is_a_502_on_push(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    data = write_tiny_gguf(tmp_path / "t.gguf", seed=1).read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert (await client.post(f"/api/blobs/{digest}", content=data)).status_code == 201
    port = _closed_port()
    name = f"127.0.0.1:{port}/test/m:1"
    created = await client.post(
        "/api/create", json={"model": name, "files": {"t.gguf": digest}, "stream": False}
    )
    assert created.status_code == 200, created.text
    response = await client.post(
        "/api/push", json={"model": name, "insecure": True, "stream": False}
    )
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error.endswith(
        f'"http://127.0.0.1:{port}/v2/test/m/blobs/{digest}":'
        f" dial tcp 127.0.0.1:{port}: connect: connection refused"
    ), error


async def _create_tiny(client: httpx.AsyncClient, tmp_path: Path, name: str) -> None:
    data = write_tiny_gguf(tmp_path / "t.gguf", seed=1).read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert (await client.post(f"/api/blobs/{digest}", content=data)).status_code == 201
    created = await client.post(
        "/api/create", json={"model": name, "files": {"t.gguf": digest}, "stream": False}
    )
    assert created.status_code == 200, created.text


async def test_a_name_with_a_digest_resolves_by_that_digest_only(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    await _create_tiny(client, tmp_path, "m:1")
    (listed,) = (await client.get("/api/tags")).json()["models"]
    right = f"m:1@sha256:{listed['digest']}"
    wrong = "m:1@sha256:" + "0" * 64

    assert (await client.post("/api/show", json={"model": right})).status_code == 200
    shown = await client.post("/api/show", json={"model": wrong})
    assert shown.status_code == 404
    assert shown.json() == {"error": f"model '{wrong}' not found"}

    for path, body in [
        ("/api/pull", {"model": wrong}),
        ("/api/copy", {"source": right, "destination": "n:1"}),
        ("/api/copy", {"source": "m:1", "destination": wrong}),
    ]:
        refused = await client.post(path, json=body)
        assert refused.status_code == 400, (path, refused.text)
        assert refused.json()["error"].startswith("invalid model name"), refused.text
    deleted = await client.request("DELETE", "/api/delete", json={"model": wrong})
    assert deleted.status_code == 400, deleted.text
    assert len((await client.get("/api/tags")).json()["models"]) == 1
