"""The background ``corral serve`` a command starts when none answers, started early.

A cold ``corral run`` waits mostly on the server's start-up (its imports take about half a
second) and then the model's load. This module imports nothing heavy, so the ``corral``
entry point (``corral/__main__.py``) can call :func:`start_early` before the command line's
own modules load (typer, httpx, rich: about 0.2 s): for ``corral run MODEL`` with nothing
listening at a loopback ``OLLAMA_HOST``, the server starts at once and its start-up runs
beside the rest of the command's. The command then finds it starting and waits for it, as
it waits for one it starts itself (:func:`spawn` starts one server per process at most).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

__all__ = ["log_path", "spawn", "start_early", "started"]

_started: Path | None = None  # the log of the server this process started, once it has
_announced = False  # whether started() has given it out


def log_path() -> Path:
    return Path.home() / ".ollama" / "logs" / "server.log"


def started() -> Path | None:
    """The log of the server this process started, the first time it is asked after the
    start (so that it is announced once); None otherwise."""
    global _announced
    if _started is None or _announced:
        return None
    _announced = True
    return _started


def spawn() -> Path:
    """Start ``corral serve`` detached (like the desktop app keeps one), unless this process
    already has; its log's path. Does not wait for it to answer."""
    global _started
    if _started is None:
        path = log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as log:
            subprocess.Popen(
                [sys.executable, "-m", "corral", "serve"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=os.environ.copy(),
            )
        _started = path
    return _started


def start_early(argv: list[str]) -> None:
    """``corral run MODEL ...`` (not ``--help``) with nothing listening at ``OLLAMA_HOST``,
    a plain-HTTP loopback address: start the server now. Anything else (another command, a
    remote or https host, something already listening, an unreadable ``OLLAMA_HOST``) is
    left to the command, which starts a server where it needs one as before."""
    if argv[:1] != ["run"] or "-h" in argv or "--help" in argv:
        return
    if not any(not a.startswith("-") for a in argv[1:]):
        return  # no model named: the command's usage error, no server
    from corral.config import parse_host  # light: the settings module alone

    try:
        host = parse_host(os.environ.get("OLLAMA_HOST"))
    except ValueError:
        return  # the command words this error
    if host.scheme != "http" or not host.is_loopback:
        return
    try:
        with socket.create_connection((host.host, host.port), timeout=0.5):
            return  # something answers: the command checks what
    except OSError:
        pass
    try:
        spawn()
    except OSError:
        return  # the command tries again and reports what fails
