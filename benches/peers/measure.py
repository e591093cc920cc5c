"""What the peer benchmarks of benches/loop_vs_peers.sh share: the run shape, the command line,
the memory readings, and the one JSON line each prints.

Memory, the same way in both peers: `baseline` is the process's resident set after the imports
and one warm-up run; every run then parks at its first model turn (started, its agent built and
its conversation begun, waiting for the model like a run whose model has not answered yet), and
the resident set read once all N are parked, minus the baseline, divided by N, is the memory of
one idle run. The peak is ru_maxrss over the whole process (KiB on Linux).
"""
import argparse
import json
import resource
import sys

# The task and instructions of agents/calculator-replay.yaml, reagent's side of the benchmark.
TASK = "What is (17*23)+4?"
INSTRUCTIONS = ("You are a careful calculator. Never compute in your head: call the calc tool for every\n"
                "arithmetic expression, then answer with the result in one short sentence.")
EXPRESSION = "(17*23)+4"
ANSWER = 395
TOOL_TURNS = 9  # model turns that call calc; the turn after them answers
STEPS_PER_RUN = TOOL_TURNS + 1


def parse_arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=10_000, help="runs in flight at once (default 10000)")
    return parser.parse_args()


def current_rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def report(*, runtime, version, runs, steps, tool_calls, seconds, baseline_kb, parked_kb, concurrency):
    """Prints the result line, after checking every run had the shape it should."""
    if steps != runs * STEPS_PER_RUN or tool_calls != runs * TOOL_TURNS:
        sys.exit(f"{runtime}: {runs} runs made {steps} model turns and {tool_calls} tool calls, "
                 f"expected {runs * STEPS_PER_RUN} and {runs * TOOL_TURNS}")
    print(json.dumps({
        "runtime": runtime,
        "version": version,
        "runs": runs,
        "steps": steps,
        "tool_calls": tool_calls,
        "seconds": round(seconds, 3),
        "steps_per_s": round(steps / seconds, 1),
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "rss_per_run_kb": round((parked_kb - baseline_kb) / runs, 1),
        "concurrency": concurrency,
        "memory_note": f"rss_per_run_kb: (RSS with all {runs} runs parked at their first model turn "
                       f"({parked_kb} KB) - RSS after imports and a warm-up run ({baseline_kb} KB)) / runs",
    }))
