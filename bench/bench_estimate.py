"""Memory estimate against what a real runner takes, on the CPU.

For each bundled chat model at ``num_ctx`` 2048/8192 and ``num_parallel`` 1/4, start a real
runner process (``python -m corral.runner``, as the scheduler does), read its resident set
(``VmRSS``) after load, then fill one slot's context with a prompt of ``num_ctx - 64``
tokens plus a few generated ones (every weight, the KV cache and the largest compute graph
touched) and read ``VmHWM`` (the peak). Compare both with ``corral.estimate``'s
``ram_bytes``.

    .venv/bin/python bench/bench_estimate.py [--models smollm2:135m gemma3:270m]
        [--ctx 2048 8192] [--parallel 1 4] [--no-fill]

The models come from the store (``OLLAMA_MODELS``, default ``~/.ollama/models``): run
``corral pull smollm2:135m`` and ``corral pull gemma3:270m`` first.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

from corral.config import Settings
from corral.estimate import estimate
from corral.runner.client import RunnerClient
from corral.runner.settings import LoadSettings
from corral.store import ModelStore
from corral.store.manifest import MEDIA_TYPE_MODEL
from corral.store.names import Name

MiB = 1024 * 1024


def _status(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        match = re.match(r"(Vm\w+|Rss\w+):\s+(\d+) kB", line)
        if match:
            values[match.group(1)] = int(match.group(2)) * 1024
    return values


def _model_path(store: ModelStore, name: str) -> str:
    layer = store.get(Name.parse(name)).manifest.layer(MEDIA_TYPE_MODEL)
    if layer is None:
        raise SystemExit(f"{name} has no model layer")
    return str(store.blob_path(layer.digest))


async def _measure(path: str, num_ctx: int, parallel: int, fill: bool) -> tuple[int, int]:
    config = LoadSettings(model_path=path, num_ctx=num_ctx, num_parallel=parallel, num_thread=2)
    runner = await RunnerClient.start(config, load_timeout=300)
    try:
        await asyncio.sleep(0.5)
        after_load = _status(runner.pid)["VmRSS"]
        if fill:
            ids = await runner.tokenize(" the quick brown fox jumps over the lazy dog" * 2000)
            prompt = ids[: num_ctx - 64]
            payload = {"tokens": prompt, "options": {"num_predict": 8, "temperature": 0}}
            async for _event in runner.completion(payload):
                pass
        peak = _status(runner.pid)["VmHWM"]
        return after_load, peak
    finally:
        await runner.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2:135m", "gemma3:270m"])
    parser.add_argument("--ctx", nargs="+", type=int, default=[2048, 8192])
    parser.add_argument("--parallel", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--no-fill", action="store_true", help="measure after load only")
    args = parser.parse_args()
    settings = Settings.from_env()
    store = ModelStore(settings.models_dir)
    print(
        "| model | num_ctx | parallel | estimate MiB | RSS after load MiB | peak RSS MiB "
        "| error vs peak |"
    )
    print("|---|---|---|---|---|---|---|")
    errors: list[float] = []
    for name in args.models:
        path = _model_path(store, name)
        for num_ctx in args.ctx:
            for parallel in args.parallel:
                settings = LoadSettings(path, num_ctx=num_ctx, num_parallel=parallel)
                predicted = estimate(settings, ()).ram_bytes
                after_load, peak = await _measure(path, num_ctx, parallel, not args.no_fill)
                error = (predicted - peak) / peak
                errors.append(abs(error))
                print(
                    f"| {name} | {num_ctx} | {parallel} | {predicted / MiB:.0f} "
                    f"| {after_load / MiB:.0f} | {peak / MiB:.0f} | {error:+.1%} |",
                    flush=True,
                )
    print(f"\nlargest error {max(errors):.1%}, mean {sum(errors) / len(errors):.1%}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
