#!/usr/bin/env bash
# The loop benchmark with telemetry off and on, side by side in one process: exporting spans and
# metrics to an OTLP/HTTP receiver on loopback (tests/fixtures/otel/receiver.py, decoding every
# request), then to a port nobody listens on (the collector down). Prints one JSON line per case.
#
#     scripts/setup.sh && benches/telemetry_overhead.sh [--runs N]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
runs="${2:-2000}"
[ "${1:-}" = "--runs" ] || runs=2000
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

cd "$root"
echo "receiver on loopback:" >&2
OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$port" cargo bench --quiet --profile dev --bench loop -- --telemetry --runs "$runs"
kill "$receiver"
echo "receiver down:" >&2
OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$port" cargo bench --quiet --profile dev --bench loop -- --telemetry --runs "$runs"
