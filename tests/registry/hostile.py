"""A tiny HTTP registry for tests that can lie: wrong bytes, extra bytes, cut connections,
bad manifests, a bearer-token challenge; and a proxy mode in front of a real registry.

Runs ``ThreadingHTTPServer`` in a thread on a free loopback port; every request is counted.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Behaviour:
    manifests: dict[str, bytes] = field(default_factory=dict)  # "ns/model:tag" -> bytes
    blobs: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes served
    extra_bytes: bytes = b""  # appended to every blob response beyond its range
    cut_after: int | None = None  # close blob responses after this many bytes
    token: str | None = None  # require "Authorization: Bearer <token>"
    upstream: str | None = None  # proxy everything else to this registry URL
    delay_s: float = 0.0  # wait before answering a blob request
    requests: Counter[str] = field(default_factory=Counter)


class _Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour
    port: int
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        b = self.behaviour
        b.requests[f"{self.command} {self.path}"] += 1
        if self.path.startswith("/token"):
            self._send(200, b'{"token": "%s"}' % (b.token or "").encode())
            return
        if b.token is not None and self.headers.get("Authorization") != f"Bearer {b.token}":
            realm = f"http://127.0.0.1:{self.port}/token"
            challenge = f'Bearer realm="{realm}",service="test",scope="repository:x:pull"'
            self._send(401, b"{}", {"WWW-Authenticate": challenge})
            return
        match = re.fullmatch(r"/v2/([^/]+/[^/]+)/(manifests|blobs)/(.+)", self.path)
        if match is None:
            self._send(200 if self.path == "/v2/" else 404, b"{}")
            return
        repo, kind, ref = match.groups()
        if kind == "manifests" and f"{repo}:{ref}" in b.manifests:
            self._send(200, b.manifests[f"{repo}:{ref}"])
            return
        if kind == "blobs" and (ref in b.blobs or b.upstream):
            self._blob(ref)
            return
        self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')

    def _blob(self, digest: str) -> None:
        b = self.behaviour
        time.sleep(b.delay_s)
        if digest in b.blobs:
            data = b.blobs[digest]
        else:
            assert b.upstream is not None
            data = httpx.get(f"{b.upstream}{self.path}", follow_redirects=True).content
        start, end = 0, len(data) - 1
        status = 200
        match = _RANGE.fullmatch(self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else end
            status = 206
        body = data[start : end + 1] + b.extra_bytes
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if b.cut_after is not None:
            self.wfile.write(body[: b.cut_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextmanager
def hostile_registry(behaviour: Behaviour) -> Iterator[str]:
    """Serve ``behaviour`` on a free loopback port; yields ``127.0.0.1:<port>``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    handler = type("Handler", (_Handler,), {"behaviour": behaviour, "port": port})
    server.RequestHandlerClass = handler
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
