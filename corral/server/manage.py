"""Model management: pull, push, create and the blob endpoints, as the app wires them.

One entry point over the modules that do the work:

- :mod:`corral.server.blobs`: ``HEAD``/``POST /api/blobs/{digest}``
- :mod:`corral.server.transfer`: ``/api/pull`` and ``/api/push``, relays from the registry
  client to NDJSON, one download per model however many clients ask
- :mod:`corral.server.create_plan` and :mod:`corral.server.create`: ``/api/create``, checked
  before the first byte, then built with every blob it uses pinned

Each handler checks everything it can *before* the first byte (bad name, bad digest, a
Modelfile that does not parse, a file that is not GGUF) so those errors get their real
status (400/404); what can only fail later (a registry, the quantizer, a full disk) arrives
as a final ``{"error": ...}`` line of the NDJSON stream. The wire types live in
:mod:`corral.api.types`.
"""

from __future__ import annotations

from collections.abc import Callable

from corral.config import Settings
from corral.server.blobs import Blobs
from corral.server.create import Create
from corral.server.models import ModelCatalog
from corral.server.transfer import Transfers
from corral.store import ModelStore

__all__ = ["Manage"]


class Manage:
    """The model management handlers over one store (pull, push, create, blobs)."""

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        models: ModelCatalog,
        *,
        bf16: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        blobs = Blobs(store)
        transfers = Transfers(store, bf16=bf16)
        self.head_blob = blobs.head_blob
        self.post_blob = blobs.post_blob
        self.pull = transfers.pull
        self.push = transfers.push
        self.create = Create(store, models, transfers).create
