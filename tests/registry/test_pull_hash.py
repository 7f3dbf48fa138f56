"""The blob hash computed while parallel parts arrive, in any order, resumed or not."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.registry.pull import _contiguous_end, _InOrderHash, _Part

SIZE = 10_000


def _parts(done: list[int]) -> list[_Part]:
    size = SIZE // len(done)
    return [_Part(i * size, size, d) for i, d in enumerate(done)]


@pytest.fixture
def blob(tmp_path: Path) -> Iterator[tuple[bytes, int]]:
    data = random.Random(7).randbytes(SIZE)
    fd = os.open(tmp_path / "partial", os.O_RDWR | os.O_CREAT)
    os.ftruncate(fd, SIZE)
    yield data, fd
    os.close(fd)


@pytest.mark.parametrize("seed", range(5))
def test_parts_arriving_in_any_order_hash_to_the_blob(blob: tuple[bytes, int], seed: int) -> None:
    data, fd = blob
    parts = _parts([0, 0, 0, 0])
    writes = []  # (part, length) in a shuffled order that keeps each part's bytes in order
    for part in parts:
        writes += [part] * 10
    random.Random(seed).shuffle(writes)
    digest = _InOrderHash(SIZE)
    for part in writes:
        offset = part.start + part.done
        chunk = data[offset : offset + 250]
        os.pwrite(fd, chunk, offset)
        digest.feed(fd, chunk, offset, parts)
        part.done += len(chunk)
    assert digest._hashed == SIZE  # nothing left for the check after the last byte
    assert digest.finish(fd) == "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_resumed_download_hashes_the_bytes_of_the_earlier_try(blob: tuple[bytes, int]) -> None:
    data, fd = blob
    os.pwrite(fd, data, 0)
    parts = _parts([2500, 1000, 2500, 0])  # what the state file said
    digest = _InOrderHash(SIZE)
    for part in parts:
        while part.done < part.size:
            offset = part.start + part.done
            digest.feed(fd, data[offset : offset + 500], offset, parts)
            part.done += 500
    assert digest.finish(fd) == "sha256:" + hashlib.sha256(data).hexdigest()


def test_bytes_that_differ_from_the_digest_are_caught(blob: tuple[bytes, int]) -> None:
    data, fd = blob
    os.pwrite(fd, data, 0)
    digest = _InOrderHash(SIZE)
    digest.feed(fd, b"x" * 100, 0, _parts([100, 0]))  # what came over the wire, not the file
    assert digest.finish(fd) != "sha256:" + hashlib.sha256(data).hexdigest()


def test_contiguous_end_stops_at_the_first_gap() -> None:
    parts = _parts([2500, 300, 2500, 2500])
    assert _contiguous_end(parts, 0, 0, -1) == 2800
    # a write just made in part 1 that its done does not show yet
    assert _contiguous_end(parts, 0, 200, 2800) == 3000
    assert _contiguous_end(_parts([2500, 2500, 2500, 2500]), 0, 0, -1) == SIZE
    assert _contiguous_end(_parts([0, 2500]), 0, 0, -1) == 0


@pytest.mark.parametrize("seed", range(3))
def test_a_following_hash_thread_takes_offered_buffers_and_reads_back_the_rest(
    blob: tuple[bytes, int], seed: int
) -> None:
    data, fd = blob
    parts = _parts([0, 0, 0, 0])
    writes = []
    for part in parts:
        writes += [part] * 10
    random.Random(seed).shuffle(writes)
    digest = _InOrderHash(SIZE)
    digest.follow(fd, parts)
    taken = [threading.Event() for _ in writes]
    for part, event in zip(writes, taken, strict=True):
        offset = part.start + part.done
        chunk = bytearray(data[offset : offset + 250])
        digest.offer(memoryview(chunk), offset, event)  # as the fast path: before the write
        os.pwrite(fd, chunk, offset)
        part.done += len(chunk)
        digest.notify()
    assert digest.finish(fd) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert all(event.is_set() for event in taken)  # no writer is left waiting on a buffer
