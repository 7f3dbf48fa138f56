#!/usr/bin/env bash
# Builds llama.cpp's own llama-mtmd-cli (the multimodal command-line tool) from the llama.cpp
# source vendored in the pinned llama-cpp-python sdist, into bench/.cache (never committed), so
# the vision equality test compares corral with the very same llama.cpp and mtmd it runs on.
# Only that target is built: static libraries, no server. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=$(../.venv/bin/python -c 'import llama_cpp; print(llama_cpp.__version__)')
CACHE=.cache/llama-cpp-python-$VERSION
BUILD=$CACHE/build
BIN=$BUILD/bin/llama-mtmd-cli
if [ ! -x "$BIN" ]; then
    mkdir -p .cache
    if [ ! -d "$CACHE" ]; then
        ../.venv/bin/python -m pip download --quiet --no-deps --no-binary :all: \
            "llama-cpp-python==$VERSION" -d .cache/sdist
        tar -xzf ".cache/sdist/llama_cpp_python-$VERSION.tar.gz" -C .cache
        mv ".cache/llama_cpp_python-$VERSION" "$CACHE"
    fi
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        # The same configuration as build_llama_server.sh, so both scripts share one build tree.
        cmake -S "$CACHE/vendor/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
            -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
            -DLLAMA_BUILD_TOOLS=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF >&2
    fi
    cmake --build "$BUILD" --target llama-mtmd-cli -j"$(nproc)" >&2
fi
echo "$(pwd)/$BIN"
