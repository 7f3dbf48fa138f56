"""The lean reader of a runner's streamed answer (``corral.runner.stream``), against a raw
socket server that sends exactly the bytes given: lines split across chunks, an error body,
and the malformed or cut-off answers that must be a ``StreamError``, never a hang."""

from __future__ import annotations

import asyncio

import pytest

from corral.runner.stream import StreamError, open_stream

OK = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def serve(answer: bytes) -> tuple[asyncio.Server, int, list[bytes]]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def lines_of(answer: bytes) -> tuple[int, list[bytes]]:
    server, port, seen = await serve(answer)
    async with server, open_stream(port, "/completion", {"prompt": "hi"}) as response:
        status = response.status
        if status != 200:
            return status, [await response.read()]
        got = [line async for line in response.lines()]
    assert seen and seen[0].startswith(b"POST /completion HTTP/1.1\r\n")
    return status, got


async def test_lines_split_across_chunks_and_two_in_one() -> None:
    body = chunk(b'{"content": "a"}\n{"con') + chunk(b'tent": "b"}\n') + chunk(b'{"done": true}\n')
    status, got = await lines_of(OK + body + b"0\r\n\r\n")
    assert status == 200
    assert got == [b'{"content": "a"}', b'{"content": "b"}', b'{"done": true}']


async def test_an_error_answer_with_a_length() -> None:
    error = b'{"error": "bad"}'
    head = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(error)
    assert await lines_of(head + error) == (400, [error])


@pytest.mark.parametrize(
    "answer",
    [
        OK + b"zz\r\n",  # a chunk size that is no number
        OK + b"5\r\nabcdefg",  # a chunk without its CRLF
        OK + chunk(b'{"content": "a"}\n') + b"40\r\nshort",  # cut off mid-chunk
        b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP at all
    ],
)
async def test_a_malformed_or_cut_answer_is_a_stream_error(answer: bytes) -> None:
    with pytest.raises(StreamError):
        await lines_of(answer)


async def test_nobody_listening_is_a_stream_error() -> None:
    server, port, _ = await serve(b"")
    server.close()
    await server.wait_closed()
    with pytest.raises(StreamError):
        async with open_stream(port, "/completion", {}):
            pass
