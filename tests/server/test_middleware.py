"""Origins and Host checks, on a tiny app behind the real middleware."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from corral.server.middleware import GuardMiddleware, _host_allowed, default_origins


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _client(extra: tuple[str, ...] = (), check_host: bool = True) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/", _hello, methods=["GET", "POST"])])
    app.add_middleware(GuardMiddleware, origins=default_origins(extra), check_host=check_host)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:11434"
    )


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost",
        "http://localhost:3000",
        "https://127.0.0.1:8080",
        "app://x",
        "file://",
        "tauri://localhost",
        "vscode-webview://abc",
    ],
)
async def test_local_origins_allowed(origin: str) -> None:
    response = await _client().get("/", headers={"Origin": origin})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin


@pytest.mark.parametrize("origin", ["https://evil.example", "http://localhost.evil.com"])
async def test_foreign_origins_refused(origin: str) -> None:
    assert (await _client().get("/", headers={"Origin": origin})).status_code == 403


async def test_configured_origin_with_wildcard() -> None:
    client = _client(("https://*.example.com",))
    assert (await client.get("/", headers={"Origin": "https://ui.example.com"})).status_code == 200
    assert (await client.get("/", headers={"Origin": "https://ui.example.org"})).status_code == 403


async def test_no_origin_passes() -> None:
    assert (await _client().get("/")).text == "ok"


async def test_preflight() -> None:
    response = await _client().options(
        "/", headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 204
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "Content-Type" in response.headers["access-control-allow-headers"]


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("", True),
        ("localhost", True),
        ("localhost:11434", True),
        ("127.0.0.1:11434", True),
        ("[::1]:11434", True),
        ("10.0.0.5", True),
        ("0.0.0.0", True),
        ("box.local", True),
        ("svc.internal", True),
        ("app.localhost", True),
        ("evil.com", False),
        ("8.8.8.8", False),
        ("attacker.example:11434", False),
    ],
)
def test_host_rule(host: str, allowed: bool) -> None:
    assert _host_allowed(host) is allowed


async def test_rebinding_host_refused_only_on_loopback() -> None:
    assert (await _client().get("/", headers={"Host": "evil.com"})).status_code == 403
    assert (
        await _client(check_host=False).get("/", headers={"Host": "evil.com"})
    ).status_code == 200
