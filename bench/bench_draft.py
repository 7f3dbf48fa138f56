"""Speculative decoding benchmark: decode tokens/s with and without a draft model.

Each bundled chat model drafts for itself (smollm2:135m for smollm2:135m, gemma3:270m for
gemma3:270m): the target agrees with (nearly) every guess, so this shows the best acceptance
there can be and what the mechanism costs; how many guesses are made at all is the draft's
confidence cut (``DRAFT_P_MIN``). The runner engine runs in this process (the same code
a runner process runs), greedy, one stream and then ``--parallel`` streams at once; each
configuration is loaded once (both at once), warmed up with one request, then timed
``--repeats`` times, the runs with and without the draft taking turns (a change in the
machine's load falls on both); the figures are medians.

Columns: ``draft`` (none, or the draft's ``draft_num_predict``), ``streams``, ``tok/s``
(generated tokens over the wall time of the whole batch of requests), ``accept`` (guesses
the target kept / guesses made), ``tok/step`` (tokens a generating slot gains per target
decode: 1 without a draft).

What to expect on a CPU: a model drafting for itself cannot be faster. Each step runs the
draft once per guessed position (as costly as the target, it is the target) and then the
target over 1 + guesses positions, which on a CPU costs nearly as much per position as
separate decodes: the matrix products are memory-bound only for one row; a few rows are
already compute-bound on 2 cores. Speculation pays where a target step is memory-bound (a
big model, a GPU) and the draft is much smaller.

Usage: .venv/bin/python bench/bench_draft.py [--models smollm2:135m gemma3:270m]
       [--repeats 3] [--tokens 96] [--parallel 2] [--draft-num-predict 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corral.catalog import BUNDLED, find_bundled
from corral.runner.engine import Engine, Task
from corral.runner.settings import LoadSettings
from corral.store import Name

PROMPTS = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a bicycle stays upright, step by step.",
    "Describe the water cycle to a ten-year-old.",
    "List the planets of the solar system and one fact about each.",
)
TEMPLATES = {
    "smollm2:135m": "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
    "gemma3:270m": "<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n",
}


def _model_file(name: str, folder: Path) -> Path:
    """The bundled model's GGUF (gemma3's parts joined into ``folder``)."""
    bundled = find_bundled(Name.parse(name))
    if bundled is None:
        raise SystemExit(f"{name} is not a bundled model: {[m.names[0] for m in BUNDLED]}")
    parts = bundled.paths()
    if len(parts) == 1:
        return parts[0]
    path = folder / (name.replace(":", "-") + ".gguf")
    with path.open("wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    return path


def _batch(engine: Engine, template: str, streams: int, tokens: int, draft_n: int) -> float:
    """Generate ``tokens`` on each of ``streams`` prompts at once; tokens/s over the wall."""
    done = [threading.Event() for _ in range(streams)]
    counts = [0] * streams

    def emitter(index: int) -> Any:
        def emit(event: dict[str, Any]) -> None:
            if "done" in event or "error" in event:
                if "error" in event:
                    print("error:", event["error"], file=sys.stderr)
                counts[index] = int(event.get("eval_count", 0))
                done[index].set()

        return emit

    options = {"temperature": 0, "num_predict": tokens, "draft_num_predict": draft_n}
    start = time.perf_counter()
    for index in range(streams):
        prompt = template.format(PROMPTS[index % len(PROMPTS)])
        engine.submit(Task(tokens=engine.tokenize(prompt), options=options, emit=emitter(index)))
    for event in done:
        event.wait()
    return sum(counts) / (time.perf_counter() - start)


def _engine(path: Path, draft: bool, args: argparse.Namespace) -> Engine:
    engine = Engine(
        LoadSettings(
            model_path=str(path),
            num_ctx=1024,
            num_parallel=max(args.parallel, 1),
            draft_path=str(path) if draft else None,
            # take turns per decode step with any runner on this machine, as runners do
            cpu_lock_path=str(Path(tempfile.gettempdir()) / "corral-cpu.lock"),
        )
    )
    engine.load()
    engine.start()
    return engine


def _measure(path: Path, template: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Both engines loaded at once and their runs interleaved, so that a change in the
    machine's load during the benchmark falls on both alike."""
    engines = {False: _engine(path, False, args), True: _engine(path, True, args)}
    rows = []
    try:
        for streams in sorted({1, args.parallel}):
            rates: dict[bool, list[float]] = {False: [], True: []}
            counters = {}
            for draft, engine in engines.items():
                _batch(engine, template, streams, 16, args.draft_num_predict if draft else 0)
                drafter = engine._drafter
                counters[draft] = (drafter.guessed, drafter.accepted) if drafter else (0, 0)
            for _ in range(args.repeats):
                for draft, engine in engines.items():
                    draft_n = args.draft_num_predict if draft else 0
                    rates[draft].append(_batch(engine, template, streams, args.tokens, draft_n))
            for draft, engine in engines.items():
                drafter = engine._drafter
                guessed = (drafter.guessed - counters[draft][0]) if drafter else 0
                accepted = (drafter.accepted - counters[draft][1]) if drafter else 0
                tokens = args.repeats * streams * args.tokens
                rows.append(
                    {
                        "draft": args.draft_num_predict if draft else "none",
                        "streams": streams,
                        "tok/s": statistics.median(rates[draft]),
                        "runs": rates[draft],
                        "accept": f"{accepted}/{guessed}" if draft else "-",
                        # each target step gains a slot its accepted guesses and one token
                        "tok/step": tokens / max(tokens - accepted, 1),
                    }
                )
    finally:
        for engine in engines.values():
            engine.stop()
            engine.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2:135m", "gemma3:270m"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--draft-num-predict", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            path = _model_file(name, Path(tmp))
            print(f"\n{name} (drafting for itself), {args.tokens} tokens, greedy")
            print(f"{'draft':>6} {'streams':>7} {'tok/s':>7} {'accept':>10} {'tok/step':>8}  runs")
            for row in _measure(path, TEMPLATES[name], args):
                runs = " ".join(f"{r:.1f}" for r in row["runs"])
                print(
                    f"{row['draft']!s:>6} {row['streams']:>7} {row['tok/s']:>7.1f}"
                    f" {row['accept']:>10} {row['tok/step']:>8.2f}  [{runs}]",
                    flush=True,
                )


if __name__ == "__main__":
    main()
