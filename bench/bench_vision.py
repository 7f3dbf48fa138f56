"""What an image costs: its encode time, and how long it holds up the other streams.

A runner (``python -m corral.runner``) is started with the tiny random Llama of the tests and
a random projector of a real vision encoder's geometry (by default 224 px, 14 px patches:
256 image tokens, a 12-block ViT of width 384 -- the size of a small SigLIP/CLIP; the weights
are random, the arithmetic is the same). Measured:

- **encode**: a request with one new picture against the same request with a picture
  already in the prefix cache (``prompt_eval_duration``): the time the projector and the
  image's decode take, per image;
- **stall**: one stream generates text while image requests arrive; the largest gap between
  two of its tokens, against the same stream alone (the engine encodes an image between two
  decode steps: the stream waits for one encode at most, never for the whole image request);
- **memory**: the runner's peak resident set (``VmHWM``) after the images, with and without
  the projector, against ``corral.estimate``'s ``ram_bytes`` for the same settings.

Usage: ``.venv/bin/python bench/bench_vision.py [--images 6] [--size 224] [--layers 12]``
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corral.estimate import estimate  # noqa: E402
from corral.runner.settings import LoadSettings  # noqa: E402
from tests.runner.tiny_vision import (  # noqa: E402
    png_bytes,
    write_tiny_projector,
    write_tiny_vision_pair,
)

MiB = 1024 * 1024
PROMPT = "<|im_start|>user\n[img-0] what is this?<|im_end|>\n<|im_start|>assistant\n"


CONTEXT, SLOTS = 1024, 2


def settings(model: Path, projector: Path | None) -> LoadSettings:
    return LoadSettings(
        model_path=str(model),
        num_ctx=CONTEXT,
        num_parallel=SLOTS,
        projector=str(projector) if projector else None,
    )


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def start_runner(model: Path, projector: Path | None) -> tuple[subprocess.Popen[bytes], str]:
    argv = [sys.executable, "-m", "corral.runner", *settings(model, projector).argv()]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    url = f"http://127.0.0.1:{json.loads(proc.stdout.readline())['port']}"
    for _ in range(600):
        if httpx.get(url + "/health").json()["status"] == "ok":
            return proc, url
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("runner did not load")


def complete(url: str, image: bytes, predict: int = 4) -> dict[str, Any]:
    body = {
        "prompt": PROMPT,
        "images": [base64.b64encode(image).decode()],
        "options": {"temperature": 0, "num_predict": predict},
    }
    response = httpx.post(url + "/completion", json=body, timeout=600)
    response.raise_for_status()
    last: dict[str, Any] = json.loads(response.text.splitlines()[-1])
    return last


def encode_times(url: str, count: int, size: int) -> tuple[list[float], list[float]]:
    """Prompt time of new pictures, and of the same pictures again (served from the cache)."""
    fresh, cached = [], []
    for seed in range(count):
        image = png_bytes(size, size, seed=100 + seed)
        fresh.append(complete(url, image)["prompt_eval_duration"] / 1e6)
        cached.append(complete(url, image)["prompt_eval_duration"] / 1e6)
    return fresh, cached


def token_gaps(url: str, predict: int) -> list[float]:
    """Gaps (ms) between the tokens of one text-only stream."""
    body = {"prompt": "hello world, hello", "options": {"temperature": 0, "num_predict": predict}}
    stamps: list[float] = []
    with httpx.stream("POST", url + "/completion", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if line and "content" in json.loads(line):
                stamps.append(time.perf_counter())
    return [(b - a) * 1000 for a, b in itertools.pairwise(stamps)]


def stall(url: str, images: int, size: int, predict: int) -> tuple[list[float], list[float]]:
    """Token gaps of a stream alone, and while ``images`` image requests arrive."""
    alone = token_gaps(url, predict)
    done = threading.Event()

    def send_images() -> None:
        for seed in range(images):
            if done.is_set():
                return
            complete(url, png_bytes(size, size, seed=500 + seed), predict=1)

    sender = threading.Thread(target=send_images)
    sender.start()
    busy = token_gaps(url, predict)
    done.set()
    sender.join()
    return alone, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", type=int, default=224, help="projector image side (px)")
    parser.add_argument("--patch", type=int, default=14)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--predict", type=int, default=300, help="tokens of the text stream")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, _ = write_tiny_vision_pair(folder)
        projector = write_tiny_projector(
            folder / "big-projector.gguf",
            image_size=args.size,
            patch_size=args.patch,
            vit={
                "hidden": args.width,
                "heads": max(args.width // 64, 1),
                "ffn": 4 * args.width,
                "layers": args.layers,
            },
        )
        tokens = (args.size // args.patch) ** 2
        print(
            f"projector: {args.size} px, patch {args.patch} ({tokens} image tokens),"
            f" ViT width {args.width} x {args.layers} blocks,"
            f" {projector.stat().st_size / 2**20:.1f} MiB"
        )
        plain, plain_url = start_runner(model, None)
        try:
            token_gaps(plain_url, 8)
            without = peak_rss(plain.pid)
        finally:
            plain.kill()
            plain.wait()
        proc, url = start_runner(model, projector)
        try:
            complete(url, png_bytes(args.size, args.size, seed=1))  # first-use allocations
            fresh, cached = encode_times(url, args.images, args.size)
            print(
                f"new picture: prompt {statistics.median(fresh):.1f} ms (median of"
                f" {len(fresh)}); same picture again (cache): {statistics.median(cached):.1f} ms"
            )
            alone, busy = stall(url, args.images, args.size, args.predict)
            print(
                f"text stream alone: median gap {statistics.median(alone):.2f} ms,"
                f" max {max(alone):.1f} ms"
            )
            print(
                f"text stream with image requests arriving: median gap"
                f" {statistics.median(busy):.2f} ms, max {max(busy):.1f} ms"
            )
            with_projector = peak_rss(proc.pid)
            est_plain = estimate(settings(model, None), ()).ram_bytes
            est_vision = estimate(settings(model, projector), ()).ram_bytes
            print(
                f"peak RSS: {without / MiB:.0f} MiB without the projector, estimate"
                f" {est_plain / MiB:.0f}; {with_projector / MiB:.0f} MiB with it, estimate"
                f" {est_vision / MiB:.0f} (projector: measured"
                f" {(with_projector - without) / MiB:.0f} MiB, estimated"
                f" {(est_vision - est_plain) / MiB:.0f} MiB)"
            )
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
