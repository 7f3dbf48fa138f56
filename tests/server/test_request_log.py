"""``OLLAMA_DEBUG_LOG_REQUESTS``: inference bodies and a curl replay script written to a
private directory, never a header, bounded in count; other routes untouched."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest
from starlette.types import Message

from corral.server import request_log
from corral.server.request_log import RequestLog, RequestLogMiddleware
from tests.server.asgi import http_scope

BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


async def _call(app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    scope = {**http_scope("POST", path), "headers": headers}
    sent: list[Message] = []
    parts = [body[: len(body) // 2], body[len(body) // 2 :]]

    async def receive() -> Message:
        chunk = parts.pop(0) if parts else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(parts)}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_inference_request_written_without_headers(tmp_path: Path) -> None:
    log = RequestLog(tmp_path)
    app = RequestLogMiddleware(_echo, log=log)
    headers = [
        (b"host", b"127.0.0.1:11434"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer secret-key"),
    ]
    assert asyncio.run(_call(app, "/api/chat", BODY, headers)) == BODY  # the app reads it all
    bodies = sorted(tmp_path.glob("*_api_chat_body.json"))
    scripts = sorted(tmp_path.glob("*_api_chat_request.sh"))
    assert len(bodies) == 1 and len(scripts) == 1
    assert bodies[0].read_bytes() == BODY
    script = scripts[0].read_text()
    assert "curl --request POST --url http://127.0.0.1:11434/api/chat" in script
    assert "Content-Type: application/json" in script and bodies[0].name in script
    assert "secret" not in script
    assert stat.S_IMODE(bodies[0].stat().st_mode) == 0o600


def test_other_routes_are_not_logged(tmp_path: Path) -> None:
    app = RequestLogMiddleware(_echo, log=RequestLog(tmp_path))
    asyncio.run(_call(app, "/api/pull", b'{"model":"x"}', [(b"host", b"h")]))
    assert list(tmp_path.iterdir()) == []


def test_bounded_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request_log, "MAX_LOGGED_REQUESTS", 3)
    app = RequestLogMiddleware(_echo, log=RequestLog(tmp_path))
    for _ in range(5):
        asyncio.run(_call(app, "/v1/chat/completions", BODY, [(b"host", b"h")]))
    assert len(list(tmp_path.glob("*_body.json"))) == 3
    assert len(list(tmp_path.glob("*_request.sh"))) == 3


def test_default_directory_is_private() -> None:
    log = RequestLog()
    try:
        assert log.directory.name.startswith("ollama-request-logs-")
        assert stat.S_IMODE(log.directory.stat().st_mode) == 0o700
    finally:
        log.directory.rmdir()
