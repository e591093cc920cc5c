//! The agent loop under load: N concurrent runs of a replay agent, 10 model turns each (9 calls
//! of the real calc component, then the answer). Each run takes the path a user's run takes:
//! `launch` on the process's one `Runtime` (the agent file and replay script read, the tools
//! loaded, the agent built), then `Agent::run`. Prints one JSON line: steps/s, peak RSS, and the
//! memory of one idle run. `benches/loop_vs_peers.sh` runs it beside smolagents and the OpenAI
//! Agents SDK doing the same work.
//!
//!     scripts/setup.sh && cargo bench --profile dev --bench loop -- --runs 10000
//!
//! Memory is measured as the peers measure it: every run parks once launched, before its first
//! model turn; RSS with all N parked, minus RSS after a warm-up run, over N.
//!
//! With `--telemetry` it measures the same load with telemetry off and on (exporting spans and
//! metrics to `$OTEL_EXPORTER_OTLP_ENDPOINT`), alternating, and prints the ratio of the best of
//! each; `benches/telemetry_overhead.sh` runs it against a receiver on loopback, and against a
//! port nobody answers.

#[path = "shared/calc_agent.rs"]
mod calc_agent;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use calc_agent::{STEPS_PER_RUN, TASK};
use reagent::agent_loop::RunOutcome;
use reagent::events::Event;
use reagent::launch::launch;
use reagent::runtime::Runtime;
use reagent::spec::GivenInputs;
use reagent::telemetry::{FLUSH_AT_EXIT, Telemetry};
use serde_json::{Value, json};
use tokio::sync::watch;

fn main() {
    let runs = runs_from_args();
    if std::env::args().any(|a| a == "--telemetry") {
        return compare_telemetry(runs);
    }
    let executor = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let runtime = Runtime::new().expect("the runtime");
    println!("{}", executor.block_on(measure(runs, runtime)));
}

/// Off, on, off, on: the best steps/s of each and their ratio, with what became of the spans.
fn compare_telemetry(runs: usize) {
    // Built before the async runtime, as `reagent` builds it.
    let on = Telemetry::from_env(false).expect("the telemetry settings");
    assert!(on.traces(), "set OTEL_EXPORTER_OTLP_ENDPOINT to the receiver to measure against");
    let executor = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let (mut off_best, mut on_best) = (0f64, 0f64);
    for _ in 0..2 {
        for (telemetry, best) in [(Telemetry::off(), &mut off_best), (on.clone(), &mut on_best)] {
            let runtime = Runtime::new().expect("the runtime").with_telemetry(telemetry);
            let line = executor.block_on(measure(runs, runtime));
            eprintln!("{line}");
            *best = best.max(line["steps_per_s"].as_f64().unwrap_or(0.0));
        }
    }
    drop(executor);
    on.shutdown(FLUSH_AT_EXIT);
    let spans = on.span_counts();
    let line = json!({
        "runs": runs,
        "endpoint": std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default(),
        "steps_per_s_off": off_best,
        "steps_per_s_on": on_best,
        "ratio_on_to_off": (on_best / off_best * 1000.0).round() / 1000.0,
        "spans_exported": spans.exported.load(Ordering::Relaxed),
        "spans_dropped": spans.dropped.load(Ordering::Relaxed),
        "spans_failed": spans.failed.load(Ordering::Relaxed),
    });
    println!("{line}");
}

/// `--runs N`; cargo's own `--bench` argument is ignored.
fn runs_from_args() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--runs takes a whole number"))
        .unwrap_or(10_000)
}

async fn measure(runs: usize, runtime: Runtime) -> Value {
    let dir = tempfile::tempdir().expect("a temp dir");
    let agent_file = calc_agent::write(dir.path());
    let counts = Counts::default();
    // Warm up: one run, so that the baseline holds what every run shares (compiled component,
    // allocator pools), not what each run adds.
    let (_, open) = watch::channel(true);
    run_one(&runtime, &agent_file, open, &counts, Arc::new(AtomicUsize::new(0))).await;
    let baseline_kb = status_kb("VmRSS:");
    let counts = Counts::default();

    let started = Instant::now();
    let (gate, closed) = watch::channel(false);
    let parked = Arc::new(AtomicUsize::new(0));
    let (agent_file, counts_shared) = (Arc::new(agent_file), Arc::new(counts));
    let tasks: Vec<_> = (0..runs)
        .map(|_| {
            let (runtime, agent_file, gate, counts, parked) =
                (runtime.clone(), agent_file.clone(), closed.clone(), counts_shared.clone(), parked.clone());
            tokio::spawn(async move { run_one(&runtime, &agent_file, gate, &counts, parked).await })
        })
        .collect();
    while parked.load(Ordering::Acquire) < runs {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let parked_kb = status_kb("VmRSS:");
    gate.send_replace(true);
    for task in tasks {
        task.await.expect("a run task");
    }
    let seconds = started.elapsed().as_secs_f64();

    let steps = counts_shared.steps.load(Ordering::Relaxed);
    let tool_calls = counts_shared.tool_calls.load(Ordering::Relaxed);
    let expected = (runs as u64 * STEPS_PER_RUN, runs as u64 * (STEPS_PER_RUN - 1));
    assert_eq!((steps, tool_calls), expected, "every run made 10 model turns and 9 calls");
    json!({
        "runtime": "reagent",
        "version": env!("CARGO_PKG_VERSION"),
        "runs": runs,
        "steps": steps,
        "tool_calls": tool_calls,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "steps_per_s": (steps as f64 / seconds * 10.0).round() / 10.0,
        "peak_rss_kb": status_kb("VmHWM:"),
        "rss_per_run_kb": ((parked_kb.saturating_sub(baseline_kb)) as f64 / runs as f64 * 10.0).round() / 10.0,
        "concurrency": format!("{runs} tokio tasks on {} worker threads", tokio::runtime::Handle::current().metrics().num_workers()),
        "path": "launch (agent file, replay script, tools loaded per run) on one Runtime, then Agent::run",
        "memory_note": format!("rss_per_run_kb: (RSS with all {runs} runs launched and parked before their first model turn ({parked_kb} KB) - RSS after a warm-up run ({baseline_kb} KB)) / runs"),
    })
}

#[derive(Default)]
struct Counts {
    steps: AtomicU64,
    tool_calls: AtomicU64,
}

/// One run as `reagent run` makes it: launched from the agent file on the shared runtime, parked
/// until the gate opens, then run.
async fn run_one(
    runtime: &Runtime,
    agent_file: &Path,
    mut gate: watch::Receiver<bool>,
    counts: &Counts,
    parked: Arc<AtomicUsize>,
) {
    let (_, agent) = launch(runtime, agent_file, &GivenInputs::default()).await.expect("launch");
    parked.fetch_add(1, Ordering::Release);
    let _ = gate.wait_for(|open| *open).await;
    let mut sink = |event: &Event| match event {
        Event::StepStarted { .. } => drop(counts.steps.fetch_add(1, Ordering::Relaxed)),
        Event::ToolResult { ok: true, .. } => drop(counts.tool_calls.fetch_add(1, Ordering::Relaxed)),
        _ => {}
    };
    let outcome = agent.run(TASK, &mut sink).await.expect("the run");
    assert!(matches!(outcome, RunOutcome::Answered { .. }), "{outcome:?}");
}

/// A figure from /proc/self/status, in KiB (Linux).
fn status_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}
