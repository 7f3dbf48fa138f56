"""Starting ``corral serve`` in the background when no server answers, as the desktop app
keeps one running.

``corral run`` starts it before the command line's own modules are imported (``spawn_early``,
called by ``__main__``), so the server's start-up and the CLI's imports run side by side on
a cold start. Standard library and ``corral.config`` only: this runs before anything else.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from corral.config import parse_host

__all__ = ["spawn", "spawn_early", "started"]

_log: Path | None = None  # the log of the server this process started, if it started one


def started() -> Path | None:
    """The log of the server this process started, or None."""
    return _log


def spawn() -> Path:
    """Start ``corral serve`` detached (output to ``~/.ollama/logs/server.log``); its log."""
    global _log
    log_dir = Path.home() / ".ollama" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "server.log"
    with log_path.open("ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "corral", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=os.environ.copy(),
        )
    _log = log_path
    return log_path


def spawn_early() -> None:
    """Start the server now when ``OLLAMA_HOST`` is a plain-HTTP loopback address where
    nothing listens; anything else (a server up, a remote or TLS host, a bad value) is left
    to the command, which checks properly and says what is wrong."""
    try:
        host = parse_host(os.environ.get("OLLAMA_HOST"))
    except ValueError:
        return
    if host.scheme != "http" or not host.is_loopback:
        return
    address = "127.0.0.1" if host.host == "localhost" else host.host
    try:
        socket.create_connection((address, host.port), timeout=0.5).close()
    except ConnectionRefusedError:
        spawn()
    except OSError:  # a timeout or an unreachable address: the command decides
        return
