"""``OLLAMA_DEBUG_LOG_REQUESTS``: each inference request written to disk, to replay it.

As newest Ollama: when the variable is true the server makes one private temp directory
(``ollama-request-logs-*``, mode 0700) at start and logs where it is; after each request to
an inference route (generate, chat, and the OpenAI and Anthropic dialects) it writes the
body as it came (``<time>-<n>_<route>_body.json``) and a shell script replaying it with
curl (``..._request.sh``), then logs both paths.

Bounded, no secrets: only the body and its content type are written, never a header (an
``Authorization`` or ``x-api-key`` stays out, and the replay script sends none); a body
over ``MAX_LOGGED_BODY_BYTES`` is not written (a line says so); and only the newest
``MAX_LOGGED_REQUESTS`` requests are kept, older pairs deleted as new ones come.
Prompts are user data: the directory is the operator's, readable by them only.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import shlex
import tempfile
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["INFERENCE_ROUTES", "RequestLog", "RequestLogMiddleware"]

logger = logging.getLogger(__name__)

#: the routes Ollama logs (its ``withInferenceRequestLogging`` list)
INFERENCE_ROUTES = frozenset(
    {
        "/api/generate",
        "/api/chat",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
    }
)
MAX_LOGGED_BODY_BYTES = 16 * 1024 * 1024
MAX_LOGGED_REQUESTS = 1000


class RequestLog:
    """The directory and the bounded list of what is in it."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or Path(tempfile.mkdtemp(prefix="ollama-request-logs-"))
        self._counter = itertools.count(1)
        self._written: deque[tuple[Path, Path]] = deque()

    def write(self, route: str, method: str, url: str, content_type: str, body: bytes) -> None:
        """Blocking: call through ``asyncio.to_thread``. Failures are logged, not raised."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        prefix = f"{stamp}-{next(self._counter):06d}_{_route_name(route)}"
        body_path = self.directory / f"{prefix}_body.json"
        script_path = self.directory / f"{prefix}_request.sh"
        script = (
            "#!/bin/sh\n"
            'SCRIPT_DIR="$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)"\n'
            f"curl --request {shlex.quote(method)} --url {shlex.quote(url)}"
            f" --header {shlex.quote('Content-Type: ' + content_type)}"
            f' --data-binary @"${{SCRIPT_DIR}}/{body_path.name}"\n'
        )
        try:
            _write_private(body_path, body)
            _write_private(script_path, script.encode())
        except OSError as exc:
            logger.warning("could not log the request to %s: %s", route, exc)
            return
        self._written.append((body_path, script_path))
        while len(self._written) > MAX_LOGGED_REQUESTS:
            for old in self._written.popleft():
                old.unlink(missing_ok=True)
        logger.info("logged to %s, replay using curl with `sh %s`", body_path, script_path)


class RequestLogMiddleware:
    """Keeps a copy of an inference request's body as the app reads it; writes it when
    the response is done (the body is not read twice, nor held for other routes)."""

    def __init__(self, app: ASGIApp, *, log: RequestLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or path not in INFERENCE_ROUTES:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0

        async def keep() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request" and size <= MAX_LOGGED_BODY_BYTES:
                chunk = message.get("body", b"")
                size += len(chunk)
                chunks.append(chunk)
            return message

        try:
            await self.app(scope, keep, send)
        finally:
            headers = dict(scope.get("headers") or [])
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            host = headers.get(b"host", b"").decode("latin-1") or "127.0.0.1:11434"
            url = f"{scope.get('scheme', 'http')}://{host}{path}"
            if size > MAX_LOGGED_BODY_BYTES:
                logger.info("request to %s not logged: its body is over %d bytes", path, size)
            else:
                await asyncio.to_thread(
                    self.log.write,
                    path,
                    "POST",
                    url,
                    content_type or "application/json",
                    b"".join(chunks),
                )


def _route_name(route: str) -> str:
    """The route as a file name part: letters and digits, anything else ``_``."""
    return re.sub(r"[^A-Za-z0-9]", "_", route.removeprefix("/")) or "root"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
