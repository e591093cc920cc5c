#!/usr/bin/env bash
# Builds the tool components, pulls the models, installs llama.cpp's server and the API tests'
# clients, then runs every test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

# Runs a setup script in the background, its output (a python) kept in a file.
start_setup() {
    local out
    out="$(mktemp)"
    "$root/scripts/$1" >"$out" &
    echo "$! $out"
}

# Waits for a setup started by start_setup and exports its python as $2.
finish_setup() {
    local pid out
    read -r pid out <<<"$1"
    if ! wait "$pid"; then
        echo "test: scripts/$3 failed" >&2
        exit 1
    fi
    export "$2=$(cat "$out")"
    rm -f "$out"
}

# The openai backend's tests run against a real llama.cpp server on loopback; the API tests drive
# `reagent serve` with third-party clients (openai, schemathesis). The llama.cpp build overlaps
# reagent's: cargo leaves a core idle through its long single-crate stretches.
llama="$(start_setup llama-server-setup.sh)"
clients="$(start_setup api-clients-setup.sh)"

"$root/scripts/setup.sh"

finish_setup "$llama" REAGENT_LLAMA_PYTHON llama-server-setup.sh
finish_setup "$clients" REAGENT_CLIENTS_PYTHON api-clients-setup.sh

cargo test --locked --workspace --manifest-path "$root/Cargo.toml" "$@"
cargo test --locked --manifest-path "$root/tools/Cargo.toml"
