"""``HEAD`` and ``POST /api/blobs/{digest}``: the blob upload endpoints.

The CLI uploads a Modelfile's local files here before it asks for a create, so the server
never needs to read a client's paths. The digest goes through :func:`parse_digest`; an
upload is hashed on the way in and stored only if it matches.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from corral.store import ModelStore, parse_digest

__all__ = ["Blobs"]

_UPLOAD_BATCH = 4 * 1024 * 1024


class Blobs:
    """The blob handlers over one store."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    async def head_blob(self, request: Request) -> Response:
        digest = parse_digest(request.path_params["digest"])
        if await asyncio.to_thread(self.store.has_blob, digest):
            return Response(status_code=200)
        return Response(status_code=404)

    async def post_blob(self, request: Request) -> Response:
        digest = parse_digest(request.path_params["digest"])
        if await asyncio.to_thread(self.store.has_blob, digest):
            # Drain nothing: the client learns at once that the upload is not needed.
            return Response(status_code=200)
        writer = await asyncio.to_thread(self.store.open_blob_writer)
        try:
            batch: list[bytes] = []
            pending = 0
            async for chunk in request.stream():
                batch.append(chunk)
                pending += len(chunk)
                if pending >= _UPLOAD_BATCH:
                    await asyncio.to_thread(writer.write, b"".join(batch))
                    batch, pending = [], 0
            if batch:
                await asyncio.to_thread(writer.write, b"".join(batch))
            _, created = await asyncio.to_thread(writer.commit, digest)
        finally:
            await asyncio.to_thread(writer.abort)
        return Response(status_code=201 if created else 200)
