#!/usr/bin/env bash
# Builds the tool components, then runs every test of the workspace.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
cargo test --locked --workspace --manifest-path "$root/Cargo.toml" "$@"
cargo test --locked --manifest-path "$root/tools/Cargo.toml"
