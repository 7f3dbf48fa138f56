"""Projectors in a create: which of its GGUFs is the vision projector.

A vision model is created as Ollama creates one: a Modelfile with two ``FROM`` lines (the
language model and the projector, in either order), or a JSON create whose ``files`` hold
both GGUFs. A GGUF whose ``general.architecture`` is ``clip`` becomes a projector layer
(``application/vnd.ollama.image.projector``); the other one is the model. A projector alone,
or a projector for a model that is not there, is a 400.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from corral.errors import BadRequestError, GGUFError
from corral.gguf import read_gguf
from corral.store import MEDIA_TYPE_PROJECTOR, Layer, ModelStore, parse_digest

__all__ = ["is_projector", "split_file_projectors", "split_from_projectors"]

#: the architecture llama.cpp's multimodal projectors declare
PROJECTOR_ARCHITECTURE = "clip"


def is_projector(path: Path) -> bool:
    """Whether ``path`` is a projector GGUF (anything unreadable is not: the model checks
    that follow then say what is wrong with it)."""
    try:
        return read_gguf(path).architecture == PROJECTOR_ARCHITECTURE
    except (GGUFError, OSError):
        return False


def split_file_projectors(store: ModelStore, files: dict[str, str]) -> list[Layer]:
    """Take the projector GGUFs out of a create's ``files`` (``name -> digest``) and return
    their layers; the other files stay for the model's own checks."""
    layers: list[Layer] = []
    for filename in list(files):
        try:
            digest = parse_digest(files[filename])
        except Exception:
            continue  # the model's checks name a bad digest
        path = store.blob_path(digest)
        if path.is_file() and is_projector(path):
            layers.append(Layer(MEDIA_TYPE_PROJECTOR, digest, path.stat().st_size))
            del files[filename]
    return layers


def split_from_projectors(
    store: ModelStore,
    froms: tuple[str, ...],
    *,
    blob_reference: Callable[[str], str | None],
    check_server_path: Callable[[str], None],
) -> tuple[str, list[Layer]]:
    """The FROM that names the model, and the layers of the FROMs that name projectors.

    ``blob_reference`` turns ``@sha256:...``/blob paths into a digest (None otherwise);
    ``check_server_path`` refuses a server path from a remote client. With one FROM nothing
    is looked at: it is the model, whatever it is.
    """
    if len(froms) <= 1:
        return (froms[0] if froms else ""), []
    models: list[str] = []
    layers: list[Layer] = []
    for raw in froms:
        source = raw.strip()
        path = _file_of(store, source, blob_reference, check_server_path)
        if path is None or not is_projector(path):
            models.append(source)
            continue
        digest = blob_reference(source)
        if digest is None:  # a server-side file: imported like an adapter
            digest = store.import_file(path).digest
        layers.append(Layer(MEDIA_TYPE_PROJECTOR, digest, path.stat().st_size))
    if not models:
        raise BadRequestError("no model to go with the projector: add a FROM for the model")
    if len(models) > 1:
        raise BadRequestError(
            "more than one FROM names a model; a second FROM may only name a projector"
        )
    return models[0], layers


def _file_of(
    store: ModelStore,
    source: str,
    blob_reference: Callable[[str], str | None],
    check_server_path: Callable[[str], None],
) -> Path | None:
    """The file a FROM names (a blob, or a server path), or None for a model name."""
    digest = blob_reference(source)
    if digest is not None:
        path = store.blob_path(digest)
        return path if path.is_file() else None
    path = Path(os.path.expanduser(source))
    if not path.is_absolute():
        return None
    check_server_path(source)  # before the path is looked at
    return path if path.is_file() else None
