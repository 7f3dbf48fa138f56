"""``corral rpc-worker``: llama.cpp's RPC server, from the engine corral itself runs on.

It is ``ggml_backend_rpc_start_server`` of the installed llama-cpp-python, called through
ctypes, so the worker and the server that drives it always speak the same protocol version
(build both hosts from the same corral). What it serves: every GPU of this host when the
engine has any, else the CPU.

Behaviour worth knowing:

- **one client at a time**: llama.cpp's accept loop is serial. The corral server leases a
  worker to one runner at a time; a second client (another server) waits in the listen
  backlog until the first one leaves. Run one worker per model you want spread at once,
  each on its own port.
- **SIGPIPE is ignored** (Python's default; kept so here): the stock ``ggml-rpc-server``
  dies of it when a client that gave up waiting is accepted later.
- **no authentication, no encryption**: whoever reaches the port can allocate memory, read
  and write its buffers and run compute graphs on this host, and llama.cpp does not
  validate what it is sent. The port is as good as a shell on this host: bind 127.0.0.1
  (the default, for an SSH or WireGuard tunnel) or an address on a trusted, firewalled
  segment that only the corral server reaches.
- ``--cache DIR`` keeps tensors over 10 MiB on disk by hash, so reloading a model sends
  only the small ones again.

The call blocks in native code for the worker's whole life; SIGINT and SIGTERM are given
back their default action so that Ctrl-C and ``kill`` end it.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.rpc.endpoints import DEFAULT_PORT

__all__ = ["WorkerError", "WorkerOptions", "bind_warning", "run_worker"]

_DEV_CPU = 0
_DEV_GPU = 1


class WorkerError(Exception):
    """The worker cannot start (no RPC in this engine, a bad option); the message says why."""


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    threads: int = 0  # 0: every CPU this process may use
    cache_dir: str | None = None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_warning(host: str, port: int) -> str | None:
    """What to say when the worker listens beyond this host, or None on loopback."""
    if is_loopback(host):
        return None
    return (
        f"WARNING: this RPC worker listens on {host}:{port}, which is not loopback. It has no"
        " authentication and no encryption: anyone who reaches this port can run code on this"
        " host and read every prompt it computes. Only use a trusted network, firewall the port"
        " to the corral server, or bind 127.0.0.1 and reach it through an SSH/WireGuard tunnel."
    )


def _library() -> Any:
    """The engine's ggml, through llama-cpp-python's loaded libllama (its ggml libraries are
    shipped as separate copies; loading one by path would get a second, empty registry)."""
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - the engine is a dependency
        raise WorkerError(f"the engine (llama-cpp-python) is not installed: {exc}") from exc
    if not llama_cpp.llama_supports_rpc():
        raise WorkerError(
            "this engine was built without llama.cpp's RPC backend; rebuild it with"
            " `./install.sh --rebuild-engine` (every build since RPC support has it)"
        )
    lib = llama_cpp.llama_cpp._lib
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_name.restype = ctypes.c_char_p
    lib.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_rpc_start_server.restype = None
    lib.ggml_backend_rpc_start_server.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_void_p),
    ]
    return lib


def _devices(lib: Any) -> list[int]:
    """Every GPU the engine sees, else the CPU (RPC devices are never served onwards)."""
    found: dict[int, list[int]] = {}
    for index in range(lib.ggml_backend_dev_count()):
        device = lib.ggml_backend_dev_get(index)
        name = (lib.ggml_backend_dev_name(device) or b"").decode(errors="replace")
        if name.startswith("RPC"):
            continue
        found.setdefault(lib.ggml_backend_dev_type(device), []).append(device)
    devices = found.get(_DEV_GPU) or found.get(_DEV_CPU) or []
    if not devices:
        raise WorkerError("the engine reports no device to serve")
    return devices


def _threads(requested: int) -> int:
    if requested > 0:
        return requested
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run_worker(options: WorkerOptions) -> None:
    """Serve until killed. ``WorkerError`` when it cannot start; a port already taken makes
    llama.cpp print ``Failed to create server socket`` and return, reported the same way."""
    if not 0 < options.port < 65536:
        raise WorkerError(f"port must be 1-65535, not {options.port}")
    if ":" in options.host:
        raise WorkerError("IPv6 literals are not supported by llama.cpp's RPC; use a host name")
    cache = None
    if options.cache_dir:
        path = Path(options.cache_dir).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkerError(f"cannot use cache directory {path}: {exc.strerror}") from exc
        cache = str(path).encode()
    lib = _library()
    devices = _devices(lib)
    array = (ctypes.c_void_p * len(devices))(*devices)
    # Python ignores SIGPIPE already (a write to a client that left is an error, not death);
    # Ctrl-C and kill must end a process that never returns from native code.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    endpoint = f"{options.host}:{options.port}".encode()
    lib.ggml_backend_rpc_start_server(
        endpoint, cache, _threads(options.threads), len(devices), array
    )
    raise WorkerError(
        f"the RPC server stopped: could not listen on {options.host}:{options.port}"
        " (address in use, or not an address of this host?)"
    )
