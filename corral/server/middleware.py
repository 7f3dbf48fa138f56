"""Browser-facing guards, as Ollama's: allowed origins (CORS) and the DNS-rebinding check.

- Origins: requests without an ``Origin`` header (curl, SDKs) pass. Browser requests pass
  when their origin is local (``http(s)://localhost``, ``127.0.0.1``, ``0.0.0.0`` on any
  port), an app scheme (``app://``, ``file://``, ``tauri://``, ``vscode-webview://``,
  ``vscode-file://``), or listed in ``OLLAMA_ORIGINS`` (``*`` wildcards allowed); any other
  origin gets 403. Allowed preflights (``OPTIONS``) answer 204 with the CORS headers.
- Host (only while listening on a loopback address, where a rebinding attack could reach
  us through a browser): the ``Host`` header must be empty, ``localhost``, this machine's
  name, ``*.localhost``, ``*.local``, ``*.internal``, or a loopback/private/unspecified IP.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["GuardMiddleware", "default_origins"]

_ALLOWED_HEADERS = (
    "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, "
    "x-stainless-lang, x-stainless-package-version, x-stainless-os, x-stainless-arch, "
    "x-stainless-runtime, x-stainless-runtime-version, x-stainless-async, "
    "x-stainless-retry-count, x-stainless-timeout"
)
_ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"


def default_origins(extra: Iterable[str] = ()) -> tuple[str, ...]:
    local = []
    for host in ("localhost", "127.0.0.1", "0.0.0.0"):
        for scheme in ("http", "https"):
            local += [f"{scheme}://{host}", f"{scheme}://{host}:*"]
    apps = ["app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]
    return (*extra, *local, *apps)


def _host_allowed(host_header: str) -> bool:
    host = host_header.strip()
    if not host:
        return True
    if host.startswith("["):  # [::1]:port
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.lower()
    if host in {"localhost", socket.gethostname().lower()}:
        return True
    if host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified


class GuardMiddleware:
    def __init__(self, app: ASGIApp, *, origins: Iterable[str], check_host: bool) -> None:
        self.app = app
        self.origins = tuple(origins)
        self.check_host = check_host

    def _origin_allowed(self, origin: str) -> bool:
        return any(fnmatch.fnmatchcase(origin, pattern) for pattern in self.origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.check_host and not _host_allowed(headers.get("host", "")):
            await _empty(send, 403)
            return
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if not self._origin_allowed(origin):
            await _empty(send, 403)
            return
        cors = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"vary", b"Origin"),
        ]
        if scope["method"] == "OPTIONS":
            cors += [
                (b"access-control-allow-methods", _ALLOWED_METHODS.encode()),
                (b"access-control-allow-headers", _ALLOWED_HEADERS.encode()),
                (b"access-control-max-age", b"43200"),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": cors})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _empty(send: Send, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})
