"""Browser-facing guards, as Ollama's: allowed origins (CORS) and the DNS-rebinding check.

- Origins: requests without an ``Origin`` header (curl, SDKs) pass. Browser requests pass
  when their origin is local (``http(s)://localhost``, ``127.0.0.1``, ``0.0.0.0`` on any
  port), an app scheme (``app://``, ``file://``, ``tauri://``, ``vscode-webview://``,
  ``vscode-file://``), or listed in ``OLLAMA_ORIGINS`` (``*`` wildcards allowed); any other
  origin gets 403. Allowed preflights (``OPTIONS``) answer 204 with the CORS headers; the
  allowed request headers are Ollama's (``Authorization``, ``Content-Type``, ``OpenAI-Beta``,
  the OpenAI SDKs' ``x-stainless-*``) and Anthropic's SDK's (``x-api-key``,
  ``anthropic-version``, ``anthropic-beta``, ``anthropic-dangerous-direct-browser-access``).
- Host (only while listening on a loopback address, where a rebinding attack could reach
  us through a browser): the ``Host`` header must be empty, ``localhost``, this machine's
  name, ``*.localhost``, ``*.local``, ``*.internal``, or a loopback/private/unspecified IP.
- API key (beyond Ollama; only when ``CORRAL_API_KEY`` is set): every request but
  ``GET /`` and ``HEAD /`` (the liveness check) and CORS preflights must carry
  ``Authorization: Bearer <key>`` (the ``ollama`` and ``openai`` clients) or
  ``x-api-key: <key>`` (Anthropic's); else 401 with a JSON error in the route's dialect.
  The comparison is in constant time (``hmac.compare_digest`` of SHA-256 digests, so not
  even the key's length shows).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import json
import socket
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.server.streaming import error_body

__all__ = ["GuardMiddleware", "default_origins"]

#: request headers a browser may send (Ollama's list, and Anthropic's SDK headers); a
#: preflight also gets any ``x-stainless-*`` header it names, as the SDKs add new ones
_ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "User-Agent",
    "Accept",
    "X-Requested-With",
    "OpenAI-Beta",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-custom-poll-interval",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-poll-helper",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
)
_ALLOWED_LOWER = frozenset(name.lower() for name in _ALLOWED_HEADERS)
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


_UNAUTHORIZED = (
    "unauthorized: this server needs an API key (Authorization: Bearer <key>, or x-api-key: <key>)"
)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class GuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        origins: Iterable[str],
        check_host: bool,
        api_key: str = "",
    ) -> None:
        self.app = app
        self.origins = tuple(origins)
        self.check_host = check_host
        self._key_digest = _digest(api_key) if api_key else None

    def _authorized(self, scope: Scope, headers: dict[str, str]) -> bool:
        if self._key_digest is None:
            return True
        if scope["method"] in {"GET", "HEAD"} and scope["path"] == "/":
            return True
        scheme, _, token = headers.get("authorization", "").strip().partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else ""
        given = [bearer, headers.get("x-api-key", "").strip()]
        return any([hmac.compare_digest(_digest(g), self._key_digest) for g in given if g])

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
            if not self._authorized(scope, headers):
                await _unauthorized(send, scope["path"], [])
                return
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
                (b"access-control-allow-headers", _allowed_headers(headers).encode("latin-1")),
                (b"access-control-max-age", b"43200"),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": cors})
            await send({"type": "http.response.body", "body": b""})
            return
        if not self._authorized(scope, headers):
            await _unauthorized(send, scope["path"], cors)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _allowed_headers(headers: dict[str, str]) -> str:
    """The preflight's ``Access-Control-Allow-Headers``: the fixed list, plus the
    ``x-stainless-*`` headers the browser asks for (``Access-Control-Request-Headers``)
    that the list does not name yet. Other headers stay refused."""
    asked = headers.get("access-control-request-headers", "")
    extra = []
    for raw in asked.split(","):
        name = raw.strip().lower()
        if (
            name.startswith("x-stainless-")
            and name not in _ALLOWED_LOWER
            and name not in extra
            and all(c.isalnum() or c == "-" for c in name)
        ):
            extra.append(name)
    return ", ".join((*_ALLOWED_HEADERS, *extra))


async def _empty(send: Send, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _unauthorized(send: Send, path: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(error_body(path, 401, _UNAUTHORIZED)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b"Bearer"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})
