#!/usr/bin/env bash
# Builds bench/mtmd_reference.cpp (llama.cpp's multimodal path: mtmd_tokenize, then
# mtmd_helper_eval_chunks, then greedy decoding) against the libllama and libmtmd that
# llama-cpp-python installed in .venv, with the headers it installed: one file, seconds to
# compile, the same kernels corral runs. Cached in bench/.cache; prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")"
read -r SITE LIB VERSION < <(../.venv/bin/python -c '
import os, sysconfig, llama_cpp
print(sysconfig.get_paths()["purelib"], os.path.join(os.path.dirname(llama_cpp.__file__), "lib"),
      llama_cpp.__version__)')
BIN=.cache/mtmd-reference-$VERSION/mtmd_reference
if [ ! -x "$BIN" ] || [ mtmd_reference.cpp -nt "$BIN" ]; then
    mkdir -p "$(dirname "$BIN")"
    "${CXX:-g++}" -O2 -std=c++17 -I"$SITE/include" mtmd_reference.cpp -o "$BIN" \
        -L"$LIB" -lmtmd -lllama -lggml -lggml-base -Wl,-rpath,"$LIB" >&2
fi
echo "$(pwd)/$BIN"
