"""Is a worker there, free, and speaking our protocol? Asked in Python, with a timeout.

llama.cpp's own client aborts the whole process when a worker is unreachable, refuses the
handshake or closes the connection, and it waits forever on one that is frozen or busy with
another client (a worker serves one client at a time; the next one queues in its listen
backlog without a word). So the server asks here, over a plain socket with a deadline,
before any runner is pointed at a worker, and a worker that just came back is asked again
before it is used.

The exchange (llama.cpp's RPC protocol 7.x, little-endian; request ``| cmd: u8 | size: u64 |
data |``, answer ``| size: u64 | data |``):

- ``HELLO`` (14) with 24 bytes of transport capabilities, all zero (plain TCP) → ``major,
  minor, patch, pad: u8`` + 24 bytes of capabilities;
- ``DEVICE_COUNT`` (15), no data → ``u32``;
- ``GET_DEVICE_MEMORY`` (11) with ``device: u32`` → ``free, total: u64``.

The outcome is one of ``ProbeState``: ``ok`` (with each device's memory), ``unreachable``
(no connection: refused, no route, no such host), ``busy`` (connected, but no answer to
the hello within the timeout: another client holds it, or it is frozen), ``incompatible``
(an answer of another protocol version or shape). Closing a connection the worker has not
accepted yet is harmless to ``corral rpc-worker`` (it ignores SIGPIPE); the stock
``ggml-rpc-server`` of some versions dies of it, so run that one with SIGPIPE ignored.
"""

from __future__ import annotations

import enum
import socket
import struct
import time
from dataclasses import dataclass

from corral.rpc.endpoints import parse_endpoint

__all__ = ["PROTOCOL_MAJOR", "PROTOCOL_MINOR", "ProbeResult", "ProbeState", "probe", "report"]

#: the protocol of the pinned llama.cpp (``RPC_PROTO_*_VERSION`` in ``ggml-rpc.h``)
PROTOCOL_MAJOR = 7
PROTOCOL_MINOR = 0

_CMD_GET_DEVICE_MEMORY = 11
_CMD_HELLO = 14
_CMD_DEVICE_COUNT = 15
_CAPS_SIZE = 24
_HELLO_ANSWER = 4 + _CAPS_SIZE
#: a worker with more devices than this is not one we understand
_MAX_DEVICES = 64


class ProbeState(enum.StrEnum):
    OK = "ok"
    UNREACHABLE = "unreachable"
    BUSY = "busy"
    INCOMPATIBLE = "incompatible"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    endpoint: str
    state: ProbeState
    detail: str = ""  # why, in words, when not ok
    version: str = ""  # the worker's protocol version, once it answered the hello
    free_bytes: tuple[int, ...] = ()  # per device
    total_bytes: tuple[int, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.state is ProbeState.OK

    @property
    def free_total(self) -> int:
        return sum(self.free_bytes)

    def describe(self) -> str:
        """One line: ``ok, 2 devices, 11.2 GiB free of 23.4 GiB`` or the state and why."""
        if not self.ok:
            return f"{self.state.value}: {self.detail}" if self.detail else self.state.value
        gib = 1 << 30
        devices = len(self.free_bytes)
        return (
            f"ok (protocol {self.version}, {devices} device{'s' if devices != 1 else ''},"
            f" {self.free_total / gib:.1f} GiB free of {sum(self.total_bytes) / gib:.1f} GiB)"
        )


class _Incompatible(Exception):
    pass


def probe(endpoint: str, *, timeout: float = 1.5) -> ProbeResult:
    """Ask the worker at ``endpoint`` (``host:port``) for its version, devices and free
    memory, within ``timeout`` seconds in all. Never raises for what the worker does."""
    started = time.monotonic()
    host, port = parse_endpoint(endpoint)

    def result(
        state: ProbeState,
        detail: str = "",
        *,
        version: str = "",
        free: tuple[int, ...] = (),
        total: tuple[int, ...] = (),
    ) -> ProbeResult:
        seconds = round(time.monotonic() - started, 3)
        return ProbeResult(endpoint, state, detail, version, free, total, seconds)

    deadline = started + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        return result(ProbeState.UNREACHABLE, f"no connection within {timeout:g} s")
    except OSError as exc:
        return result(ProbeState.UNREACHABLE, exc.strerror or str(exc))
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            answer = _call(sock, _CMD_HELLO, bytes(_CAPS_SIZE), _HELLO_ANSWER, deadline)
        except TimeoutError:
            return result(
                ProbeState.BUSY,
                f"connected, but no answer within {timeout:g} s: another client holds the"
                " worker (it serves one at a time), or it is frozen",
            )
        except _Incompatible as exc:
            return result(ProbeState.INCOMPATIBLE, str(exc))
        except OSError as exc:
            # closed at once after connecting: not a worker, or one that refused our hello
            return result(ProbeState.INCOMPATIBLE, f"connection dropped at hello ({exc})")
        major, minor, patch = answer[0], answer[1], answer[2]
        version = f"{major}.{minor}.{patch}"
        if major != PROTOCOL_MAJOR or minor > PROTOCOL_MINOR:
            return result(
                ProbeState.INCOMPATIBLE,
                f"worker speaks RPC protocol {version}, this engine"
                f" {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}.x: run the same corral (llama.cpp) build on"
                " both hosts",
                version=version,
            )
        try:
            (count,) = struct.unpack("<I", _call(sock, _CMD_DEVICE_COUNT, b"", 4, deadline))
            if not 0 < count <= _MAX_DEVICES:
                raise _Incompatible(f"worker reports {count} devices")
            free: list[int] = []
            total: list[int] = []
            for device in range(count):
                data = _call(sock, _CMD_GET_DEVICE_MEMORY, struct.pack("<I", device), 16, deadline)
                device_free, device_total = struct.unpack("<QQ", data)
                free.append(device_free)
                total.append(device_total)
        except TimeoutError:
            return result(ProbeState.BUSY, "answered the hello, then stopped answering")
        except (_Incompatible, OSError) as exc:
            return result(ProbeState.INCOMPATIBLE, str(exc), version=version)
    return result(ProbeState.OK, version=version, free=tuple(free), total=tuple(total))


def _call(sock: socket.socket, command: int, data: bytes, expect: int, deadline: float) -> bytes:
    sock.settimeout(max(deadline - time.monotonic(), 0.001))
    sock.sendall(struct.pack("<BQ", command, len(data)) + data)
    (size,) = struct.unpack("<Q", _recv(sock, 8, deadline))
    if size != expect:
        raise _Incompatible(
            f"unexpected answer size {size} to command {command} (expected {expect}):"
            " another protocol version, or not a llama.cpp RPC worker"
        )
    return _recv(sock, expect, deadline)


def _recv(sock: socket.socket, size: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(left)
        if not chunk:
            raise ConnectionResetError("the worker closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def report(servers: tuple[str, ...], *, timeout: float = 1.5) -> list[dict[str, object]]:
    """Each ``OLLAMA_RPC_SERVERS`` entry probed (in parallel): ``endpoint``, ``state``
    (a ``ProbeState`` value, or ``invalid`` for an address that does not parse),
    ``detail``, ``free_bytes``, ``total_bytes``; for ``corral info``."""
    from concurrent.futures import ThreadPoolExecutor

    from corral.rpc.endpoints import parse_endpoints

    rows: list[dict[str, object]] = []
    endpoints: list[str] = []
    for text in servers:
        try:
            endpoints.extend(e for e in parse_endpoints(text) if e not in endpoints)
        except ValueError as exc:
            rows.append({"endpoint": text, "state": "invalid", "detail": str(exc)})
    if endpoints:
        with ThreadPoolExecutor(max_workers=min(len(endpoints), 16)) as pool:
            results = list(pool.map(lambda e: probe(e, timeout=timeout), endpoints))
        rows[:0] = [
            {
                "endpoint": r.endpoint,
                "state": r.state.value,
                "detail": r.describe(),
                "free_bytes": sum(r.free_bytes),
                "total_bytes": sum(r.total_bytes),
            }
            for r in results
        ]
    return rows
