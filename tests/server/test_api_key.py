"""With ``CORRAL_API_KEY`` set, every route of the real app but ``GET /`` and ``HEAD /``
needs the key (the routes are read from the app: a new one is covered without a test)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from corral.config import Settings
from corral.scheduler import Scheduler
from corral.server.app import create_app
from corral.store import ModelStore

KEY = "k-9f2c"


async def _no_runner(config: Any) -> Any:
    raise AssertionError("no runner in these tests")


@pytest.fixture
def app(tmp_path: Path) -> Any:
    settings = Settings(models_dir=tmp_path / "models", api_key=KEY)
    store = ModelStore(settings.models_dir)
    store.blobs_dir.mkdir(parents=True)
    return create_app(settings, store, Scheduler(settings, _no_runner))


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:11434") as c:
        yield c


def _every_route(app: Any) -> list[tuple[str, str]]:
    return [
        (method, re.sub(r"\{[^}]*\}", "x", route.path))
        for route in app.routes
        if isinstance(route, Route)
        for method in sorted(route.methods or ())
    ]


async def test_every_route_but_root_needs_the_key(app: Any, client: httpx.AsyncClient) -> None:
    routes = _every_route(app)
    assert len(routes) > 20
    for method, path in routes:
        response = await client.request(method, path, content=b"{}")
        if path == "/":
            assert response.status_code == 200, (method, path)
        else:
            assert response.status_code == 401, (method, path, response.status_code)


async def test_the_key_lets_requests_through(client: httpx.AsyncClient) -> None:
    bearer = await client.get("/api/version", headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200
    assert "version" in bearer.json()
    anthropic_style = await client.get("/api/tags", headers={"x-api-key": KEY})
    assert anthropic_style.json() == {"models": []}
