"""A pull's resume state survives a full disk: fault injection on the writes a download
makes, the state file's two checksummed slots, and the leftovers an older version left."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from corral.errors import StoreError
from corral.registry import PullOptions, pull_model
from corral.registry.pull import _STATE_SLOT_BYTES, _Part, _StateFile, partial_files
from corral.store import MEDIA_TYPE_CONFIG, MEDIA_TYPE_MODEL, Layer, Manifest, ModelStore, Name
from tests.registry.hostile import Behaviour, hostile_registry

MiB = 1 << 20
_OPTIONS = PullOptions(
    insecure=True, min_part_bytes=MiB, max_parts=4, parallel_parts=1, max_tries=1
)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _registry(weights: bytes) -> Behaviour:
    config = b'{"model_format":"gguf"}'
    layer = Layer(MEDIA_TYPE_MODEL, _digest(weights), len(weights))
    manifest = Manifest(Layer(MEDIA_TYPE_CONFIG, _digest(config), len(config)), (layer,))
    return Behaviour(
        manifests={"test/m:1": manifest.to_json()},
        blobs={layer.digest: weights, _digest(config): config},
    )


class FullDisk:
    """``os.pwrite`` on a disk with ``free_bytes`` left, as ext4 or tmpfs behave.

    A write into blocks the file already has always succeeds; one that needs new blocks
    (past the end, or into a hole of a sparse file) uses up ``free_bytes``, then is cut
    short, then fails with ENOSPC. Allocation is read from the file itself (SEEK_HOLE).
    """

    def __init__(self, real: Callable[[int, Any, int], int], free_bytes: int) -> None:
        self.real = real
        self.free_bytes = free_bytes
        self.refused = 0

    def __call__(self, fd: int, data: Any, offset: int) -> int:
        length = len(data)
        if _allocated(fd, offset, length):
            return self.real(fd, data, offset)
        if self.free_bytes <= 0:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self.real(fd, memoryview(data)[: min(length, self.free_bytes)], offset)
        self.free_bytes -= written
        return written


def _allocated(fd: int, offset: int, length: int) -> bool:
    if offset + length > os.fstat(fd).st_size:
        return False
    try:
        return os.lseek(fd, offset, os.SEEK_HOLE) >= offset + length
    except OSError:
        return False


async def _pull(store: ModelStore, host: str, events: list[dict[str, Any]]) -> None:
    await pull_model(store, Name.parse(f"{host}/test/m:1"), events.append, _OPTIONS)


async def test_disk_full_mid_pull_keeps_a_resumable_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(tmp_path / "models")
    weights = os.urandom(3 * MiB + 12345)
    digest = _digest(weights)
    behaviour = _registry(weights)
    partial, state = partial_files(store, digest)
    with hostile_registry(behaviour) as host:
        # room for the state files, the config and 1.5 MiB of weights: the second 1 MiB
        # batch is cut short, then the disk is full
        disk = FullDisk(os.pwrite, free_bytes=2 * 16384 + 4096 + MiB + MiB // 2)
        monkeypatch.setattr(os, "pwrite", disk)
        with pytest.raises(StoreError, match="No space left on device"):
            await _pull(store, host, [])
        assert disk.refused >= 1
        monkeypatch.undo()

        assert partial.is_file() and state.is_file()
        assert not list(store.manifests_dir.rglob("m"))  # the store keeps its old state
        assert not store.has_blob(digest)
        assert [p.name for p in store.blobs_dir.iterdir() if p.name.endswith(".tmp")] == []
        saved = _StateFile(state, digest, len(weights)).load()
        assert saved is not None
        done = sum(p.done for p in saved)  # what was written whole before the disk filled
        assert MiB <= done <= MiB + MiB // 2

        behaviour.ranges.clear()
        events: list[dict[str, Any]] = []
        await _pull(store, host, events)
    assert events[-1] == {"status": "success"}
    first = next(e for e in events if e.get("digest") == digest)
    assert first["completed"] == done  # continued, not restarted
    assert (digest, "bytes=0-1048575") not in behaviour.ranges
    assert (digest, f"bytes={done}-{2 * MiB - 1}") in behaviour.ranges
    assert store.blob_path(digest).read_bytes() == weights
    assert not partial.exists() and not state.exists()


async def test_disk_full_before_the_first_byte_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(tmp_path / "models")
    weights = os.urandom(MiB)
    with hostile_registry(_registry(weights)) as host:
        monkeypatch.setattr(os, "pwrite", FullDisk(os.pwrite, free_bytes=0))
        with pytest.raises(StoreError, match="No space left on device"):
            await _pull(store, host, [])
        monkeypatch.undo()
        events: list[dict[str, Any]] = []
        await _pull(store, host, events)
    assert events[-1] == {"status": "success"}
    assert store.blob_path(_digest(weights)).read_bytes() == weights


async def test_stray_state_temp_files_are_removed(tmp_path: Path) -> None:
    """An older corral left ``...-partial.json.tmp`` when its state rewrite hit a full disk."""
    store = ModelStore(tmp_path / "models")
    weights = os.urandom(MiB // 2)
    _, state = partial_files(store, _digest(weights))
    store.blobs_dir.mkdir(parents=True)
    stray = state.with_name(state.name + ".tmp")
    stray.write_bytes(b"")
    state.write_text(json.dumps({"digest": _digest(weights), "parts": []}))  # the old format
    events: list[dict[str, Any]] = []
    with hostile_registry(_registry(weights)) as host:
        await _pull(store, host, events)
    assert events[-1] == {"status": "success"}
    assert sorted(p.name for p in store.blobs_dir.iterdir() if "partial" in p.name) == []


def _parts(done: int) -> list[_Part]:
    return [_Part(0, 100, done), _Part(100, 50, 0)]


def test_state_file_keeps_the_other_slot_when_one_is_torn(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    digest = "sha256:" + "ab" * 32
    state = _StateFile(path, digest, 150)
    state.open(_parts(0), fresh=True)
    size = path.stat().st_size
    state.save(_parts(10))  # slot 1
    state.save(_parts(20))  # slot 0
    state.close()
    assert path.stat().st_size == size  # saving never grows the file
    assert [p.done for p in _StateFile(path, digest, 150).load() or []] == [20, 0]

    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF  # a torn write in slot 0
    path.write_bytes(bytes(data))
    assert [p.done for p in _StateFile(path, digest, 150).load() or []] == [10, 0]

    half = len(data) // 2
    data[half + 40] ^= 0xFF  # and in slot 1
    path.write_bytes(bytes(data))
    assert _StateFile(path, digest, 150).load() is None


def _slot_with(path: Path, digest: str, parts: list[list[int]]) -> None:
    """Slot 0 of ``path`` replaced by a well-formed, correctly checksummed record."""
    record = json.dumps({"digest": digest, "size": 150, "seq": 9, "parts": parts}).encode()
    line = hashlib.sha256(record).hexdigest().encode() + b" " + record
    slot = line + b" " * (_STATE_SLOT_BYTES - 1 - len(line)) + b"\n"
    data = bytearray(path.read_bytes())
    data[:_STATE_SLOT_BYTES] = slot
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("parts", "valid"),
    [
        ([[0, 100, 7], [100, 50, 0]], True),
        ([[0, 100, 101], [100, 50, 0]], False),  # more done than the part holds
        ([[0, 100, 0], [90, 60, 0]], False),  # overlapping parts
        ([[0, 100, 0]], False),  # does not cover the blob
        ([[0, -5, 0], [-5, 155, 0]], False),
        ([[0, 150]], False),  # malformed
        ([], False),
    ],
)
def test_state_file_refuses_impossible_parts(
    tmp_path: Path, parts: list[list[int]], valid: bool
) -> None:
    path = tmp_path / "state.json"
    digest = "sha256:" + "cd" * 32
    state = _StateFile(path, digest, 150)
    state.open(_parts(0), fresh=True)
    state.close()
    _slot_with(path, digest, parts)
    loaded = _StateFile(path, digest, 150).load()
    assert (loaded is not None) is valid
    if loaded is not None:
        assert [p.done for p in loaded] == [7, 0]
    assert _StateFile(path, "sha256:" + "ef" * 32, 150).load() is None  # another blob's


def _namespace_with_tmpfs(tmp_path: Path) -> list[str]:
    """``unshare -Urm``, where mounting a tmpfs works; skip where it does not (CI)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(
        [unshare, "-Urm", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tmp_path)],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr!r}")
    return [unshare, "-Urm"]


def test_a_real_full_disk_keeps_the_resume_point(tmp_path: Path) -> None:
    """The kernel's ENOSPC on a tiny tmpfs (no injection): the retry continues."""
    prefix = _namespace_with_tmpfs(tmp_path)
    root = Path(__file__).resolve().parents[2]
    child = subprocess.run(
        [*prefix, sys.executable, "-m", "tests.registry.tmpfs_pull", str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert "No space left on device" in result["first"]
    assert result["partial"]
    assert [name for name in result["left"] if name.endswith(".tmp")] == []
    assert result["second"] == {"status": "success"}
    assert result["resumed_at"] > 0
    assert result["ranges"] and not any(r.startswith("bytes=0-") for r in result["ranges"])
    assert result["intact"]
