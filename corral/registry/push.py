"""Push a model: every blob the registry lacks, then the manifest, byte for byte.

Statuses as Ollama: ``retrieving manifest``; per blob (layers, then config) ``pushing <12
hex>`` with ``digest``/``total``/``completed``; ``pushing manifest``; ``success``.

Each blob: ``HEAD /v2/<repo>/blobs/<digest>`` (200: already there, done); otherwise
``POST /v2/<repo>/blobs/uploads/`` opens an upload session, the bytes go in ``PATCH``
chunks (``Content-Range: <first>-<last>``, following the ``Location`` each response
returns), and ``PUT <location>?digest=<digest>`` closes it; the registry checks the digest.
The manifest is sent as the exact bytes stored locally, so the model ID is the same on both
sides.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO, Final
from urllib.parse import urlencode, urljoin, urlsplit

import httpx

from corral.registry.client import RegistryClient, unreachable
from corral.registry.errors import RegistryError
from corral.registry.events import ProgressEvent
from corral.store import Layer, Manifest, ModelStore, Name

__all__ = ["push_model"]

logger = logging.getLogger(__name__)

Report = Callable[[ProgressEvent], None]

CHUNK_BYTES: Final = 64 << 20
_READ_BYTES: Final = 1 << 20


async def push_model(
    store: ModelStore, name: Name, report: Report, *, insecure: bool = False
) -> None:
    """Push the local model ``name`` to the registry its name points at."""
    report({"status": "retrieving manifest"})
    data = await asyncio.to_thread(store.read_manifest_bytes, name)
    manifest = Manifest.from_json(data)
    async with RegistryClient(name, insecure=insecure, scope_actions="pull,push") as client:
        seen: set[str] = set()
        for layer in [*manifest.layers, manifest.config]:
            if layer.digest in seen:
                continue
            seen.add(layer.digest)
            await _push_blob(client, store, layer, report)
        report({"status": "pushing manifest"})
        response = await client.request(
            "PUT",
            client.url(f"manifests/{name.tag}"),
            headers={"Content-Type": manifest.media_type},
            content=data,
        )
        if response.status_code >= 400:
            raise await client.status_error(response)
    report({"status": "success"})


async def _push_blob(
    client: RegistryClient, store: ModelStore, layer: Layer, report: Report
) -> None:
    status = f"pushing {layer.digest.removeprefix('sha256:')[:12]}"

    def progress(completed: int) -> None:
        report(
            {"status": status, "digest": layer.digest, "total": layer.size, "completed": completed}
        )

    head = await client.request("HEAD", client.url(f"blobs/{layer.digest}"))
    if head.status_code == 200:
        progress(layer.size)
        return
    progress(0)
    opened = await client.request("POST", client.url("blobs/uploads/"))
    if opened.status_code >= 400:
        raise await client.status_error(opened)
    location = _next_location(client, opened, client.url("blobs/uploads/"))
    path = store.blob_path(layer.digest)
    with path.open("rb") as f:
        offset = 0
        while offset < layer.size:
            length = min(CHUNK_BYTES, layer.size - offset)
            location = await _patch(client, location, f, offset, length, progress)
            offset += length
    separator = "&" if urlsplit(location).query else "?"
    done = await client.request(
        "PUT",
        location + separator + urlencode({"digest": layer.digest}),
        headers={"Content-Length": "0"},
    )
    if done.status_code >= 400:
        raise await client.status_error(done)
    progress(layer.size)


async def _patch(
    client: RegistryClient,
    location: str,
    f: BinaryIO,
    offset: int,
    length: int,
    progress: Callable[[int], None],
) -> str:
    async def body() -> AsyncIterator[bytes]:
        sent = 0
        while sent < length:
            data = await asyncio.to_thread(
                _read_at, f, offset + sent, min(_READ_BYTES, length - sent)
            )
            if not data:
                raise RegistryError("the blob file is shorter than its manifest says")
            sent += len(data)
            progress(offset + sent)
            yield data

    headers = {
        **client.auth_headers(),
        "Content-Type": "application/octet-stream",
        "Content-Range": f"{offset}-{offset + length - 1}",
        "Content-Length": str(length),
    }
    try:
        response = await client.http.patch(location, content=body(), headers=headers)
    except httpx.TransportError as exc:
        raise unreachable("PATCH", location, exc) from exc
    if response.status_code >= 400:
        raise await client.status_error(response)
    return _next_location(client, response, location)


def _read_at(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def _next_location(client: RegistryClient, response: httpx.Response, current: str) -> str:
    location = str(
        response.headers.get("docker-upload-location") or response.headers.get("location") or ""
    )
    if not location:
        raise RegistryError(f"{response.status_code}: the registry gave no upload location")
    url = urljoin(current, location)
    if urlsplit(url).scheme not in ("http", "https"):
        raise RegistryError("the registry gave an upload location that is not HTTP")
    if urlsplit(url).scheme == "http" and not client.insecure:
        raise RegistryError("insecure protocol http")
    return url
