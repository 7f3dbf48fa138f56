"""The on-disk store: blobs, manifests, listing, delete/copy/prune, and hostile input."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.errors import (
    BadRequestError,
    InvalidDigestError,
    ModelNotFoundError,
    StoreError,
)
from corral.store.manifest import MEDIA_TYPE_CONFIG, MEDIA_TYPE_MODEL, Layer, Manifest
from corral.store.names import Name
from corral.store.store import ModelStore

OLD = time.time() - 2 * 3600


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _model(store: ModelStore, name: str, *blobs: bytes) -> Manifest:
    """Write a config blob plus one model layer per ``blobs`` and a manifest for ``name``."""
    config = store.write_blob_bytes(b'{"model_format":"gguf"}')
    layers = []
    for data in blobs:
        digest, size = store.write_blob_bytes(data)
        layers.append(Layer(MEDIA_TYPE_MODEL, digest, size))
    manifest = Manifest(Layer(MEDIA_TYPE_CONFIG, config.digest, config.size), tuple(layers))
    store.write_manifest(Name.parse(name), manifest)
    return manifest


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _age(path: Path) -> None:
    os.utime(path, (OLD, OLD))


def test_write_and_read_blob(store: ModelStore) -> None:
    data = b"x" * (3 << 20)
    info = store.write_blob([data[:100], data[100:]])
    assert info == (_digest(data), len(data))
    assert info.digest == _digest(data)
    path = store.blob_path(info.digest)
    assert path == store.root / "blobs" / ("sha256-" + info.digest[7:])
    assert path.read_bytes() == data
    assert store.has_blob(info.digest)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    # Writing the same content again keeps one file and leaves no temp behind.
    again = store.write_blob_bytes(data, expected_digest="sha256-" + info.digest[7:].upper())
    assert again == info
    assert _files(store.blobs_dir) == [path.name]


def test_import_file(store: ModelStore, tmp_path: Path) -> None:
    src = tmp_path / "model.gguf"
    src.write_bytes(b"GGUF" + bytes(range(256)) * 10_000)
    digest, size = store.import_file(src)
    assert size == src.stat().st_size
    assert store.blob_path(digest).read_bytes() == src.read_bytes()


def test_digest_mismatch_leaves_nothing(store: ModelStore) -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(BadRequestError) as info:
        store.write_blob_bytes(b"data", expected_digest=wrong)
    assert str(info.value) == (f'digest mismatch, expected "{wrong}", got "{_digest(b"data")}"')
    assert _files(store.blobs_dir) == []


def test_failing_source_leaves_nothing(store: ModelStore) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise ConnectionError("peer went away")

    with pytest.raises(ConnectionError):
        store.write_blob(chunks())
    assert _files(store.blobs_dir) == []


def test_hostile_digests(store: ModelStore) -> None:
    for bad in ("../../etc/passwd", "sha256:../x", "sha256-" + "a" * 63 + "/", ""):
        with pytest.raises(InvalidDigestError):
            store.blob_path(bad)
        with pytest.raises(InvalidDigestError):
            store.has_blob(bad)
    with pytest.raises(InvalidDigestError):
        store.write_blob_bytes(b"x", expected_digest="sha256:nope")
    assert _files(store.blobs_dir) == []


def test_manifest_round_trip(store: ModelStore) -> None:
    manifest = _model(store, "smollm2:135m", b"weights")
    name = Name.parse("smollm2:135m")
    path = store.manifest_path(name)
    assert path == store.root / "manifests/registry.ollama.ai/library/smollm2/135m"
    assert store.read_manifest(name) == manifest
    assert store.manifest_digest(name) == hashlib.sha256(path.read_bytes()).hexdigest()
    entry = store.get(name)
    assert entry.manifest == manifest
    assert entry.digest == store.manifest_digest(name)
    assert entry.size == manifest.total_size
    assert [p.name for p in path.parent.iterdir()] == ["135m"]  # no temp left


def test_missing_manifest(store: ModelStore) -> None:
    name = Name.parse("nothere")
    with pytest.raises(ModelNotFoundError, match="model 'nothere:latest' not found"):
        store.read_manifest(name)
    with pytest.raises(ModelNotFoundError):
        store.manifest_digest(name)
    with pytest.raises(ModelNotFoundError):
        store.delete(name)
    with pytest.raises(ModelNotFoundError):
        store.copy(name, Name.parse("other"))


def test_write_manifest_refuses_missing_blobs(store: ModelStore) -> None:
    present = store.write_blob_bytes(b"config")
    missing = Layer(MEDIA_TYPE_MODEL, "sha256:" + "f" * 64, 1)
    manifest = Manifest(Layer(MEDIA_TYPE_CONFIG, present.digest, present.size), (missing,))
    with pytest.raises(StoreError, match="missing"):
        store.write_manifest(Name.parse("m"), manifest)
    assert not store.manifest_path(Name.parse("m")).exists()
    no_config = Manifest(Layer(MEDIA_TYPE_CONFIG, "sha256:" + "e" * 64, 1), ())
    with pytest.raises(StoreError, match="missing"):
        store.write_manifest(Name.parse("m"), no_config)


def test_list_newest_first(store: ModelStore) -> None:
    _model(store, "a", b"1")
    _model(store, "me/b:2", b"2")
    _model(store, "localhost:5000/x/c:3", b"3")
    now = time.time()
    for i, raw in enumerate(["me/b:2", "a", "localhost:5000/x/c:3"]):
        t = now - 100 * i
        os.utime(store.manifest_path(Name.parse(raw)), (t, t))
    entries = store.list_models()
    assert [e.name.display_short for e in entries] == [
        "me/b:2",
        "a:latest",
        "localhost:5000/x/c:3",
    ]
    assert all(e.modified_at.tzinfo is not None for e in entries)
    assert entries[0].modified_at > entries[1].modified_at > entries[2].modified_at


def test_list_skips_junk(store: ModelStore, caplog: pytest.LogCaptureFixture) -> None:
    _model(store, "good", b"1")
    library = store.manifests_dir / "registry.ollama.ai" / "library"
    (library / "corrupt").mkdir()
    (library / "corrupt" / "latest").write_text("{not json")
    (library / "good" / ".tmp-abc").write_text("half")
    (library / "bad name").mkdir()
    (library / "bad name" / "latest").write_text("{}")
    (store.manifests_dir / "toplevel-file").write_text("x")
    deep = library / "good" / "deeper"
    deep.mkdir()
    (deep / "x").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="corral.store.store"):
        entries = store.list_models()
    assert [e.name.display_short for e in entries] == ["good:latest"]
    assert "corrupt" in caplog.text


def test_delete_keeps_shared_blobs(store: ModelStore) -> None:
    _model(store, "one", b"shared", b"only-one")
    _model(store, "two", b"shared", b"only-two")
    store.delete(Name.parse("one"))
    assert not store.has_blob(_digest(b"only-one"))
    assert store.has_blob(_digest(b"shared"))
    assert store.has_blob(_digest(b"only-two"))
    assert store.has_blob(_digest(b'{"model_format":"gguf"}'))  # config is shared too
    assert not (store.manifests_dir / "registry.ollama.ai/library/one").exists()
    assert [e.name.model for e in store.list_models()] == ["two"]
    store.delete(Name.parse("two"))
    assert _files(store.blobs_dir) == []
    assert _files(store.manifests_dir) == []
    assert store.manifests_dir.exists()


def test_delete_spares_blobs_named_by_corrupt_manifest(store: ModelStore) -> None:
    _model(store, "one", b"weights")
    _model(store, "two", b"weights")
    path = store.manifest_path(Name.parse("two"))
    path.write_bytes(path.read_bytes()[:-5])  # truncated: no longer parses
    store.delete(Name.parse("one"))
    assert store.has_blob(_digest(b"weights"))


def test_copy(store: ModelStore) -> None:
    _model(store, "src:1", b"w")
    src, dst = Name.parse("src:1"), Name.parse("me/dst:2")
    store.copy(src, dst)
    assert store.manifest_path(dst).read_bytes() == store.manifest_path(src).read_bytes()
    assert store.manifest_digest(dst) == store.manifest_digest(src)
    store.delete(src)
    assert store.has_blob(_digest(b"w"))
    assert store.read_manifest(dst).layers[0].digest == _digest(b"w")


def test_find_case_insensitive(store: ModelStore) -> None:
    _model(store, "Me/TinyLlama:Q4", b"w")
    assert store.find(Name.parse("me/tinyllama:q4")) == Name.parse("Me/TinyLlama:Q4")
    assert store.find(Name.parse("ME/TINYLLAMA:Q4")) == Name.parse("Me/TinyLlama:Q4")
    assert store.find(Name.parse("Me/TinyLlama:Q4")) == Name.parse("Me/TinyLlama:Q4")
    assert store.find(Name.parse("me/tinyllama:q5")) is None
    assert store.find(Name.parse("other")) is None


def test_prune(store: ModelStore) -> None:
    _model(store, "kept", b"in-use")
    old_unreferenced = store.write_blob_bytes(b"old orphan")
    fresh_unreferenced = store.write_blob_bytes(b"fresh orphan")
    _age(store.blob_path(old_unreferenced.digest))
    stale_tmp = store.blobs_dir / ".tmp-stale"
    stale_tmp.write_bytes(b"x")
    _age(stale_tmp)
    fresh_tmp = store.blobs_dir / ".tmp-fresh"
    fresh_tmp.write_bytes(b"x")
    partial = store.blobs_dir / ("sha256-" + "a" * 64 + "-partial")
    partial.write_bytes(b"x")
    _age(partial)
    fresh_path = store.blob_path(fresh_unreferenced.digest)
    for blob in store.blobs_dir.iterdir():
        if blob.name.startswith("sha256-") and blob not in (partial, fresh_path):
            _age(blob)  # in-use blobs must survive even when old
    empty = store.manifests_dir / "registry.ollama.ai" / "gone" / "model"
    empty.mkdir(parents=True)

    assert store.prune() == 3
    assert not store.has_blob(old_unreferenced.digest)
    assert store.has_blob(fresh_unreferenced.digest)
    assert store.has_blob(_digest(b"in-use"))
    assert store.read_manifest(Name.parse("kept")).layers
    assert not stale_tmp.exists()
    assert fresh_tmp.exists()
    assert not partial.exists()
    assert not (store.manifests_dir / "registry.ollama.ai" / "gone").exists()
    assert store.prune() == 0


def test_prune_with_zero_grace(store: ModelStore) -> None:
    store.write_blob_bytes(b"orphan")
    assert store.prune(grace_seconds=-1) == 1
    assert _files(store.blobs_dir) == []


def test_rewriting_existing_blob_refreshes_mtime(store: ModelStore) -> None:
    info = store.write_blob_bytes(b"reused")
    _age(store.blob_path(info.digest))
    store.write_blob_bytes(b"reused")
    assert store.prune() == 0
    assert store.has_blob(info.digest)


def test_empty_store(store: ModelStore) -> None:
    assert store.list_models() == []
    assert store.prune() == 0
    assert store.find(Name.parse("x")) is None
    assert not store.has_blob("sha256:" + "0" * 64)


def test_concurrent_delete_and_write(store: ModelStore) -> None:
    """Writes and deletes sharing a blob never leave a manifest that names a missing blob."""
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(20):
                name = f"m{i}:{j}"
                try:
                    _model(store, name, b"shared")
                except StoreError:
                    continue  # the shared blob was deleted between write_blob and manifest
                store.delete(Name.parse(name))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for entry in store.list_models():
        for digest in entry.manifest.digests:
            assert store.has_blob(digest)


def _pinned_model(store: ModelStore, name: str, data: bytes) -> None:
    """A model written the way a pull or create does: every blob pinned as it lands."""
    with store.pins() as pins:
        config = store.write_blob_bytes(b'{"model_format":"gguf"}', pins=pins)
        digest, size = store.write_blob_bytes(data, pins=pins)
        manifest = Manifest(
            Layer(MEDIA_TYPE_CONFIG, config.digest, config.size),
            (Layer(MEDIA_TYPE_MODEL, digest, size),),
        )
        store.write_manifest(Name.parse(name), manifest)


def test_pinned_blobs_survive_delete_and_prune(store: ModelStore) -> None:
    manifest = _model(store, "one", b"shared", b"only-one")
    with store.pins() as pins:
        pins.add([_digest(b"shared"), manifest.config.digest])
        assert pins.digests == {_digest(b"shared"), manifest.config.digest}
        store.delete(Name.parse("one"))
        assert store.has_blob(_digest(b"shared"))
        assert store.has_blob(manifest.config.digest)
        assert not store.has_blob(_digest(b"only-one"))
        assert store.prune(grace_seconds=-1) == 0
    assert store.prune(grace_seconds=-1) == 2  # released: nothing spares them now
    assert _files(store.blobs_dir) == []


def test_pins_are_counted_per_holder(store: ModelStore) -> None:
    digest = store.write_blob_bytes(b"orphan").digest
    first, second = store.pins(), store.pins()
    first.add([digest])
    second.add([digest, digest])
    first.release()
    first.release()  # idempotent: must not drop the second holder's pin
    assert store.prune(grace_seconds=-1) == 0
    second.release()
    assert store.prune(grace_seconds=-1) == 1


def test_pins_refuse_bad_digests_and_use_after_release(store: ModelStore) -> None:
    pins = store.pins()
    with pytest.raises(InvalidDigestError):
        pins.add(["sha256:../../etc/passwd"])
    pins.release()
    with pytest.raises(StoreError):
        pins.add(["sha256:" + "a" * 64])


def test_write_blob_pins_what_it_stores(store: ModelStore) -> None:
    with store.pins() as pins:
        info = store.write_blob_bytes(b"text layer", pins=pins)
        assert pins.digests == {info.digest}
        assert store.prune(grace_seconds=-1) == 0
    assert store.prune(grace_seconds=-1) == 1


def test_pinned_writers_never_lose_a_blob_to_a_delete(store: ModelStore) -> None:
    """Unlike unpinned writers (above), a pinned writer's manifest write never fails."""
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(20):
                name = f"p{i}:{j}"
                _pinned_model(store, name, b"shared")
                store.delete(Name.parse(name))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _files(store.blobs_dir) == []  # every pin was released, so the last delete cleaned up
