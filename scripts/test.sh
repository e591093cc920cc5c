#!/usr/bin/env bash
# Builds the tool components, pulls the models, installs llama.cpp's server and the API tests'
# clients, then runs every test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

# The openai backend's tests run against a real llama.cpp server on loopback. Its first build
# overlaps reagent's: cargo leaves a core idle through its long single-crate stretches.
llama_python="$(mktemp)"
"$root/scripts/llama-server-setup.sh" >"$llama_python" &
llama_setup=$!
# The API tests drive `reagent serve` with third-party clients (openai, schemathesis).
clients_python="$(mktemp)"
"$root/scripts/api-clients-setup.sh" >"$clients_python" &
clients_setup=$!

"$root/scripts/setup.sh"

if ! wait "$llama_setup"; then
    echo "test: installing llama.cpp's server failed (scripts/llama-server-setup.sh)" >&2
    exit 1
fi
REAGENT_LLAMA_PYTHON="$(cat "$llama_python")"
rm -f "$llama_python"
export REAGENT_LLAMA_PYTHON
if ! wait "$clients_setup"; then
    echo "test: installing the API clients failed (scripts/api-clients-setup.sh)" >&2
    exit 1
fi
REAGENT_CLIENTS_PYTHON="$(cat "$clients_python")"
rm -f "$clients_python"
export REAGENT_CLIENTS_PYTHON

cargo test --locked --workspace --manifest-path "$root/Cargo.toml" "$@"
cargo test --locked --manifest-path "$root/tools/Cargo.toml"
