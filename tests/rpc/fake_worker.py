"""A stand-in for a llama.cpp RPC worker that speaks just the probe's part of the protocol
(hello, device count, device memory), or misbehaves on purpose."""

from __future__ import annotations

import contextlib
import functools
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator


def _recv(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError
        data += chunk
    return data


def _serve_one(conn: socket.socket, version: tuple[int, int, int], devices: list[int]) -> None:
    with conn:
        while True:
            try:
                command = _recv(conn, 1)[0]
                (size,) = struct.unpack("<Q", _recv(conn, 8))
                payload = _recv(conn, size)
            except ConnectionError:
                return
            if command == 14:
                answer = bytes([*version, 0]) + bytes(24)
            elif command == 15:
                answer = struct.pack("<I", len(devices))
            elif command == 11:
                (index,) = struct.unpack("<I", payload)
                answer = struct.pack("<QQ", devices[index], 2 * devices[index])
            else:
                return
            conn.sendall(struct.pack("<Q", len(answer)) + answer)


@contextlib.contextmanager
def fake_worker(
    *,
    version: tuple[int, int, int] = (7, 0, 0),
    devices: tuple[int, ...] = (1 << 30,),
    mode: str = "ok",
) -> Iterator[str]:
    """Yields ``127.0.0.1:port``. ``mode``: ``ok``; ``silent`` (listens, never accepts:
    a worker busy with another client); ``close`` (accepts and hangs up at once);
    ``garbage`` (answers the hello with the wrong size)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    stop = threading.Event()

    def loop() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            if mode == "close":
                conn.close()
            elif mode == "garbage":
                with conn, contextlib.suppress(OSError):
                    conn.recv(64)
                    conn.sendall(struct.pack("<Q", 3) + b"abc")
            else:
                _serve_one(conn, version, list(devices))

    thread = None if mode == "silent" else threading.Thread(target=loop, daemon=True)
    if thread is not None:
        thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        if thread is not None:
            thread.join(2)
        server.close()


def closed_port() -> str:
    """An address where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@functools.cache
def engine_has_rpc() -> bool:
    """Whether the installed engine has llama.cpp's RPC backend (asked in a child process:
    importing llama_cpp here would leave its /dev/null handles to the end of the session)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_rpc())",
        ],
        capture_output=True,
        timeout=60,
    )
    return done.returncode == 0
