#!/usr/bin/env bash
# Builds the tool components, pulls the models, installs llama.cpp's server and the API tests'
# clients, then runs every test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

# Waits for a setup script started in the background (pid $1, output file $2) and exports the
# python it printed as $3.
finish_setup() {
    if ! wait "$1"; then
        echo "test: scripts/$4 failed" >&2
        exit 1
    fi
    export "$3=$(cat "$2")"
    rm -f "$2"
}

# The openai backend's tests run against a real llama.cpp server on loopback; the API tests drive
# `reagent serve` with third-party clients (openai, schemathesis). The llama.cpp build overlaps
# reagent's: cargo leaves a core idle through its long single-crate stretches.
llama_out="$(mktemp)"
"$root/scripts/llama-server-setup.sh" >"$llama_out" &
llama_pid=$!
clients_out="$(mktemp)"
"$root/scripts/api-clients-setup.sh" >"$clients_out" &
clients_pid=$!
# The MCP tests run reagent against the npm reference servers and the official conformance suite
# (Node), and the Python `mcp` SDKs of both protocol eras.
mcp_out="$(mktemp)"
"$root/scripts/mcp-setup.sh" >"$mcp_out" &
mcp_pid=$!

# The PostgreSQL tests (the store's conformance suite, failover) start their own server from the
# Debian `postgresql` package's binaries, on loopback, and stop it.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "test: installing postgresql (its binaries; no server is started)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi

"$root/scripts/setup.sh"

finish_setup "$llama_pid" "$llama_out" REAGENT_LLAMA_PYTHON llama-server-setup.sh
finish_setup "$clients_pid" "$clients_out" REAGENT_CLIENTS_PYTHON api-clients-setup.sh
if ! wait "$mcp_pid"; then
    echo "test: scripts/mcp-setup.sh failed" >&2
    exit 1
fi
while IFS= read -r line; do
    export "${line?}"
done <"$mcp_out"
rm -f "$mcp_out"

cargo test --locked --workspace --manifest-path "$root/Cargo.toml" "$@"
cargo test --locked --manifest-path "$root/tools/Cargo.toml"
# The example agents' own suites, as a user runs them (from the repository's root).
(cd "$root" && cargo run --locked --quiet -- test agents/)
