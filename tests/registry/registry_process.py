"""A real OCI registry for tests: Debian's ``docker-registry`` on a free loopback port.

Started with its own config and a temp storage folder; health is ``GET /v2/`` answering 200,
waited for until a deadline while checking the process is alive; stopped with terminate →
wait → kill. Tests that need it skip when the binary is not installed (``.ci/run`` installs
it).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"

_CONFIG = """version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@dataclass
class Registry:
    process: subprocess.Popen[bytes]
    port: int
    root: Path
    log_path: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def require_registry() -> None:
    if not Path(BINARY).is_file():
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")


def start_registry(tmp: Path, port: int | None = None) -> Registry:
    """Start a registry storing under ``tmp/registry`` (kept across restarts on ``port``)."""
    require_registry()
    port = port or free_port()
    root = tmp / "registry"
    root.mkdir(parents=True, exist_ok=True)
    config = tmp / f"registry-{port}.yml"
    config.write_text(_CONFIG.format(root=root, port=port))
    log_path = tmp / f"registry-{port}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [BINARY, "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    registry = Registry(process, port, root, log_path)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited early:\n{registry.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(registry.url + "/v2/", timeout=1).status_code == 200:
                return registry
        if time.monotonic() > deadline:
            registry.stop()
            raise RuntimeError(f"docker-registry did not answer in time:\n{registry.log_tail()}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_registry(tmp: Path) -> Iterator[Registry]:
    registry = start_registry(tmp)
    try:
        yield registry
    finally:
        registry.stop()
