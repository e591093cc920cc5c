#!/usr/bin/env bash
# Builds the tool components, pulls the models, installs llama.cpp's server, then runs every test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
# The openai backend's tests run against a real llama.cpp server on loopback.
REAGENT_LLAMA_PYTHON="$("$root/scripts/llama-server-setup.sh")"
export REAGENT_LLAMA_PYTHON
cargo test --locked --workspace --manifest-path "$root/Cargo.toml" "$@"
cargo test --locked --manifest-path "$root/tools/Cargo.toml"
