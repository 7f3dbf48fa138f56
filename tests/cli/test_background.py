"""``corral run`` starts a missing background server before the command line loads
(``corral.cli.background.start_early``): when it does, and when it leaves it to the command."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.cli import background
from tests.conftest import free_port


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls: list[int] = []

    def spawn() -> Path:
        calls.append(1)
        return Path("log")

    monkeypatch.setattr(background, "spawn", spawn)
    yield calls


def _host(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OLLAMA_HOST", value)


def test_run_with_nothing_listening_starts_the_server(
    monkeypatch: pytest.MonkeyPatch, spawned: list[int]
) -> None:
    _host(monkeypatch, f"127.0.0.1:{free_port()}")
    background.start_early(["run", "smollm2:135m", "Say hi."])
    assert spawned == [1]


def test_something_listening_is_left_to_the_command(
    monkeypatch: pytest.MonkeyPatch, spawned: list[int]
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        _host(monkeypatch, f"127.0.0.1:{listener.getsockname()[1]}")
        background.start_early(["run", "smollm2:135m"])
    assert spawned == []


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["run"],  # no model: the command's usage error, no server
        ["run", "--help"],
        ["run", "smollm2:135m", "-h"],
        ["--verbose", "run", "smollm2:135m"],
        ["pull", "run"],
        [],
    ],
)
def test_other_command_lines_start_nothing(
    monkeypatch: pytest.MonkeyPatch, spawned: list[int], argv: list[str]
) -> None:
    _host(monkeypatch, f"127.0.0.1:{free_port()}")
    background.start_early(argv)
    assert spawned == []


@pytest.mark.parametrize(
    "host", ["https://127.0.0.1:{port}", "10.1.2.3:{port}", "example.com:{port}", "1234"]
)
def test_remote_https_or_unreadable_hosts_are_left_to_the_command(
    monkeypatch: pytest.MonkeyPatch, spawned: list[int], host: str
) -> None:
    _host(monkeypatch, host.format(port=free_port()))
    background.start_early(["run", "smollm2:135m"])
    assert spawned == []


def test_spawn_starts_one_server_per_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[list[str]] = []

    class FakePopen:
        def __init__(self, args: list[str], **_kwargs: object) -> None:
            started.append(args)

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(background, "_started", None)
    monkeypatch.setattr(background, "_announced", False)
    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    assert background.started() is None  # none started yet: nothing to announce
    first = background.spawn()
    assert background.spawn() == first == tmp_path / ".ollama" / "logs" / "server.log"
    assert len(started) == 1 and started[0][1:] == ["-m", "corral", "serve"]
    # the command announces the server once, whether it or the entry point started it
    assert background.started() == first
    assert background.started() is None
