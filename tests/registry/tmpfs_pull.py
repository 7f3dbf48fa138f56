"""A pull that fills a real (tiny tmpfs) disk, then resumes: run inside ``unshare -Urm``.

``python -m tests.registry.tmpfs_pull DIR`` mounts an 8 MiB tmpfs on DIR (possible only in
a private user and mount namespace), serves a 6 MiB blob from an in-process registry, lets
the pull start, fills the disk behind its back, lets the blob flow (ENOSPC from the kernel),
frees the disk and pulls again. Prints one JSON line for the test to judge.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from corral.errors import CorralError
from corral.registry import PullOptions, pull_model
from corral.registry.pull import partial_files
from corral.store import ModelStore, Name
from tests.registry.hostile import hostile_registry
from tests.registry.test_pull_state import _digest, _registry

MiB = 1 << 20


async def _run(root: Path) -> dict[str, Any]:
    store = ModelStore(root / "models")
    weights = os.urandom(6 * MiB)
    digest = _digest(weights)
    behaviour = _registry(weights)
    behaviour.gate = threading.Event()
    options = PullOptions(insecure=True, min_part_bytes=MiB, max_parts=8, parallel_parts=1)
    result: dict[str, Any] = {}
    with hostile_registry(behaviour) as host:
        name = Name.parse(f"{host}/test/m:1")
        task = asyncio.create_task(pull_model(store, name, lambda _e: None, options))
        deadline = time.monotonic() + 30
        while not any(d == digest for d, _ in behaviour.ranges):  # the pull is under way
            assert time.monotonic() < deadline, "the pull never asked for the blob"
            await asyncio.sleep(0.01)
        filler = root / "filler"
        filler.write_bytes(b"\0" * (5 * MiB))
        behaviour.gate.set()
        try:
            await task
            result["first"] = "success"
        except CorralError as exc:
            result["first"] = exc.message
        partial, state = partial_files(store, digest)
        result["left"] = sorted(p.name for p in store.blobs_dir.iterdir())
        result["partial"] = partial.is_file() and state.is_file()
        filler.unlink()
        behaviour.ranges.clear()
        events: list[dict[str, Any]] = []
        await pull_model(store, name, events.append, options)
        result["second"] = events[-1]
        result["resumed_at"] = next(e for e in events if e.get("digest") == digest)["completed"]
        result["ranges"] = [r for d, r in behaviour.ranges if d == digest]
        result["intact"] = store.blob_path(digest).read_bytes() == weights
    return result


def main(directory: str) -> None:
    root = Path(directory)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(root)], check=True)
    try:
        sys.stdout.write(json.dumps(asyncio.run(_run(root))) + "\n")
    finally:
        subprocess.run(["umount", str(root)], check=False)


if __name__ == "__main__":
    main(sys.argv[1])
