"""Every route that takes a body answers hostile JSON with a 400 in its own dialect: nesting
10,000 levels deep (a 500 ``maximum recursion depth exceeded`` before) and a lone surrogate
in any string (a 500 ``'utf-8' codec can't encode character`` before). The app runs
in-process; the routes are read from it, so a new route is covered without a new test."""

from __future__ import annotations

import json
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

DEEP_ARRAYS = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECTS = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


async def _no_runner(config: Any) -> Any:
    raise AssertionError("no runner in these tests")


@pytest.fixture
def app(tmp_path: Path) -> Any:
    settings = Settings(models_dir=tmp_path / "models")
    store = ModelStore(settings.models_dir)
    store.blobs_dir.mkdir(parents=True)
    return create_app(settings, store, Scheduler(settings, _no_runner))


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:11434") as c:
        yield c


def _body_routes(app: Any) -> list[tuple[str, str]]:
    routes = [
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route) and "{" not in route.path
        for method in sorted(route.methods or ())
        if method in {"POST", "DELETE", "PUT", "PATCH"}
    ]
    assert ("POST", "/api/chat") in routes and ("DELETE", "/api/delete") in routes
    return routes


def _message(response: httpx.Response) -> str:
    data = response.json()
    error = data["error"]
    return str(error["message"] if isinstance(error, dict) else error)


@pytest.mark.parametrize("body", [DEEP_ARRAYS, DEEP_OBJECTS], ids=["arrays", "objects"])
async def test_deep_nesting_is_a_400_on_every_route(
    app: Any, client: httpx.AsyncClient, body: bytes
) -> None:
    for method, path in _body_routes(app):
        response = await client.request(method, path, content=body)
        assert response.status_code == 400, (method, path, response.text)
        assert _message(response) == "invalid JSON: nesting deeper than 128 levels", path


#: a lone surrogate in each field the campaign tried
SURROGATE_BODIES = [
    ("POST", "/api/generate", {"model": "smollm2:135m", "prompt": "\ud800"}),
    ("POST", "/api/generate", {"model": "smollm2:135m", "prompt": "hi", "system": "\udc00"}),
    ("POST", "/api/generate", {"model": "m", "prompt": "hi", "template": "{{ .Prompt }}\ud800"}),
    ("POST", "/api/generate", {"model": "m", "prompt": "hi", "format": {"title": "\ud800"}}),
    ("POST", "/api/generate", {"model": "m", "prompt": "hi", "options": {"stop": ["\ud800"]}}),
    ("POST", "/api/generate", {"model": "m", "prompt": "hi", "keep_alive": "5m\ud800"}),
    ("POST", "/api/chat", {"model": "m", "messages": [{"role": "user", "content": "\ud800"}]}),
    ("POST", "/api/embed", {"model": "m", "input": ["ok", "\udfff"]}),
    ("POST", "/api/embeddings", {"model": "m", "prompt": "\ud800"}),
    ("POST", "/api/copy", {"source": "smollm2:135m", "destination": "x\ud800"}),
    ("DELETE", "/api/delete", {"model": "x\ud800"}),
    ("POST", "/api/show", {"model": "\ud800"}),
    ("POST", "/api/create", {"model": "x", "from": "smollm2:135m", "system": "\ud800"}),
    ("POST", "/api/create", {"model": "x\ud800", "from": "smollm2:135m"}),
    ("POST", "/api/pull", {"model": "x\ud800"}),
    ("POST", "/api/push", {"model": "x\ud800"}),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "\ud800"}]},
    ),
    ("POST", "/v1/completions", {"model": "m", "prompt": "\ud800"}),
    ("POST", "/v1/embeddings", {"model": "m", "input": "\ud800"}),
]


@pytest.mark.parametrize(("method", "path", "body"), SURROGATE_BODIES)
async def test_a_lone_surrogate_is_a_400(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any]
) -> None:
    content = json.dumps(body).encode()  # ASCII: the surrogate travels as "\ud800"
    response = await client.request(method, path, content=content)
    assert response.status_code == 400, response.text
    assert _message(response).startswith("invalid JSON: lone surrogate 0xd"), response.text
    if path.startswith("/v1/"):
        assert response.json()["error"]["type"] == "invalid_request_error"


async def test_a_surrogate_pair_is_text(client: httpx.AsyncClient) -> None:
    content = json.dumps({"model": "nope", "prompt": "\U0001f600"}).encode()  # "\ud83d\ude00"
    response = await client.post("/api/generate", content=content)
    assert response.status_code == 404, response.text  # parsed fine; the model is missing


async def test_a_body_past_the_size_limit_is_refused_without_being_kept(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("corral.server.streaming._MAX_BODY", 1000)
    response = await client.post("/api/generate", content=b" " * 2000)
    assert response.status_code == 400
    assert response.json() == {"error": "request body too large"}


def test_hostile_tool_call_arguments_are_a_400_not_a_500() -> None:
    """JSON hidden inside a JSON string (OpenAI's tool-call ``arguments``) gets the same
    checks as a body: nesting and lone surrogates were a 500 there."""
    from corral.api.openai import ChatCompletionRequest, chat_request
    from corral.errors import BadRequestError
    from corral.server.responses import _call

    for arguments in ("[" * 100_000 + "]" * 100_000, '{"a": "\\ud800"}', "{oops"):
        body = ChatCompletionRequest(
            model="m",
            messages=[
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": arguments}}],
                }
            ],
        )
        with pytest.raises(BadRequestError, match="invalid tool call arguments"):
            chat_request(body)
        item = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": arguments}
        with pytest.raises(BadRequestError, match="arguments: not valid JSON"):
            _call(item, "input[0]", "function_call")
