"""``POST /api/pull`` and ``POST /api/push``: relays from the registry client to NDJSON.

A pull of a bundled model whose package is installed imports it from there; any other pull
goes to its registry. One download runs per model however many clients ask for it (a
create's ``FROM`` of a missing model included, through :meth:`Transfers.registry_events`):
every listener sees every event. Byte progress is coalesced to at most one event per status
per 1%. Errors before the first byte get their real status; later ones arrive as a final
``{"error": ...}`` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import Response

from corral.api.types import PullRequest, PushRequest
from corral.catalog import find_bundled, pull_bundled
from corral.catalog.bundled import BundledModel
from corral.errors import (
    BadRequestError,
    CatalogError,
    CorralError,
    NotFoundError,
    RegistryError,
    StoreError,
)
from corral.registry import PullOptions, pull_model, push_model
from corral.registry.events import ProgressEvent as Event
from corral.server.models import parse_name
from corral.server.streaming import parse_body, respond
from corral.store import ModelStore, Name

__all__ = ["Event", "Transfers"]

logger = logging.getLogger(__name__)

_Key = tuple[str, str, str, str]


class Transfers:
    """The pull and push handlers over one store, and the pulls in flight."""

    def __init__(self, store: ModelStore, *, bf16: Callable[[], bool] = lambda: False) -> None:
        self.store = store
        #: whether a bundled checkpoint (all-minilm) is converted to BF16 rather than F16:
        #: the serve's hardware says (a CPU that multiplies BF16 itself, no GPU in use)
        self.bf16 = bf16
        self._pulls: dict[_Key, asyncio.Task[None]] = {}
        self._listeners: dict[_Key, list[asyncio.Queue[Event | BaseException | None]]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # ---- pull -----------------------------------------------------------------------

    async def pull(self, request: Request) -> Response:
        req = await parse_body(request, PullRequest)
        raw = req.target
        insecure = req.insecure
        if raw.startswith("http://") and not insecure:
            raise BadRequestError("insecure protocol http")
        name = parse_name(raw)
        existing = await asyncio.to_thread(self.store.find, name)
        if existing is not None:
            name = existing
        bundled = find_bundled(name)
        if bundled is not None and _bundled_installed(bundled):
            events = self._bundled_events(name, bundled)
        else:
            events = self.registry_events(name, insecure, bundled)
        return await respond(events, stream=req.stream, merge=lambda items: items[-1])

    async def _bundled_events(
        self, name: Name, bundled: BundledModel
    ) -> AsyncGenerator[Event, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()

        def report(event: Event) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        async def run() -> None:
            # Its failure goes to the client through the queue, never out of the task: a
            # task that raises while nobody awaits it (the stream ended at that very error,
            # or the client left) is logged as "Task exception was never retrieved".
            try:
                await asyncio.to_thread(
                    pull_bundled, self.store, name, bundled, report, bf16=self.bf16()
                )
            except CorralError as exc:
                queue.put_nowait(exc)
            except OSError as exc:  # a full disk, a read-only store
                logger.warning("pull of %s failed: %s", name.display_short, exc)
                queue.put_nowait(
                    StoreError(f"pull failed: cannot write to the store: {exc.strerror or exc}")
                )
            except Exception as exc:
                logger.exception("pull of %s failed", name.display_short)
                queue.put_nowait(StoreError(f"pull failed: {exc}"))
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(run())
        try:
            async for event in _coalesce(_drain(queue)):
                yield event
        finally:
            # The import runs in a thread that cannot be stopped: let it finish on its own
            # (the store stays consistent), keeping a reference until it does.
            if not task.done():
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def registry_events(
        self, name: Name, insecure: bool, bundled: BundledModel | None
    ) -> AsyncGenerator[Event, None]:
        """The events of a registry pull of ``name``, joining the one already running."""
        queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
        options = PullOptions(insecure=insecure)
        key = name.casefold_key()
        task = self._pulls.get(key)
        if task is None or task.done():
            task = asyncio.create_task(self._shared_pull(name, options, key))
            self._pulls[key] = task
        listeners = self._listeners.setdefault(key, [])
        listeners.append(queue)
        try:
            async for event in _coalesce(_drain(queue)):
                yield event
        except RegistryError as exc:
            if bundled is not None and exc.unreachable:
                raise CatalogError(
                    f"{exc.message}; the bundled copy of {name.display_short} is not"
                    " installed either"
                ) from exc
            raise
        finally:
            with contextlib.suppress(ValueError):
                listeners.remove(queue)

    async def _shared_pull(self, name: Name, options: PullOptions, key: _Key) -> None:
        """One download per model however many clients ask; every listener sees events."""

        def broadcast(item: Event | BaseException | None) -> None:
            for queue in list(self._listeners.get(key, [])):
                queue.put_nowait(item)

        try:
            await pull_model(self.store, name, broadcast, options)
        except CorralError as exc:
            broadcast(exc)
        except Exception as exc:
            logger.exception("pull of %s failed", name.display_short)
            broadcast(StoreError(f"pull failed: {exc}"))
        finally:
            broadcast(None)
            if self._pulls.get(key) is asyncio.current_task():
                del self._pulls[key]

    # ---- push -----------------------------------------------------------------------

    async def push(self, request: Request) -> Response:
        req = await parse_body(request, PushRequest)
        if not req.target:
            raise BadRequestError("model is required")
        if req.target.startswith("http://") and not req.insecure:
            raise BadRequestError("insecure protocol http")
        name = parse_name(req.target)
        found = await asyncio.to_thread(self.store.find, name)
        if found is None:
            raise NotFoundError(f"model '{req.target}' not found")
        queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()

        async def run() -> None:
            try:
                await push_model(self.store, found, queue.put_nowait, insecure=req.insecure)
            except BaseException as exc:
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(None)

        async def events() -> AsyncGenerator[Event, None]:
            task = asyncio.create_task(run())
            try:
                async for event in _coalesce(_drain(queue)):
                    yield event
            finally:
                if not task.done():
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await task

        return await respond(events(), stream=req.stream, merge=lambda items: items[-1])


# ---- helpers ----------------------------------------------------------------------------


async def _drain(
    queue: asyncio.Queue[Event | BaseException | None],
) -> AsyncIterator[Event]:
    while True:
        item = await queue.get()
        if item is None:
            return
        if isinstance(item, CorralError):
            raise item
        if isinstance(item, BaseException):
            raise StoreError(f"internal error: {item}") from item
        yield item


async def _coalesce(events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """At most one byte-progress event per status per 1% (and always the last one)."""
    last: dict[str, int] = {}
    async for event in events:
        total = event.get("total")
        status = event.get("status", "")
        if total and "completed" in event:
            percent = int(event["completed"] * 100 / total) if total else 100
            if last.get(status) == percent and event["completed"] < total:
                continue
            last[status] = percent
        yield event


def _bundled_installed(bundled: BundledModel) -> bool:
    try:
        bundled.paths()
    except CatalogError:
        return False
    return True
