"""Engine builds side by side: prompt and decode speed of llama.cpp compiled different ways.

Each build is a llama-cpp-python wheel (or an installed ``llama_cpp`` folder). The wheels are
unpacked into ``bench/.cache/engine-builds/<name>``; every round runs each build once, one
after the other, in its own child process (the same GGUF, greedy, all usable cores): a
prompt of ``--prompt-tokens`` tokens in one batch, then ``--tokens`` decoded one by one.
Medians over ``--repeats`` rounds; ratios against the first build, paired within each round
(the median of the per-round ratios), since a VM's speed drifts from minute to minute.

    .venv/bin/python bench/bench_engine_build.py \\
        --build pip-native=/tmp/wheels/llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl \\
        --build corral-native=installed --repeats 5

``installed`` is the ``llama_cpp`` of this environment (what ``install.sh`` built).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache" / "engine-builds"

CHILD = r"""
import json, os, sys, time
import llama_cpp
model, n_prompt, n_decode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
threads = len(os.sched_getaffinity(0))
llm = llama_cpp.Llama(model_path=model, n_ctx=n_prompt + n_decode + 8, n_batch=512,
                      n_threads=threads, seed=0, verbose=False)
words = ("the quick brown fox jumps over the lazy dog while the sky turns blue " * 200)
tokens = llm.tokenize(words.encode(), add_bos=True)[:n_prompt]
start = time.perf_counter(); llm.eval(tokens); prompt_s = time.perf_counter() - start
out = []
start = time.perf_counter()
for _ in range(n_decode):
    token = llm.sample(temp=0.0, top_k=1)
    out.append(token)
    llm.eval([token])
decode_s = time.perf_counter() - start
info = llama_cpp.llama_print_system_info().decode()
print(json.dumps({"prompt_tps": len(tokens) / prompt_s, "decode_tps": len(out) / decode_s,
                  "file": llama_cpp.__file__, "info": info, "text_ids": out[:8]}))
"""


def _unpack(name: str, source: str) -> str | None:
    """PYTHONPATH entry that makes ``import llama_cpp`` load this build (None: installed)."""
    if source == "installed":
        return None
    path = Path(source)
    if path.is_dir():
        return str(path)
    target = CACHE / name
    stamp = target / ".source"
    if not (stamp.is_file() and stamp.read_text() == str(path.resolve())):
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path) as wheel:
            wheel.extractall(target)
        for lib in (target / "llama_cpp" / "lib").glob("*.so*"):
            lib.chmod(0o755)
        stamp.write_text(str(path.resolve()))
    return str(target)


def _run(pythonpath: str | None, model: str, prompt: int, decode: int) -> dict[str, object]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [sys.executable, "-c", CHILD, model, str(prompt), str(decode)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"build failed to run ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _default_model() -> str:
    sys.path.insert(0, str(ROOT))
    from corral.catalog.bundled import BUNDLED

    return str(next(m for m in BUNDLED if "smollm2:135m" in m.names).paths()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="append", required=True, help="NAME=WHEEL|DIR|installed")
    parser.add_argument("--model", default=None, help="GGUF (default: bundled SmolLM2)")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = args.model or _default_model()
    builds = []
    for spec in args.build:
        name, _, source = spec.partition("=")
        builds.append((name, _unpack(name, source)))
    rows: dict[str, dict[str, list[float]]] = {n: {"prompt": [], "decode": []} for n, _ in builds}
    first_tokens: dict[str, object] = {}
    for round_no in range(args.repeats):
        for name, pythonpath in builds:
            result = _run(pythonpath, model, args.prompt_tokens, args.tokens)
            rows[name]["prompt"].append(float(result["prompt_tps"]))  # type: ignore[arg-type]
            rows[name]["decode"].append(float(result["decode_tps"]))  # type: ignore[arg-type]
            first_tokens[name] = result["text_ids"]
            if round_no == 0:
                cpu = str(result["info"]).split("|")
                print(f"{name}: {result['file']}\n  {' | '.join(p.strip() for p in cpu[:14])}")
    base = builds[0][0]
    print(
        f"\n{Path(model).name}: {args.prompt_tokens}-token prompt, {args.tokens} "
        f"decoded, medians of {args.repeats} rounds"
    )
    print("| build | prompt tok/s | decode tok/s | prompt ratio | decode ratio |")
    print("|---|---|---|---|---|")
    for name, _ in builds:
        prompt = statistics.median(rows[name]["prompt"])
        decode = statistics.median(rows[name]["decode"])
        # ratios paired within each round (the VM's speed drifts between rounds)
        ratios = [
            statistics.median(
                a / b for a, b in zip(rows[name][kind], rows[base][kind], strict=True)
            )
            for kind in ("prompt", "decode")
        ]
        print(f"| {name} | {prompt:.0f} | {decode:.1f} | {ratios[0]:.2f} | {ratios[1]:.2f} |")
    same = len({json.dumps(t) for t in first_tokens.values()}) == 1
    print(f"\ngreedy tokens identical across builds: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
