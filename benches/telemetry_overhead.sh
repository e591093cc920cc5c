#!/usr/bin/env bash
# The loop benchmark with telemetry off and on, in pairs back to back in one process: exporting
# spans and metrics to an OTLP/HTTP receiver on loopback (tests/fixtures/otel/receiver.py, decoding
# every request), then to a port nobody listens on (the collector down). Prints one JSON line per
# case, with the CPU the receiver spent on that case.
#
#     scripts/setup.sh && benches/telemetry_overhead.sh [--runs N] [--pairs N]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
runs=2000 pairs=25
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --pairs) pairs="$2"; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--pairs N]" >&2; exit 2 ;;
    esac
done
eval "$("$root/scripts/mcp-setup.sh" | grep '^REAGENT_OTEL_PYTHON=')"

work="$(mktemp -d)"
trap 'kill "$receiver" 2>/dev/null || true; rm -rf "$work"' EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# --decode-only: it parses every request as a collector would, without turning each span into JSON
# (which, on a 2-core machine, would take the cores the benchmark measures).
"$REAGENT_OTEL_PYTHON" "$root/tests/fixtures/otel/receiver.py" "$work/received.jsonl" --port "$port" --decode-only \
    2>"$work/receiver.log" &
receiver=$!
until grep -q "listening on" "$work/receiver.log" 2>/dev/null; do sleep 0.1; done

# CPU seconds the receiver has used (user + system), from /proc.
receiver_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$receiver/stat"; }

cd "$root"
cargo bench --quiet --profile dev --bench loop --no-run
echo "receiver on loopback:" >&2
idle="$(receiver_cpu)"
OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$port" \
    cargo bench --quiet --profile dev --bench loop -- --telemetry --runs "$runs" --pairs "$pairs"
echo "{\"receiver_cpu_s\": $(awk -v a="$(receiver_cpu)" -v b="$idle" 'BEGIN { printf "%.2f", a - b }')}"
kill "$receiver"
echo "receiver down:" >&2
OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$port" \
    cargo bench --quiet --profile dev --bench loop -- --telemetry --runs "$runs" --pairs "$pairs"
