#!/usr/bin/env bash
# Builds llama.cpp's own llama-server from the llama.cpp source vendored in the pinned
# llama-cpp-python sdist, into bench/.cache (never committed), so benchmarks compare corral
# with the very same llama.cpp it runs on. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=$(../.venv/bin/python -c 'import llama_cpp; print(llama_cpp.__version__)')
CACHE=.cache/llama-cpp-python-$VERSION
BIN=$CACHE/build/bin/llama-server
if [ ! -x "$BIN" ]; then
    mkdir -p .cache
    if [ ! -d "$CACHE" ]; then
        ../.venv/bin/python -m pip download --quiet --no-deps --no-binary :all: \
            "llama-cpp-python==$VERSION" -d .cache/sdist
        tar -xzf ".cache/sdist/llama_cpp_python-$VERSION.tar.gz" -C .cache
        mv ".cache/llama_cpp_python-$VERSION" "$CACHE"
    fi
    cmake -S "$CACHE/vendor/llama.cpp" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release \
        -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF >&2
    cmake --build "$CACHE/build" --target llama-server llama-batched-bench -j"$(nproc)" >&2
fi
echo "$(pwd)/$BIN"
