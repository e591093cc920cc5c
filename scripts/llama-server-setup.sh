#!/usr/bin/env bash
# Installs llama.cpp's OpenAI-compatible server (llama-cpp-python, built from source by pip) into
# a venv in reagent's cache, for the tests of the `openai` backend and the decode benchmark.
# Prints the venv's python. The first build takes 10-20 minutes on 2 cores; pip caches the wheel.
set -euo pipefail
cache="${REAGENT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/reagent}"
venv="$cache/llama-cpp-venv"
version="0.3.36"
if ! "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$version')" 2>/dev/null; then
    echo "setup: building llama-cpp-python $version (llama.cpp server) into $venv; this takes a while once" >&2
    python3 -m venv "$venv"
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DLLAVA_BUILD=OFF}" "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "llama-cpp-python[server]==$version" >&2
fi
echo "$venv/bin/python"
