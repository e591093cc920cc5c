#!/usr/bin/env bash
# `reagent test` on a 100-case replay suite (each case the calculator's recording of the real
# local model, replayed with the real calc component), its cases run concurrently (--jobs 8, the
# default) and one after another (--jobs 1), alternating, in one run. Prints one JSON line.
#
#     scripts/setup.sh && benches/agent_tests.sh [--rounds N]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${2:-5}"
[ "${1:-}" = "--rounds" ] || rounds=5

cd "$root"
cargo build --locked --quiet
reagent="${CARGO_TARGET_DIR:-$root/target}/debug/reagent"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
{
    echo "agent: $root/agents/calculator.yaml"
    echo "cases:"
    for i in $(seq 1 100); do
        printf '  - name: case %s\n    replay: %s\n    expect: {status: answered, answer: {contains: "395"}, calls: [calc]}\n' \
            "$i" "$root/agents/recordings/calculator-adds"
    done
} >"$work/hundred.test.yaml"

# Wall-clock milliseconds of one `reagent test` (which must pass) with --jobs $1.
timed() {
    local start end
    start=$(date +%s%N)
    "$reagent" test "$work/hundred.test.yaml" --jobs "$1" 2>"$work/last.log" || { cat "$work/last.log" >&2; exit 1; }
    end=$(date +%s%N)
    echo $(( (end - start) / 1000000 ))
}
"$reagent" test "$work/hundred.test.yaml" >/dev/null 2>&1 # components compiled and cached once
concurrent=()
sequential=()
for _ in $(seq 1 "$rounds"); do
    concurrent+=("$(timed 8)")
    sequential+=("$(timed 1)")
done
python3 - "${concurrent[*]}" "${sequential[*]}" <<'PY'
import json, statistics, sys
concurrent = [int(x) / 1000 for x in sys.argv[1].split()]
sequential = [int(x) / 1000 for x in sys.argv[2].split()]
c, s = statistics.median(concurrent), statistics.median(sequential)
print(json.dumps({"cases": 100, "rounds": len(concurrent), "concurrent_s": round(c, 3),
                  "sequential_s": round(s, 3), "speedup": round(s / c, 2)}))
PY
