"""``create`` takes server-side paths only from the server's own machine.

A remote client could otherwise import any file the server can read and probe which paths
exist ("no such file" vs "not in GGUF format"). The app runs in-process behind httpx's ASGI
transport, whose ``client`` address decides who is asking.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.config import Settings
from corral.scheduler import Scheduler
from corral.server.app import create_app
from corral.server.create_plan import _is_loopback
from corral.store import ModelStore
from tests.convert.tiny import write_tiny_bert
from tests.registry.tiny import write_tiny_gguf

REMOTE = ("203.0.113.7", 40000)
REFUSED = "server paths are accepted only from the server's own machine"


async def _no_runner(config: Any) -> Any:
    raise AssertionError("create never starts a runner")


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def app(models: Path) -> Any:
    settings = Settings(models_dir=models)
    store = ModelStore(models)
    store.blobs_dir.mkdir(parents=True)
    return create_app(settings, store, Scheduler(settings, _no_runner))


def _client(app: Any, address: tuple[str, int]) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=address)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:11434")


@pytest.fixture
async def remote(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app, REMOTE) as client:
        yield client


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "weights.gguf")


async def _create(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/api/create", json={"model": "m", "stream": False, **body})


def _error(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    return str(response.json()["error"])


async def test_a_remote_client_cannot_name_server_files(
    remote: httpx.AsyncClient, gguf: Path, tmp_path: Path, models: Path
) -> None:
    existing, missing = str(gguf), str(tmp_path / "nothing-here.gguf")
    seen = [_error(await _create(remote, **{"from": path})) for path in (existing, missing)]
    assert all(REFUSED in message for message in seen)
    # the same answer whether or not the path exists: nothing to probe
    assert seen[0].replace(existing, "P") == seen[1].replace(missing, "P")
    assert _error(await _create(remote, modelfile="FROM /etc/hostname")).count(REFUSED) == 1
    assert list((models / "blobs").iterdir()) == []  # nothing was imported


async def test_a_remote_client_cannot_name_server_folders_or_adapters(
    remote: httpx.AsyncClient, gguf: Path, tmp_path: Path
) -> None:
    write_tiny_bert(tmp_path / "bert")
    assert REFUSED in _error(await _create(remote, **{"from": str(tmp_path / "bert")}))
    digest = await _upload(remote, gguf)
    modelfile = f"FROM {digest}\nADAPTER {gguf}\n"
    assert REFUSED in _error(await _create(remote, modelfile=modelfile))
    assert (await remote.get("/api/tags")).json()["models"] == []


async def _upload(client: httpx.AsyncClient, path: Path) -> str:
    data = await asyncio.to_thread(path.read_bytes)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert (await client.post(f"/api/blobs/{digest}", content=data)).status_code == 201
    return digest


async def test_a_remote_client_may_name_store_blobs(
    remote: httpx.AsyncClient, gguf: Path, models: Path
) -> None:
    """``show --modelfile`` prints blob paths; naming one says no more than HEAD does."""
    digest = await _upload(remote, gguf)
    blob = models / "blobs" / f"sha256-{digest[7:]}"
    response = await _create(remote, modelfile=f"FROM {blob}\nPARAMETER top_k 3\n")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success"}
    other = models / "blobs" / ("sha256-" + "0" * 64)
    assert "not found" in _error(await _create(remote, **{"from": str(other)}))


async def test_relative_paths_are_explained_to_anyone(remote: httpx.AsyncClient) -> None:
    assert "a relative path means nothing" in _error(await _create(remote, **{"from": "./w.gguf"}))


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
async def test_a_local_client_may_name_server_files(app: Any, gguf: Path, address: str) -> None:
    async with _client(app, (address, 40000)) as local:
        assert "not in GGUF format" in _error(await _create(local, **{"from": "/etc/hostname"}))
        assert "no such file" in _error(await _create(local, **{"from": "/no/such/file.gguf"}))
        response = await _create(local, **{"from": str(gguf)})
        assert response.status_code == 200, response.text
        tags = (await local.get("/api/tags")).json()["models"]
    assert [m["name"] for m in tags] == ["m:latest"]


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("0.0.0.0", False),
        ("localhost", False),  # a name, not an address: never trusted
        ("testclient", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback(host: str | None, local: bool) -> None:
    assert _is_loopback(host) is local


async def test_the_refusal_names_the_way_out(remote: httpx.AsyncClient) -> None:
    message = _error(await _create(remote, **{"from": "/srv/models/x.gguf"}))
    assert re.search(r"upload the file with POST /api/blobs", message)
