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


def _client(
    extra: tuple[str, ...] = (), check_host: bool = True, api_key: str = ""
) -> httpx.AsyncClient:
    app = Starlette(
        routes=[
            Route("/", _hello, methods=["GET", "POST"]),
            Route("/api/tags", _hello, methods=["GET"]),
            Route("/v1/models", _hello, methods=["GET"]),
            Route("/v1/messages", _hello, methods=["POST"]),
        ]
    )
    app.add_middleware(
        GuardMiddleware, origins=default_origins(extra), check_host=check_host, api_key=api_key
    )
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


# ---- the API key ------------------------------------------------------------------------------


async def test_without_a_key_setting_nothing_is_asked() -> None:
    assert (await _client().get("/api/tags")).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer s3cret"},
        {"Authorization": "bearer   s3cret "},
        {"x-api-key": "s3cret"},
        {"x-api-key": "wrong", "Authorization": "Bearer s3cret"},
    ],
)
async def test_the_key_opens_every_route(headers: dict[str, str]) -> None:
    client = _client(api_key="s3cret")
    assert (await client.get("/api/tags", headers=headers)).status_code == 200
    assert (await client.post("/", headers=headers)).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer s3cre"},
        {"Authorization": "Bearer s3cretX"},
        {"Authorization": "s3cret"},
        {"Authorization": "Basic s3cret"},
        {"x-api-key": ""},
        {"x-api-key": "S3CRET"},
    ],
)
async def test_a_missing_or_wrong_key_is_a_401(headers: dict[str, str]) -> None:
    response = await _client(api_key="s3cret").get("/api/tags", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"].startswith("unauthorized")


async def test_the_401_speaks_the_routes_dialect() -> None:
    client = _client(api_key="s3cret")
    openai = (await client.get("/v1/models")).json()["error"]
    assert (openai["type"], openai["code"]) == ("invalid_request_error", "invalid_api_key")
    anthropic = (await client.post("/v1/messages")).json()
    assert anthropic["type"] == "error"
    assert anthropic["error"]["type"] == "authentication_error"


async def test_root_stays_open_for_liveness_checks() -> None:
    client = _client(api_key="s3cret")
    assert (await client.get("/")).status_code == 200
    assert (await client.head("/")).status_code == 200
    assert (await client.post("/")).status_code == 401  # only GET and HEAD


async def test_preflights_need_no_key_but_the_request_does() -> None:
    client = _client(api_key="s3cret")
    origin = {"Origin": "http://localhost:3000"}
    preflight = await client.options(
        "/api/tags", headers={**origin, "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 204
    refused = await client.get("/api/tags", headers=origin)
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "http://localhost:3000"
    allowed = await client.get("/api/tags", headers={**origin, "x-api-key": "s3cret"})
    assert allowed.status_code == 200


async def test_the_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return a == b

    monkeypatch.setattr("corral.server.middleware.hmac.compare_digest", spy)
    await _client(api_key="s3cret").get("/api/tags", headers={"Authorization": "Bearer nope"})
    assert compared and all(len(a) == len(b) == 32 for a, b in compared)  # digests
