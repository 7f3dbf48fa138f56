"""A tiny HTTP registry for tests that can lie: wrong bytes, extra bytes, cut connections,
bad manifests, a bearer-token challenge (with a realm anywhere); and a proxy mode in front of
a real registry (pulls and pushes, behind the same token challenge if asked).

Runs ``ThreadingHTTPServer`` in a thread on a free loopback port; every request is counted.
``gate`` holds every blob response until the test sets it, so a test can act while a pull
is known to be in flight (poll ``requests``, never sleep).
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
    realm: str | None = None  # the token realm to announce (default: this server's /token)
    gate: threading.Event | None = None  # blob responses wait for it (up to 60 s)
    requests: Counter[str] = field(default_factory=Counter)
    token_queries: list[str] = field(default_factory=list)  # query strings sent to /token
    ranges: list[tuple[str, str]] = field(default_factory=list)  # (digest, Range) per blob GET


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

    def do_POST(self) -> None:
        self._other()

    def do_PUT(self) -> None:
        self._other()

    def do_PATCH(self) -> None:
        self._other()

    def _authorized(self) -> bool:
        """Answer 401 with a bearer challenge unless the request carries the token."""
        b = self.behaviour
        if b.token is None or self.headers.get("Authorization") == f"Bearer {b.token}":
            return True
        realm = b.realm or f"http://127.0.0.1:{self.port}/token"
        challenge = f'Bearer realm="{realm}",service="test"'  # the client names its scope
        self._send(401, b"{}", {"WWW-Authenticate": challenge})
        return False

    def do_GET(self) -> None:
        b = self.behaviour
        b.requests[f"{self.command} {self.path}"] += 1
        if self.path.startswith("/token"):
            b.token_queries.append(self.path.partition("?")[2])
            self._send(200, b'{"token": "%s"}' % (b.token or "").encode())
            return
        if not self._authorized():
            return
        match = re.fullmatch(r"/v2/([^/]+/[^/]+)/(manifests|blobs)/(.+)", self.path)
        if match is None:
            if b.upstream and self.path != "/v2/":
                self._forward()
                return
            self._send(200 if self.path == "/v2/" else 404, b"{}")
            return
        repo, kind, ref = match.groups()
        if kind == "manifests" and f"{repo}:{ref}" in b.manifests:
            self._send(200, b.manifests[f"{repo}:{ref}"])
            return
        if kind == "blobs" and (ref in b.blobs or b.upstream):
            self._blob(ref)
            return
        if b.upstream:
            self._forward()
            return
        self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')

    def _other(self) -> None:
        """POST/PUT/PATCH: counted, token-checked, forwarded upstream (pushes) or refused."""
        b = self.behaviour
        b.requests[f"{self.command} {self.path}"] += 1
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self._authorized():
            return
        if b.upstream is None:
            self._send(405, b"{}")
            return
        self._forward(body)

    def _forward(self, body: bytes = b"") -> None:
        """Send this request to the upstream registry; its upload locations point back here."""
        b = self.behaviour
        assert b.upstream is not None
        keep = ("content-type", "content-range", "accept")
        headers = {k: v for k, v in self.headers.items() if k.lower() in keep}
        response = httpx.request(
            self.command, f"{b.upstream}{self.path}", content=body, headers=headers, timeout=60
        )
        passed = ("location", "docker-upload-uuid", "range", "docker-content-digest")
        out = {k: v for k, v in response.headers.items() if k.lower() in passed}
        if "location" in {k.lower() for k in out}:
            out = {
                k: v.replace(b.upstream, f"http://127.0.0.1:{self.port}") for k, v in out.items()
            }
        content_type = response.headers.get("content-type")
        if content_type:
            out["Content-Type"] = content_type
        self._send(response.status_code, response.content, out)

    def _blob(self, digest: str) -> None:
        b = self.behaviour
        b.ranges.append((digest, self.headers.get("Range", "")))
        if b.gate is not None:
            b.gate.wait(timeout=60)
        time.sleep(b.delay_s)
        if digest in b.blobs:
            data = b.blobs[digest]
        else:
            assert b.upstream is not None
            upstream = httpx.get(f"{b.upstream}{self.path}", follow_redirects=True)
            if upstream.status_code != 200:
                self._send(upstream.status_code, upstream.content)
                return
            data = upstream.content
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
