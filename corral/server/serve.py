"""``corral serve``: open the store, start the scheduler, listen until a signal arrives.

Shutdown (SIGINT/SIGTERM, handled by uvicorn): stop accepting new connections, let
responses in flight finish for a grace period of ``SHUTDOWN_GRACE_SECONDS`` (10 s, fixed:
Ollama has no setting for it either), cancel what is still running after it, then the app's
lifespan stops every runner. A second SIGINT (Ctrl+C) cuts the grace period short and
skips that step; runners then exit by themselves, as they do whenever this process dies
(their stdin pipe closes), so there is no orphan runner even after ``kill -9``.

Every HTTP request is counted by route and outcome (``metrics.RequestOutcomes``, wrapped
around the app here).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket

import uvicorn

from corral import __version__
from corral.config import Settings
from corral.errors import CorralError
from corral.hardware import Hardware
from corral.runner.client import RunnerClient, RunnerConfig
from corral.scheduler import RunnerLike, Scheduler
from corral.server.app import create_app
from corral.server.metrics import RequestOutcomes
from corral.server.routes import Api
from corral.store import ModelStore

__all__ = ["SHUTDOWN_GRACE_SECONDS", "configure_logging", "run_server"]

logger = logging.getLogger("corral.server")

#: how long responses in flight may take to finish after SIGINT/SIGTERM
SHUTDOWN_GRACE_SECONDS = 10


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


async def run_server(settings: Settings) -> None:
    store = ModelStore(settings.models_dir)
    store.blobs_dir.mkdir(parents=True, exist_ok=True)
    store.manifests_dir.mkdir(parents=True, exist_ok=True)
    if not settings.no_prune:
        removed = await asyncio.to_thread(store.prune)
        if removed:
            logger.info("pruned %d unused blobs", removed)

    async def start_runner(config: RunnerConfig) -> RunnerLike:
        return await RunnerClient.start(config, load_timeout=settings.load_timeout_seconds)

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
    config = uvicorn.Config(
        RequestOutcomes(app, api.metrics),
        host=host,
        port=port,
        log_level="warning",
        access_log=settings.debug > 0,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGINT/SIGTERM during serve() and re-raises the signal afterwards so
    # the default action would kill us with -15 after a clean shutdown; these handlers,
    # restored by uvicorn before it re-raises, turn that into a normal exit (status 0).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    logger.info(
        "Listening on %s:%d (version %s), models in %s",
        host,
        port,
        __version__,
        settings.models_dir,
    )
    logger.info("server config %s", settings.describe())
    try:
        await server.serve()
    finally:
        hardware.close()
