"""The runner's side of a model spread over RPC workers (llama.cpp's ``ggml-rpc``).

llama-cpp-python 0.3.36 ignores ``Llama(rpc_servers=...)`` without a word, so the workers
are added the way llama.cpp's own ``--rpc`` does it, through ggml's backend registry:
``ggml_backend_rpc_add_server`` per endpoint, its devices registered, and the model loaded
with ``llama_model_params.devices`` set to exactly those devices, ``n_gpu_layers`` and
``tensor_split`` as the scheduler placed them (``corral.scheduler.placement``). Every symbol
is looked up through llama-cpp-python's loaded ``libllama`` handle: the wheel ships its ggml
libraries as separate copies, and loading one by path would get a second, empty registry.

What can go wrong, and what this module makes of it:

- llama.cpp has no error path for a lost worker: every failed send or receive calls
  ``abort()``. ``install_abort_guard`` installs ggml's abort callback, which writes one
  ``error:`` line (what the server shows the client) and exits with ``RPC_LOST`` at once
  (the callback must not return: ggml aborts when it does). The callback runs on the RPC
  dispatcher thread, which holds no lock of ours.
- A worker that is frozen (SIGSTOP, a hung host) or partitioned makes a decode step wait
  forever: llama.cpp sets no socket timeout and no keepalive. The runner's HTTP side keeps
  answering health checks meanwhile (the engine thread waits in native code without the
  GIL), so the server's watchdog alone would not see it. ``watch_steps`` watches the
  engine's decode steps and exits with ``RPC_STALLED`` when one lasts longer than the stall
  timeout.

Either exit ends the runner; the server fails the request in flight with the ``error:``
line and places the model again, on the workers that still answer, at the next request.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "KEEP_LOCAL_PATTERN",
    "RPC_LOST",
    "RPC_STALLED",
    "RpcAttachment",
    "attach",
    "install_abort_guard",
    "watch_steps",
]

#: the runner's exit status when a worker was lost (EX_TEMPFAIL)
RPC_LOST = 75
#: the runner's exit status when a decode step on workers outlasted the stall timeout
RPC_STALLED = 76

#: the output matrix (or the tied embedding that stands in for it) stays in this host's
#: memory: with it remote, every decoded token brings 4 x n_vocab bytes of logits back
KEEP_LOCAL_PATTERN = rb"^(output|token_embd)\.weight$"

_ABORT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_ADD_SERVER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)


class _Override(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


@dataclass(slots=True)
class RpcAttachment:
    """What the model parameters point at while the model loads: kept alive with it."""

    endpoints: tuple[str, ...]
    devices: Any = None
    overrides: Any = None
    names: list[str] = field(default_factory=list)


_state: dict[str, Any] = {}


def _lib() -> Any:
    import llama_cpp

    lib = llama_cpp.llama_cpp._lib
    if "typed" not in _state:
        lib.ggml_backend_reg_by_name.restype = ctypes.c_void_p
        lib.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
        lib.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
        lib.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.ggml_backend_register.restype = None
        lib.ggml_backend_register.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_reg_dev_count.restype = ctypes.c_size_t
        lib.ggml_backend_reg_dev_count.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_reg_dev_get.restype = ctypes.c_void_p
        lib.ggml_backend_reg_dev_get.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.ggml_backend_dev_description.restype = ctypes.c_char_p
        lib.ggml_backend_dev_description.argtypes = [ctypes.c_void_p]
        lib.ggml_set_abort_callback.restype = ctypes.c_void_p
        lib.ggml_set_abort_callback.argtypes = [_ABORT_CALLBACK]
        _state["typed"] = True
    return lib


def supported() -> bool:
    """Whether this engine has llama.cpp's RPC backend."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_rpc())


def _say_and_exit(message: str, status: int) -> None:
    """One ``error:`` line on stderr (written at once, no buffering), then exit."""
    try:
        os.write(2, f"error: {message}\n".encode(errors="replace"))
    finally:
        os._exit(status)


def install_abort_guard(endpoints: tuple[str, ...]) -> None:
    """Turn ggml's ``abort()`` into a clear message and ``RPC_LOST``; idempotent."""
    if "abort" in _state:
        return
    where = ", ".join(endpoints)

    def on_abort(raw: bytes | None) -> None:
        # "/long/build/path/ggml-rpc.cpp:566: Remote RPC server crashed ..." → the words
        text = re.sub(r"^\S*/", "", (raw or b"").decode(errors="replace").strip())
        _say_and_exit(
            f"lost the connection to an RPC worker ({where}): {text or 'llama.cpp aborted'};"
            " the model is placed again on the workers that answer at the next request",
            RPC_LOST,
        )

    callback = _ABORT_CALLBACK(on_abort)
    _state["abort"] = callback  # referenced for the life of the process
    _lib().ggml_set_abort_callback(callback)


def _cpu_buffer_type(lib: Any) -> int | None:
    try:
        function = lib.ggml_backend_cpu_buffer_type
    except AttributeError:
        return None
    function.restype = ctypes.c_void_p
    function.argtypes = []
    value = function()
    return int(value) if value else None


def attach(model_params: Any, endpoints: tuple[str, ...], *, keep_output: bool) -> RpcAttachment:
    """Register the workers at ``endpoints`` and point ``model_params`` at their devices
    only. A worker that cannot be reached aborts inside llama.cpp: the abort guard, set
    first, turns that into ``RPC_LOST`` with llama.cpp's reason."""
    if not supported():
        _say_and_exit(
            "this engine was built without llama.cpp's RPC backend; rebuild it with"
            " `./install.sh --rebuild-engine`",
            RPC_LOST,
        )
    install_abort_guard(endpoints)
    lib = _lib()
    reg = lib.ggml_backend_reg_by_name(b"RPC")
    address = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_rpc_add_server")
    if not reg or not address:
        _say_and_exit("llama.cpp's RPC backend is not registered in this engine", RPC_LOST)
    add_server = _ADD_SERVER(address)
    attachment = RpcAttachment(endpoints)
    devices: list[int] = []
    for endpoint in endpoints:
        server = add_server(endpoint.encode())
        lib.ggml_backend_register(server)
        for index in range(lib.ggml_backend_reg_dev_count(server)):
            device = lib.ggml_backend_reg_dev_get(server, index)
            devices.append(device)
            described = lib.ggml_backend_dev_description(device) or b""
            attachment.names.append(described.decode(errors="replace"))
    attachment.devices = (ctypes.c_void_p * (len(devices) + 1))(*devices, None)
    model_params.devices = ctypes.cast(attachment.devices, ctypes.c_void_p)
    if keep_output:
        buft = _cpu_buffer_type(lib)
        if buft is not None:
            attachment.overrides = (_Override * 2)(
                _Override(KEEP_LOCAL_PATTERN, buft), _Override(None, None)
            )
            model_params.tensor_buft_overrides = ctypes.cast(attachment.overrides, ctypes.c_void_p)
    return attachment


class _Stepping(Protocol):
    @property
    def step_started(self) -> float | None: ...


def watch_steps(engine: _Stepping, stall_seconds: float, endpoints: tuple[str, ...]) -> None:
    """Exit with ``RPC_STALLED`` when one decode step lasts longer than ``stall_seconds``
    (0 or infinite: never). A daemon thread, polling twice a second."""
    if not stall_seconds or stall_seconds == float("inf"):
        return
    where = ", ".join(endpoints)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            started = engine.step_started
            if started is not None and time.monotonic() - started > stall_seconds:
                _say_and_exit(
                    f"an RPC worker ({where}) stopped answering: one decode step took longer"
                    f" than {stall_seconds:g} s (a frozen worker or a lost network); the model"
                    " is placed again on the workers that answer at the next request",
                    RPC_STALLED,
                )

    threading.Thread(target=watch, name="rpc-stall-guard", daemon=True).start()
