"""HTTP client for the CLI: JSON calls, NDJSON streams, and starting a server when none runs.

Errors from the server arrive as ``{"error": ...}`` with a status; they become
``CliError`` with the server's words, which ``main`` prints as one line (no traceback).
"""

from __future__ import annotations

import hashlib
import json
import ssl
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import typer

from corral.cli import _output as output
from corral.cli import background
from corral.config import Settings

__all__ = ["CliError", "ServerClient", "ServerDown"]


class CliError(Exception):
    """An expected failure: printed as one line, exit status 1."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ServerDown(CliError):
    """Nothing answers at ``OLLAMA_HOST``."""


class ServerClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url = settings.host.url
        # The server's API key (CORRAL_API_KEY) goes with every request; a server with its
        # own certificate (CORRAL_TLS_CERT, self-signed) is trusted through that file.
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        # A plain-HTTP server gets a TLS context that trusts nothing (redirects are not
        # followed, so it is never used): httpx's default loads the CA bundle, 25-60 ms
        # of every command's start. An https one gets the CA bundle or its own certificate.
        verify: ssl.SSLContext | bool = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if settings.host.scheme == "https":
            verify = True
            if settings.tls_cert is not None:
                verify = ssl.create_default_context(cafile=str(settings.tls_cert))
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(None, connect=5),
            headers=headers,
            verify=verify,
        )

    def close(self) -> None:
        self._http.close()

    def _down(self) -> ServerDown:
        return ServerDown(
            f"could not connect to a corral server at {self.base_url} (OLLAMA_HOST);"
            " start one with: corral serve"
        )

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TransportError:
            raise self._down() from None
        if response.status_code >= 400:
            raise CliError(_error_text(response), response.status_code)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def stream(self, path: str, body: dict[str, Any]) -> Generator[dict[str, Any], None, None]:
        """POST and yield each NDJSON event. Closing the generator (or an exception such as
        Ctrl+C's ``KeyboardInterrupt`` inside the read) closes the HTTP stream, which is how
        the server learns to stop generating."""
        try:
            with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise CliError(_error_text(response), response.status_code)
                for line in response.iter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    if "error" in event:
                        raise CliError(str(event["error"]))
                    yield event
        except httpx.TransportError:
            raise self._down() from None

    def upload_blob(self, path: Path, progress: Callable[[int, int], None]) -> str:
        """Hash ``path``, and upload it unless the server has it (HEAD, then POST)."""
        digest = _sha256_file(path)
        size = path.stat().st_size
        url = f"/api/blobs/{digest}"
        try:
            if self._http.head(url).status_code == 200:
                progress(size, size)
                return digest

            def body() -> Iterator[bytes]:
                sent = 0
                with path.open("rb") as f:
                    while chunk := f.read(1 << 20):
                        sent += len(chunk)
                        progress(sent, size)
                        yield chunk

            response = self._http.post(url, content=body())
        except httpx.TransportError:
            raise self._down() from None
        if response.status_code >= 400:
            raise CliError(_error_text(response), response.status_code)
        progress(size, size)
        return digest

    def is_up(self) -> bool:
        try:
            return self._http.get("/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_background_server(self, timeout: float = 60.0) -> Path:
        """Start ``corral serve`` detached (like the desktop app keeps one), or find the one
        this process started early (``background.start_early``); wait for it."""
        log_path = background.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_up():
                return log_path
            time.sleep(0.02)  # a refused connection costs nothing: answer within 20 ms of up
        raise CliError(f"the background server did not start; see {log_path}")


def _sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text.strip() or f"HTTP {response.status_code}"
    if isinstance(data, dict) and "error" in data:
        error = data["error"]
        return str(error.get("message", error)) if isinstance(error, dict) else str(error)
    return f"HTTP {response.status_code}"


def env_settings() -> Settings:
    """The settings from the environment, or the CLI's one-line error and exit 1 for a
    variable that cannot be used (``OLLAMA_HOST=34637``)."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        output.err(f"Error: {exc}")
        raise typer.Exit(1) from None
