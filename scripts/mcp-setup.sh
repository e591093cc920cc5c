#!/usr/bin/env bash
# Installs the third-party MCP peers the MCP tests run reagent against, pinned: the npm reference
# servers (`server-everything`, `server-filesystem`; TypeScript SDK 1.x, old era only) and the
# official conformance suite (`@modelcontextprotocol/conformance`; the 0.2 line is the first with
# 2026-07-28 scenarios), plus Python `mcp` 2.x (both eras, client and server) and `mcp` 1.x (old era
# only), each in its own venv, and a third venv for the telemetry tests: `mcp` 2.x with the
# OpenTelemetry SDK, its OTLP/HTTP exporter and the OTLP protobufs (tests/fixtures/otel: the traced
# MCP server and the OTLP receiver). Everything goes into reagent's cache; idempotent (each install
# keeps a stamp of its pins). Progress goes to stderr; stdout gets four lines a caller can `eval`:
#   REAGENT_MCP_NODE=<dir holding mcp-server-everything, mcp-server-filesystem, conformance>
#   REAGENT_MCP2_PYTHON=<python with mcp 2.x>   REAGENT_MCP1_PYTHON=<python with mcp 1.x>
#   REAGENT_OTEL_PYTHON=<python with mcp 2.x, the OpenTelemetry SDK and OTLP/HTTP exporter>
set -euo pipefail
cache="${REAGENT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/reagent}"
mkdir -p "$cache"

node_pins="@modelcontextprotocol/server-everything@2026.8.31 @modelcontextprotocol/server-filesystem@2026.8.31 @modelcontextprotocol/conformance@0.2.0-alpha.12"
node_prefix="$cache/mcp-node"
node_bin="$node_prefix/node_modules/.bin"
node_stamp="$node_prefix/.reagent-pins"
# The conformance CLI imports `fs.globSync` (Node >= 22; it only uses it for `tier-check`), so on
# Node 20 it dies at load. The wrapper preloads a hook that, on a Node without `fs.globSync`, hands
# the suite an `fs` that has a stub one; on Node >= 22 it does nothing. Bump the tag on any change.
compat_tag="node20-compat-1"
if [ "$(cat "$node_stamp" 2>/dev/null)" != "$node_pins $compat_tag" ]; then
    echo "mcp-setup: installing $node_pins into $node_prefix" >&2
    rm -rf "$node_prefix"
    mkdir -p "$node_prefix"
    # shellcheck disable=SC2086 # the pins are separate words
    npm install --prefix "$node_prefix" --save-exact --no-audit --no-fund --ignore-scripts \
        --loglevel=error $node_pins >&2
    cat >"$node_prefix/node20-compat.mjs" <<'JS'
import fs from "node:fs";
import { register } from "node:module";
if (typeof fs.globSync !== "function") {
  const shim = 'export * from "node:fs"; import fs from "node:fs"; export default fs;' +
    'export function globSync() { throw new Error("fs.globSync needs Node >= 22"); }';
  const hooks = `export async function resolve(specifier, context, next) {
    if ((specifier === "fs" || specifier === "node:fs") &&
        (context.parentURL || "").includes("/@modelcontextprotocol/conformance/")) {
      return { url: "data:text/javascript," + encodeURIComponent(${JSON.stringify(shim)}), shortCircuit: true };
    }
    return next(specifier, context);
  }`;
  register("data:text/javascript," + encodeURIComponent(hooks));
}
JS
    rm -f "$node_bin/conformance"
    cat >"$node_bin/conformance" <<'SH'
#!/bin/sh
# Written by scripts/mcp-setup.sh: runs the conformance CLI with the Node 20 compatibility hook.
prefix="$(cd "$(dirname "$0")/../.." && pwd)"
exec node --import "$prefix/node20-compat.mjs" \
    "$prefix/node_modules/@modelcontextprotocol/conformance/dist/index.js" "$@"
SH
    chmod +x "$node_bin/conformance"
    "$node_bin/conformance" --version >/dev/null
    echo "$node_pins $compat_tag" >"$node_stamp"
fi

# $1: venv directory, $2: pins
python_venv() {
    local venv="$1" pins="$2" stamp="$1/.reagent-pins"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$pins" ]; then
        echo "mcp-setup: installing $pins into $venv" >&2
        rm -rf "$venv"
        python3 -m venv "$venv"
        # shellcheck disable=SC2086 # the pins are separate words
        "$venv/bin/pip" install --quiet --disable-pip-version-check $pins >&2
        echo "$pins" >"$stamp"
    fi
}
python_venv "$cache/mcp2-venv" "mcp==2.3.0"
python_venv "$cache/mcp1-venv" "mcp==1.30.0"
# mcp 2.3.0 only asks opentelemetry-api>=1.28; the SDK 1.45.2 pins the api (and the exporter pins the
# proto) to its own version, so these move together. protobuf is pinned for the receiver's decoding.
python_venv "$cache/otel-venv" "mcp==2.3.0 opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2 opentelemetry-proto==1.45.2 protobuf==7.36.2"

echo "REAGENT_MCP_NODE=$node_bin"
echo "REAGENT_MCP2_PYTHON=$cache/mcp2-venv/bin/python"
echo "REAGENT_MCP1_PYTHON=$cache/mcp1-venv/bin/python"
echo "REAGENT_OTEL_PYTHON=$cache/otel-venv/bin/python"
