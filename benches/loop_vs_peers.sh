#!/usr/bin/env bash
# The agent-loop benchmark side by side: N concurrent runs (default 10000) of 10 model turns each
# (9 `calc` tool calls, then the answer) against a scripted model, on reagent (its replay model and
# the real calc WebAssembly component), smolagents and the OpenAI Agents SDK (a scripted model and
# a trivial Python calc tool). Prints a markdown table of model turns per second, peak RSS and the
# memory of one idle run, with reagent's steps/s as a multiple of each peer's.
#
#     benches/loop_vs_peers.sh [--runs N]
#
# The peers are installed once into a venv in reagent's cache (benches/peers/setup.sh). Each side
# runs alone, one after another, and prints one JSON line; benches/peers/measure.py says how memory
# is measured. At 10000 runs the peers take tens of minutes on two cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=10000
if [ $# -eq 2 ] && [ "$1" = --runs ]; then
    runs="$2"
elif [ $# -ne 0 ]; then
    runs="" # anything else is a usage error
fi
if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: benches/loop_vs_peers.sh [--runs N]" >&2
    exit 2
fi

python="$(benches/peers/setup.sh)"
results="$(mktemp -d)"
trap 'rm -rf "$results"' EXIT

echo "loop_vs_peers: reagent, $runs runs" >&2
cargo bench --profile dev --bench loop -- --runs "$runs" > "$results/1-reagent"
echo "loop_vs_peers: smolagents, $runs runs" >&2
"$python" benches/peers/smolagents_bench.py --runs "$runs" > "$results/2-smolagents"
echo "loop_vs_peers: openai-agents, $runs runs" >&2
"$python" benches/peers/agents_sdk_bench.py --runs "$runs" > "$results/3-openai-agents"

python3 - "$results"/* <<'TABLE'
import json
import sys

rows = []
for path in sys.argv[1:]:
    # The result is the last JSON line a side printed on stdout.
    lines = [line for line in open(path).read().splitlines() if line.startswith("{")]
    if not lines:
        sys.exit(f"loop_vs_peers: {path.rsplit('/', 1)[-1][2:]} printed no JSON result line")
    rows.append(json.loads(lines[-1]))
reagent = rows[0]
print(f"{reagent['runs']} concurrent runs × 10 model turns (9 calc calls, then the answer)\n")
print("| runtime | version | steps/s | peak RSS | KB per idle run | reagent's steps/s × |")
print("|---|---|---:|---:|---:|---:|")
for row in rows:
    ratio = "" if row is reagent else f"{reagent['steps_per_s'] / row['steps_per_s']:.1f}×"
    print(f"| {row['runtime']} | {row['version']} | {row['steps_per_s']:,.0f} | {row['peak_rss_kb'] / 1024:,.1f} MiB "
          f"| {row['rss_per_run_kb']:,.1f} | {ratio} |")
print()
for row in rows:
    print(f"- {row['runtime']}: {row['concurrency']}; {row['seconds']} s. {row.get('memory_note', '')}")
TABLE
