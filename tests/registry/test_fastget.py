"""The pull's fast path: a blob range read over a plain socket, against servers that answer
with raw bytes (redirects, encodings, stalls, extra bytes), and whole pulls through it."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from corral.errors import CorralError
from corral.registry import PullOptions, pull, pull_model
from corral.registry.fastget import Fallback, RangeGet, WireError
from corral.store import MEDIA_TYPE_CONFIG, MEDIA_TYPE_MODEL, Layer, Manifest, ModelStore, Name
from tests.registry.hostile import Behaviour, hostile_registry

Answer = Callable[[bytes, socket.socket], None]  # (request head, connection)


@contextmanager
def raw_server(answer: Answer) -> Iterator[tuple[str, list[bytes]]]:
    """A loopback server that hands each request's head to ``answer``; yields its base URL
    and the heads it got."""
    heads: list[bytes] = []

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                data += chunk
            heads.append(data)
            answer(data, self.request)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", heads
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Run a RangeGet for bytes 0-99; returns (status, body the sink got)."""
    got = bytearray()
    seen: list[int] = []

    def check(status: int, content_range: str) -> int:
        seen.append(status)
        return 0

    def sink(view: memoryview, slot: int) -> int:
        got.extend(view)
        return 1 << 30

    RangeGet(url, headers or {}, timeout_s=5, buffer_bytes=16, buffers=3).run(check, sink)
    return seen[0], bytes(got)


def _reply(status: str, headers: list[str], body: bytes = b"") -> Answer:
    def answer(head: bytes, conn: socket.socket) -> None:
        conn.sendall(("\r\n".join([f"HTTP/1.1 {status}", *headers, "", ""])).encode() + body)

    return answer


def test_a_plain_206_body_reaches_the_sink_and_extra_bytes_are_left() -> None:
    body = bytes(range(100))
    answer = _reply("206 Partial Content", ["Content-Length: 100"], body + b"EXTRA")
    with raw_server(answer) as (url, heads):
        status, got = _get(url + "/v2/a/b/blobs/x", {"Range": "bytes=0-99"})
    assert (status, got) == (206, body)
    head = heads[0].decode()
    assert head.startswith("GET /v2/a/b/blobs/x HTTP/1.1\r\n")
    assert "Range: bytes=0-99" in head and "Connection: close" in head


def test_a_redirect_to_another_host_drops_authorization() -> None:
    body = b"blob bytes"
    with raw_server(_reply("200 OK", [f"Content-Length: {len(body)}"], body)) as (cdn, cdn_heads):
        moved = _reply(
            "307 Temporary Redirect", [f"Location: {cdn}/signed?x=1", "Content-Length: 0"]
        )
        with raw_server(moved) as (url, heads):
            status, got = _get(url + "/blob", {"Authorization": "Bearer secret"})
    assert (status, got) == (200, body)
    assert b"Bearer secret" in heads[0]
    assert cdn_heads[0].startswith(b"GET /signed?x=1 HTTP/1.1")
    assert b"Bearer secret" not in cdn_heads[0]


@pytest.mark.parametrize(
    "answer",
    [
        _reply("200 OK", ["Transfer-Encoding: chunked"], b"5\r\nhello\r\n0\r\n\r\n"),
        _reply("200 OK", ["Content-Encoding: gzip", "Content-Length: 3"], b"abc"),
        _reply("401 Unauthorized", ['WWW-Authenticate: Bearer realm="x"', "Content-Length: 0"]),
        _reply("500 Internal Server Error", ["Content-Length: 0"]),
        _reply("200 OK", ["Content-Length: nope"], b"abc"),
    ],
    ids=["chunked", "gzip", "401", "500", "bad-length"],
)
def test_anything_but_a_plain_body_falls_back(answer: Answer) -> None:
    with raw_server(answer) as (url, _), pytest.raises(Fallback):
        _get(url + "/blob")


@pytest.mark.parametrize(
    "answer",
    [
        _reply("200 OK", ["Content-Length: 100"], b"only ten b"),
        _reply("garbage", []),
        lambda head, conn: conn.close(),
    ],
    ids=["short-body", "bad-status-line", "closed"],
)
def test_a_broken_answer_is_a_wire_error(answer: Answer) -> None:
    with raw_server(answer) as (url, _), pytest.raises(WireError):
        _get(url + "/blob")


def test_a_refused_connection_is_a_wire_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WireError, match="dial tcp"):
        _get(f"http://127.0.0.1:{port}/blob")


def test_stop_ends_a_stalled_transfer_at_once() -> None:
    release = threading.Event()

    def stall(head: bytes, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nfirst")
        release.wait(10)

    with raw_server(stall) as (url, _):
        get = RangeGet(url + "/blob", {}, timeout_s=30, buffer_bytes=64)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                get.run(lambda status, cr: 0, lambda view, slot: 1 << 30)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.2)
        started = time.monotonic()
        get.stop()
        thread.join(5)
        release.set()
    assert not thread.is_alive() and time.monotonic() - started < 2
    assert len(errors) == 1 and isinstance(errors[0], WireError)


# ---- whole pulls ---------------------------------------------------------------------------


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _behaviour(weights: bytes) -> Behaviour:
    config = b'{"model_format":"gguf"}'
    layer = Layer(MEDIA_TYPE_MODEL, _digest(weights), len(weights))
    manifest = Manifest(Layer(MEDIA_TYPE_CONFIG, _digest(config), len(config)), (layer,))
    return Behaviour(
        manifests={"test/m:1": manifest.to_json()},
        blobs={layer.digest: weights, _digest(config): config},
    )


@pytest.mark.parametrize("parallel", [1, 3])
async def test_a_pull_in_parts_through_the_fast_path_installs_the_blob(
    tmp_path: Path, parallel: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def general(*args: object) -> None:
        raise AssertionError("the general client was used")

    monkeypatch.setattr(pull._BlobDownload, "_part_general", general)
    weights = bytes(range(256)) * 12_000  # ~3 MB in 1 MB parts
    behaviour = _behaviour(weights)
    store = ModelStore(tmp_path / "models")
    options = PullOptions(insecure=True, min_part_bytes=1 << 20, parallel_parts=parallel)
    with hostile_registry(behaviour) as host:
        await pull_model(store, Name.parse(f"{host}/test/m:1"), lambda e: None, options)
    assert store.blob_path(_digest(weights)).read_bytes() == weights
    assert len([r for d, r in behaviour.ranges if d == _digest(weights)]) == 3


async def test_cancelling_a_pull_stops_its_transfer_threads(tmp_path: Path) -> None:
    weights = b"w" * (2 << 20)
    behaviour = _behaviour(weights)
    behaviour.gate = threading.Event()  # blob responses hang until set
    store = ModelStore(tmp_path / "models")
    options = PullOptions(insecure=True, min_part_bytes=1 << 20, max_tries=1)
    with hostile_registry(behaviour) as host:
        task = asyncio.create_task(
            pull_model(store, Name.parse(f"{host}/test/m:1"), lambda e: None, options)
        )
        await asyncio.to_thread(_wait_for, lambda: len(behaviour.ranges) >= 2)
        started = time.monotonic()
        task.cancel()
        with pytest.raises((asyncio.CancelledError, CorralError)):
            await task
        assert time.monotonic() - started < 5
        behaviour.gate.set()
    assert not store.has_blob(_digest(weights))
    # every thread the pull started ends (a part's thread settles its future just before)
    _wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("pull-")])


@pytest.fixture
def tls_cert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 that the registry TLS trust accepts (through
    ``SSL_CERT_FILE``, as httpx's default context reads it), built fresh for this test."""
    import shutil
    import subprocess

    import corral.registry.client as client

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            *subject,
            *files,
        ],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setattr(client, "_ssl_context", None)  # rebuilt with this trust
    return cert, key


@contextmanager
def tls_server(answer: Answer, cert: Path, key: Path) -> Iterator[str]:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                conn = context.wrap_socket(self.request, server_side=True)
            except (ssl.SSLError, OSError):
                return
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            answer(data, conn)
            conn.close()

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_https_bodies_come_through_the_fast_path(tls_cert: tuple[Path, Path]) -> None:
    body = bytes(range(256)) * 64  # 16 KiB: many TLS records and sink buffers
    answer = _reply("206 Partial Content", [f"Content-Length: {len(body)}"], body)
    with tls_server(answer, *tls_cert) as url:
        status, got = _get(url + "/v2/a/b/blobs/x", {"Range": f"bytes=0-{len(body) - 1}"})
    assert (status, got) == (206, body)


def test_an_untrusted_https_certificate_falls_back(
    tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import corral.registry.client as client

    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.setattr(client, "_ssl_context", None)  # the default trust: not this cert
    with (
        tls_server(_reply("200 OK", ["Content-Length: 1"], b"x"), *tls_cert) as url,
        pytest.raises(Fallback),
    ):
        _get(url + "/v2/a/b/blobs/x")
