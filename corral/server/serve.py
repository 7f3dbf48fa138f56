"""``corral serve``: open the store, start the scheduler, listen until a signal arrives.

Shutdown (SIGINT/SIGTERM), within ``CORRAL_SHUTDOWN_TIMEOUT`` (2 s by default) from the
signal to the exit: stop accepting connections and close the idle ones at once; new requests
on a busy keep-alive connection get 503 ``server shutting down``; requests in flight may
finish during the first part of the timeout (all of it but ``_STOP_RESERVE``); then each is
ended, a stream with a last ``{"error": "server shutting down"}`` line (an error event on
SSE), and the app's lifespan stops every runner in the time left (``drain.py``). A second
SIGINT (Ctrl+C) cuts the wait short; runners exit by themselves whenever this process dies
(their stdin pipe closes), so there is no orphan runner even after ``kill -9``.

Security at startup: ``CORRAL_TLS_CERT`` and ``CORRAL_TLS_KEY`` make uvicorn serve HTTPS;
listening on an address other than loopback without ``CORRAL_API_KEY`` logs a warning.

Every HTTP request is counted by route and outcome (``metrics.RequestOutcomes``, wrapped
around the app here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
import sys
import time
from types import FrameType

import uvicorn

from corral import __version__
from corral.config import Settings
from corral.errors import CorralError
from corral.hardware import Hardware
from corral.runner.client import RunnerClient, RunnerConfig
from corral.scheduler import RunnerLike, Scheduler
from corral.server.app import create_app
from corral.server.drain import InFlight
from corral.server.metrics import RequestOutcomes
from corral.server.routes import Api
from corral.store import ModelStore

__all__ = ["configure_logging", "main", "run_server"]

logger = logging.getLogger("corral.server")

#: of the shutdown timeout, what is kept for ending streams and stopping runners (at most
#: half of it); requests in flight may finish during the rest
_STOP_RESERVE = 1.0


class _Server(uvicorn.Server):
    """Uvicorn's server with corral's shutdown (see the module's docstring)."""

    def __init__(self, config: uvicorn.Config, inflight: InFlight, timeout: float) -> None:
        super().__init__(config)
        self.inflight = inflight
        self.timeout = timeout

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        deadline = None if math.isinf(self.timeout) else time.monotonic() + self.timeout
        reserve = min(_STOP_RESERVE, self.timeout / 2)
        grace = None if deadline is None else max(0.0, self.timeout - reserve)
        for server in self.servers:  # no new connections
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle: closed now; busy: closed after its response
        if self.force_exit:
            grace = 0.0
        await self.inflight.close(grace, deadline=deadline)
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self.force_exit:  # a second Ctrl+C: end the grace period now
            with contextlib.suppress(RuntimeError):  # no loop (yet, or any more)
                asyncio.get_running_loop().call_soon_threadsafe(self.inflight.hurry)


def configure_logging(settings: Settings) -> None:
    level = logging.DEBUG if settings.debug else logging.INFO
    logging.basicConfig(
        level=level,
        format="time=%(asctime)s level=%(levelname)s source=%(name)s msg=%(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CorralError(
                f"listen tcp {host}:{port}: bind: address already in use ({exc.strerror})"
            ) from exc


def _warn_if_open(settings: Settings) -> None:
    if settings.host.is_loopback:
        return
    if not settings.api_key:
        logger.warning(
            "listening on %s, which is not loopback, without an API key: anyone who can reach"
            " this address can use every model and every route (pull, create, delete). Set"
            " CORRAL_API_KEY, or listen on 127.0.0.1",
            settings.host.host,
        )
    elif settings.tls_cert is None:
        logger.warning(
            "listening on %s without TLS: the API key and every prompt cross the network in"
            " clear text (CORRAL_TLS_CERT and CORRAL_TLS_KEY serve HTTPS)",
            settings.host.host,
        )


async def run_server(settings: Settings) -> None:
    store = ModelStore(settings.models_dir)
    store.blobs_dir.mkdir(parents=True, exist_ok=True)
    store.manifests_dir.mkdir(parents=True, exist_ok=True)
    if not settings.no_prune:
        removed = await asyncio.to_thread(store.prune)
        if removed:
            logger.info("pruned %d unused blobs", removed)

    async def start_runner(config: RunnerConfig) -> RunnerLike:
        return await RunnerClient.start(
            config,
            load_timeout=settings.load_timeout_seconds,
            stall_timeout=settings.runner_stall_seconds,
        )

    # Discovery before listening, as Ollama's GetGPUInfo: one line per compute device.
    hardware = Hardware(settings)
    system = await asyncio.to_thread(hardware.discover)
    for line in system.log_lines():
        logger.info("%s", line)
    scheduler = Scheduler(settings, start_runner, system=hardware.refresh)
    app = create_app(settings, store, scheduler)
    api: Api = app.state.api
    host, port = settings.host.host, settings.host.port
    _check_port_free(host, port)
    timeout = settings.shutdown_timeout_seconds
    tls = settings.tls_cert is not None
    config = uvicorn.Config(
        RequestOutcomes(app, api.metrics),
        host=host,
        port=port,
        log_level="warning",
        access_log=settings.debug > 0,
        # a backstop: by then every request has been ended (see _Server.shutdown)
        timeout_graceful_shutdown=None if math.isinf(timeout) else max(1, math.ceil(timeout)),
        lifespan="on",
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    server = _Server(config, app.state.inflight, timeout)
    # uvicorn handles SIGINT/SIGTERM during serve() and re-raises the signal afterwards so
    # the default action would kill us with -15 after a clean shutdown; these handlers,
    # restored by uvicorn before it re-raises, turn that into a normal exit (status 0).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    logger.info(
        "Listening on %s:%d%s (version %s), models in %s",
        host,
        port,
        " (https)" if tls else "",
        __version__,
        settings.models_dir,
    )
    logger.info("server config %s", settings.describe())
    _warn_if_open(settings)
    try:
        await server.serve()
    finally:
        hardware.close()


def main() -> None:
    """``corral serve`` without the command line's own modules (``python -m corral serve``,
    how the CLI starts a background server, comes here): the same settings check, logging
    and server as the ``serve`` command."""
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        sys.exit(1)
    configure_logging(settings)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_server(settings))
