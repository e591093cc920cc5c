#!/usr/bin/env bash
# Durable runs side by side: reagent's journal benchmark (benches/runs.rs: the same 10-turn runs
# in memory and journalled to SQLite, alternating for 5 rounds, medians reported, then `reagent
# serve` under S runs submitted at once and
# followed on SSE) and LangGraph under its SQLite checkpointer running the same run shape
# (benches/peers/langgraph_bench.py). Prints the JSON lines, then a markdown table.
#
#     benches/runs_vs_langgraph.sh [--runs N] [--served S]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=2000
served=1000
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --served) served="$2"; shift 2 ;;
        *) echo "usage: benches/runs_vs_langgraph.sh [--runs N] [--served S]" >&2; exit 2 ;;
    esac
done
python="$(benches/peers/setup.sh)"
results="$(mktemp -d)"
trap 'rm -rf "$results"' EXIT
echo "runs_vs_langgraph: reagent, $runs runs (50 at a time), then $served served" >&2
cargo bench --profile dev --bench runs -- --runs "$runs" --at-once 50 --rounds 5 --served "$served" | tee "$results/reagent"
echo "runs_vs_langgraph: langgraph, $((runs / 10)) runs one after another, then 50 at a time" >&2
"$python" benches/peers/langgraph_bench.py --runs "$((runs / 10))" | tee "$results/langgraph"
"$python" benches/peers/langgraph_bench.py --runs "$((runs / 10))" --at-once 50 | tee "$results/langgraph-50"
python3 - "$results/reagent" "$results/langgraph" "$results/langgraph-50" <<'TABLE'
import json, sys
reagent = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
journal = next(r for r in reagent if r["measure"] == "journal")
langgraph = json.loads(open(sys.argv[2]).read())
langgraph_50 = json.loads(open(sys.argv[3]).read())
print("| run | steps/s | |")
print("|---|---:|---|")
print(f"| reagent, in memory (median of {journal['rounds']} rounds) | {journal['in_memory_steps_per_s']:,.0f} | |")
print(f"| reagent, journalled (every step durable) | {journal['journalled_steps_per_s']:,.0f} | "
      f"{journal['journalled_over_in_memory']:.3f} of in memory |")
for peer in (langgraph, langgraph_50):
    print(f"| LangGraph {peer['version']}, {peer['checkpointer'].split(' ')[0]}, {peer['at_once']} at a time "
          f"| {peer['steps_per_s']:,.0f} | reagent journalled is {journal['journalled_steps_per_s'] / peer['steps_per_s']:.1f}x |")
TABLE
