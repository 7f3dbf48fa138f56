"""``corral rpc-worker``: lend this host's memory and compute to a corral server elsewhere
(llama.cpp's RPC server; see ``corral.rpc.worker`` for what it does and does not protect)."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli import _output as output
from corral.rpc.endpoints import DEFAULT_PORT
from corral.rpc.worker import WorkerError, WorkerOptions, bind_warning, run_worker

__all__ = ["rpc_worker"]


def rpc_worker(
    host: Annotated[
        str,
        typer.Option("--host", "-H", help="Address to listen on (only trusted networks)"),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on")] = DEFAULT_PORT,
    threads: Annotated[
        int, typer.Option("--threads", "-t", help="CPU threads (0: every usable core)")
    ] = 0,
    cache: Annotated[
        str | None,
        typer.Option("--cache", "-c", help="Keep large tensors here, so reloads send less"),
    ] = None,
) -> None:
    """Serve this host's devices to a corral server over llama.cpp's RPC (one client at a
    time). No authentication: the port is as good as a shell on this host.

    Examples: corral rpc-worker; corral rpc-worker --host 10.0.0.5 --cache ~/.cache/corral/rpc
    """
    warning = bind_warning(host, port)
    if warning:
        output.err(warning)
    output.err(f"corral rpc-worker on {host}:{port}: one client at a time; Ctrl-C stops it")
    try:
        run_worker(WorkerOptions(host=host, port=port, threads=threads, cache_dir=cache))
    except WorkerError as exc:
        output.err(f"Error: {exc}")
        raise typer.Exit(1) from None
