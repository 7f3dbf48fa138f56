"""Which GGUF of a create is the projector (``corral/server/create_vision.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import BadRequestError
from corral.server.create_vision import is_projector, split_file_projectors, split_from_projectors
from corral.store import MEDIA_TYPE_PROJECTOR, ModelStore
from tests.registry.tiny import write_tiny_gguf
from tests.runner.tiny_vision import write_tiny_projector


@pytest.fixture
def files(tmp_path: Path) -> tuple[ModelStore, Path, Path]:
    store = ModelStore(tmp_path / "models")
    model = write_tiny_gguf(tmp_path / "model.gguf")
    projector = write_tiny_projector(tmp_path / "mmproj.gguf")
    return store, model, projector


def _no_blob(_raw: str) -> str | None:
    return None


def _anywhere(_raw: str) -> None:
    return None


def test_a_clip_gguf_is_a_projector(files: tuple[ModelStore, Path, Path]) -> None:
    _, model, projector = files
    assert is_projector(projector) and not is_projector(model)
    assert not is_projector(model.parent / "missing.gguf")


def test_files_give_up_their_projector(files: tuple[ModelStore, Path, Path]) -> None:
    store, model, projector = files
    digests = {
        "m.gguf": store.import_file(model).digest,
        "p.gguf": store.import_file(projector).digest,
    }
    layers = split_file_projectors(store, digests)
    assert [layer.media_type for layer in layers] == [MEDIA_TYPE_PROJECTOR]
    assert list(digests) == ["m.gguf"]


def test_two_froms_in_either_order(files: tuple[ModelStore, Path, Path]) -> None:
    store, model, projector = files
    for froms in ((str(model), str(projector)), (str(projector), str(model))):
        source, layers = split_from_projectors(
            store, froms, blob_reference=_no_blob, check_server_path=_anywhere
        )
        assert source == str(model)
        assert len(layers) == 1 and layers[0].size == projector.stat().st_size
    source, layers = split_from_projectors(
        store, ("llava", str(projector)), blob_reference=_no_blob, check_server_path=_anywhere
    )
    assert source == "llava" and len(layers) == 1


def test_one_from_is_never_looked_at(files: tuple[ModelStore, Path, Path]) -> None:
    store, _, projector = files
    assert split_from_projectors(
        store, (str(projector),), blob_reference=_no_blob, check_server_path=_anywhere
    ) == (str(projector), [])


@pytest.mark.parametrize(
    ("which", "message"), [("projectors", "no model"), ("models", "more than one FROM")]
)
def test_bad_pairs_are_400s(files: tuple[ModelStore, Path, Path], which: str, message: str) -> None:
    store, model, projector = files
    froms = (str(projector), str(projector)) if which == "projectors" else (str(model), "other")
    with pytest.raises(BadRequestError, match=message):
        split_from_projectors(store, froms, blob_reference=_no_blob, check_server_path=_anywhere)


def test_remote_clients_cannot_name_server_paths(files: tuple[ModelStore, Path, Path]) -> None:
    store, model, projector = files

    def refuse(raw: str) -> None:
        raise BadRequestError(f"no server paths: {raw}")

    with pytest.raises(BadRequestError, match="no server paths"):
        split_from_projectors(
            store, (str(model), str(projector)), blob_reference=_no_blob, check_server_path=refuse
        )
