"""HTTP to an OCI distribution (v2) registry: where a name lives, auth, errors.

Name → URL as Ollama: ``host/namespace/model:tag`` → ``https://host/v2/namespace/model/...``
(``http://`` when the request says ``insecure``). The default host is
``registry.ollama.ai``; a name like ``127.0.0.1:5000/ns/model:tag`` talks to that host.

Auth: on a 401 with ``WWW-Authenticate: Bearer realm="...",service="...",scope="..."`` the
client asks the realm for a token (``{"token": ...}`` or ``{"access_token": ...}``) and
retries once with ``Authorization: Bearer <token>``; the token is kept for later requests.
The realm is a URL the registry chose, so a hostile registry could point it anywhere (a
service on the server's loopback, a cloud metadata address) and make the server fetch it:
as newest Ollama does, the realm's host (with port) must equal the registry's, or the
request fails with ``realm host "<realm>" does not match original host "<registry>"``.
Only ``http(s)`` realms are followed, plain ``http`` only when the request allowed insecure
transport, and the token request does not follow redirects.

What can go wrong: the host is unreachable (``RegistryError(unreachable=True)``), answers an
error status (``"<code>: <body>"``, body cut to 512 bytes), or a realm that gives no token.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit

import httpx

from corral import __version__
from corral.registry.errors import RegistryError
from corral.store import Name

__all__ = ["RegistryClient", "registry_url"]

logger = logging.getLogger(__name__)

_TIMEOUT: Final = httpx.Timeout(60.0, connect=10.0)
_LIMITS: Final = httpx.Limits(max_connections=32, max_keepalive_connections=16)
_CHALLENGE_PARAM: Final = re.compile(r'(\w+)="([^"]*)"')
_ERROR_BODY_BYTES: Final = 512

_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def ssl_context() -> ssl.SSLContext:
    """The TLS trust for registries (httpx's default), built once per process: loading the
    CA bundle takes tens of milliseconds, too long to pay per pull."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


def registry_url(name: Name, *, insecure: bool) -> str:
    """``https://host`` (or ``http://`` when insecure) for the registry of ``name``."""
    return f"{'http' if insecure else 'https'}://{name.host}"


class RegistryClient:
    """One repository on one registry, with its bearer token. Use as an async context."""

    def __init__(self, name: Name, *, insecure: bool, scope_actions: str = "pull") -> None:
        self.name = name
        self.insecure = insecure
        self.base_url = registry_url(name, insecure=insecure)
        self.repository = f"{name.namespace}/{name.model}"
        self._scope_actions = scope_actions
        self._token: str | None = None
        self.http = httpx.AsyncClient(
            timeout=_TIMEOUT,
            verify=ssl_context(),
            limits=_LIMITS,
            follow_redirects=True,
            headers={"User-Agent": f"corral/{__version__}"},
        )

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.http.aclose()

    def url(self, path: str) -> str:
        """``<base>/v2/<namespace>/<model>/<path>``."""
        return f"{self.base_url}/v2/{self.repository}/{path}"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send one request, following a bearer challenge once. Never raises for a status."""
        for attempt in range(2):
            request = self.http.build_request(
                method, url, headers={**(headers or {}), **self.auth_headers()}, content=content
            )
            try:
                response = await self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                raise unreachable(method, str(request.url), exc) from exc
            challenge = response.headers.get("www-authenticate", "")
            if response.status_code != 401 or attempt or not challenge.lower().startswith("bearer"):
                return response
            await response.aclose()
            await self.authenticate(challenge)
        raise AssertionError("unreachable")  # pragma: no cover

    async def authenticate(self, challenge: str) -> None:
        """Fetch a token for ``challenge`` (a ``WWW-Authenticate: Bearer ...`` value)."""
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.pop("realm", "")
        self._check_realm(realm)
        params.setdefault("scope", f"repository:{self.repository}:{self._scope_actions}")
        try:
            response = await self.http.get(realm, params=params, follow_redirects=False)
        except httpx.TransportError as exc:
            raise unreachable("GET", realm, exc) from exc
        if response.status_code != 200:
            raise RegistryError("unauthorized: access denied", status=401)
        try:
            data = response.json()
        except ValueError:
            raise RegistryError("unauthorized: the token realm sent no JSON") from None
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError("unauthorized: the token realm sent no token")
        self._token = token

    def _check_realm(self, realm: str) -> None:
        """Refuse a realm that is not HTTP(S) (HTTP only when insecure) or not on our host."""
        if not realm.startswith("https://") and not (self.insecure and realm.startswith("http://")):
            raise RegistryError(f"unauthorized: unsupported token realm {realm!r}", status=401)
        try:
            realm_host = urlsplit(realm).netloc.rpartition("@")[2]
        except ValueError:
            realm_host = ""
        if realm_host.lower() != self.name.host.lower():
            raise RegistryError(
                f"realm host {_go_quote(realm_host)} does not match original host"
                f" {_go_quote(self.name.host)}"
            )

    async def status_error(self, response: httpx.Response) -> RegistryError:
        """``"<code>: <body>"`` for an error response (body read, at most 512 bytes)."""
        body = b""
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= _ERROR_BODY_BYTES:
                    break
        except httpx.HTTPError:
            pass
        finally:
            await response.aclose()
        text = body[:_ERROR_BODY_BYTES].decode("utf-8", errors="replace").strip()
        if response.status_code == 401:
            return RegistryError("unauthorized: access denied", status=401)
        return RegistryError(f"{response.status_code}: {text}")


def _go_quote(text: str) -> str:
    """``text`` in double quotes with escapes, as Go's ``%q`` writes a plain host."""
    return json.dumps(text)


def unreachable(method: str, url: str, exc: Exception) -> RegistryError:
    """A registry that could not be reached: 502 (an upstream failure), in Go's words.

    Ollama's message is Go's ``*url.Error``: ``Get "<url>": dial tcp <host:port>: connect:
    connection refused`` (``dial tcp: lookup <host>: no such host`` for an unknown name).
    """
    return RegistryError(
        f"{method.capitalize()} {_go_quote(url)}: {_dial_reason(url, exc)}",
        unreachable=True,
        status=502,
    )


def _dial_reason(url: str, exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 443 if parts.scheme == "https" else 80
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(exc, httpx.ConnectError):
        if "refused" in lowered or "all connection attempts failed" in lowered:
            return f"dial tcp {address}: connect: connection refused"
        if any(
            s in lowered
            for s in ("name or service not known", "nodename nor servname", "name resolution")
        ):
            return f"dial tcp: lookup {host}: no such host"
        return f"dial tcp {address}: {text}"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"dial tcp {address}: i/o timeout"
    return text
