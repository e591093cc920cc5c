#!/usr/bin/env bash
# Installs llama.cpp's OpenAI-compatible server (llama-cpp-python, built from source by pip) into
# a venv in reagent's cache, for the tests of the `openai` backend and the decode benchmark.
# Prints the venv's python. The first build takes 10-20 minutes on 2 cores.
#
# llama.cpp is built for the ISA level reagent itself is built for (x86-64-v3: AVX2, FMA, F16C;
# see .cargo/config.toml), never for the build machine's own CPU: a "native" build compiles in
# AMX or AVX-512 kernels wherever the CPU reports them, and those fault on VMs that do not enable
# the state (AMX's ldtilecfg), and would also make the decode benchmark's baseline unfair.
# The built wheel is kept under a directory named after the flags, because pip's own wheel cache
# keys on the version alone and would hand back a wheel built with other flags.
set -euo pipefail
cache="${REAGENT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/reagent}"
version="0.3.36"
cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
cmake_args+=" -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF"
cmake_args+=" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_BACKEND_DL=OFF -DGGML_CPU_ALL_VARIANTS=OFF"
cmake_args+=" -DLLAVA_BUILD=OFF"
build_id="$(printf '%s %s' "$version" "$cmake_args" | sha256sum | cut -c1-16)"
venv="$cache/llama-cpp-venv"
wheels="$cache/llama-cpp-wheels/$build_id"
stamp="$venv/.reagent-build-id"

if [ "$(cat "$stamp" 2>/dev/null)" != "$build_id" ] \
    || ! "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$version')" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    if ! ls "$wheels"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
        echo "setup: building llama-cpp-python $version (llama.cpp for x86-64-v3) into $wheels; this takes a while once" >&2
        rm -rf "$wheels.partial"
        CMAKE_ARGS="$cmake_args" "$venv/bin/pip" wheel --quiet --disable-pip-version-check --no-cache-dir \
            --no-deps --no-binary llama-cpp-python -w "$wheels.partial" "llama-cpp-python==$version" >&2
        mv "$wheels.partial" "$wheels"
    fi
    # PyPI has no wheels of llama-cpp-python, so --only-binary takes the one built above.
    "$venv/bin/pip" install --quiet --disable-pip-version-check --find-links "$wheels" \
        --only-binary llama-cpp-python "llama-cpp-python[server]==$version" >&2
    # Fail here, not in a test's segfault, if the build picked up kernels beyond x86-64-v3.
    "$venv/bin/python" -c "
import llama_cpp, sys
info = llama_cpp.llama_print_system_info().decode()
bad = [f for f in ('AVX512 = 1', 'AMX_INT8 = 1', 'AMX_TILE = 1') if f in info]
sys.exit(f'llama.cpp was built beyond x86-64-v3 ({bad}): {info}' if bad else 0)"
    echo "$build_id" >"$stamp"
fi
echo "$venv/bin/python"
