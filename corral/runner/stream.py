"""One streamed call to a runner, read lean: an HTTP/1.1 POST on its own loopback connection
and the NDJSON lines of the answer, from a chunked body (or one closed by the runner).

Why not httpx here: a completion is read a token at a time, and httpx's layers (anyio
streams, h11 events, a timeout scope per read) cost the server ~0.3 ms of CPU per token,
which on a small machine the runner's decode threads feel (``bench/bench_server.py``).
The runner is our own (``corral.runner.server``), on loopback; anything it sends that this
reader does not expect is a ``StreamError``, which the caller treats as the runner failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["StreamError", "StreamResponse", "open_stream"]

_MAX_LINE = 64 * 1024 * 1024  # a final event may carry every token id of a long context


class StreamError(Exception):
    """The connection failed or the runner answered in a shape this reader does not know."""


class StreamResponse:
    """An answer's status and body; ``lines()`` yields the body's NDJSON lines as bytes."""

    def __init__(self, reader: asyncio.StreamReader, status: int, headers: dict[str, str]) -> None:
        self._reader = reader
        self.status = status
        self._headers = headers

    async def read(self) -> bytes:
        """The whole body (an error answer)."""
        return b"".join([piece async for piece in self._pieces()])

    async def lines(self) -> AsyncIterator[bytes]:
        pending = b""
        async for piece in self._pieces():
            pending += piece
            if b"\n" not in pending:
                continue
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line
        if pending:
            yield pending

    async def _pieces(self) -> AsyncIterator[bytes]:
        try:
            if "chunked" in self._headers.get("transfer-encoding", ""):
                while True:
                    size_line = await self._reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        return
                    if size > _MAX_LINE:
                        raise StreamError(f"runner sent a {size}-byte chunk")
                    data = await self._reader.readexactly(size + 2)
                    if data[-2:] != b"\r\n":
                        raise StreamError("runner sent a malformed chunk")
                    yield data[:-2]
            elif "content-length" in self._headers:
                yield await self._reader.readexactly(int(self._headers["content-length"]))
            else:  # the body ends with the connection
                while piece := await self._reader.read(65536):
                    yield piece
        except (OSError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
            raise StreamError(str(exc) or type(exc).__name__) from exc


@contextlib.asynccontextmanager
async def open_stream(
    port: int, path: str, payload: dict[str, Any]
) -> AsyncIterator[StreamResponse]:
    """POST ``payload`` as JSON to ``path`` on the runner at ``127.0.0.1:port``; the answer
    with its status and headers read. Leaving the block closes the connection."""
    body = json.dumps(payload).encode()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=_MAX_LINE)
    except OSError as exc:
        raise StreamError(str(exc)) from exc
    try:
        try:
            writer.write(
                b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (path.encode(), port, len(body), body)
            )
            await writer.drain()
            status_line = await reader.readuntil(b"\r\n")
            parts = status_line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise StreamError(f"runner sent an unexpected status line: {status_line!r}")
            status = int(parts[1])
            headers: dict[str, str] = {}
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip().lower()
        except (OSError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
            raise StreamError(str(exc) or type(exc).__name__) from exc
        yield StreamResponse(reader, status, headers)
    finally:
        writer.close()  # the runner sees the client leave and cancels what is left
