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
//! With `--telemetry [--pairs N]` it measures the same load with telemetry off and on (exporting
//! spans and metrics to `$OTEL_EXPORTER_OTLP_ENDPOINT`) in N pairs, and prints the median of the
//! pairs' ratios; `benches/telemetry_overhead.sh` runs it against a receiver on loopback, and
//! against a port nobody answers.

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
    let runs = number_from_args("--runs", 10_000);
    if std::env::args().any(|a| a == "--telemetry") {
        return compare_telemetry(runs, number_from_args("--pairs", 9));
    }
    let executor = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let runtime = Runtime::new().expect("the runtime");
    println!("{}", executor.block_on(measure(runs, runtime)));
}

/// Pairs of measurements, off and on back to back (in turns: off first, then on first), after one
/// pair to warm up: the median of the pairs' ratios, and the median steps/s of each. A pair shares
/// whatever else the machine was doing at the time, which a best-of across the whole run does not.
fn compare_telemetry(runs: usize, pairs: usize) {
    // Built before the async runtime, as `reagent` builds it.
    let on = Telemetry::from_env(false).expect("the telemetry settings");
    assert!(on.traces(), "set OTEL_EXPORTER_OTLP_ENDPOINT to the receiver to measure against");
    let executor = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let measure_with = |telemetry: &Telemetry| {
        let runtime = Runtime::new().expect("the runtime").with_telemetry(telemetry.clone());
        let line = executor.block_on(measure(runs, runtime));
        eprintln!("{line}");
        (line["steps_per_s"].as_f64().unwrap_or(0.0), line["worker_cpu_us_per_step"].as_f64().unwrap_or(0.0))
    };
    // (steps/s, worker CPU µs per step) of each measurement, off and on; the pairs' ratios.
    let (mut offs, mut ons, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..=pairs {
        let (off, on) = match pair % 2 {
            0 => (measure_with(&Telemetry::off()), measure_with(&on)),
            _ => {
                let on = measure_with(&on);
                (measure_with(&Telemetry::off()), on)
            }
        };
        if pair > 0 {
            offs.push(off);
            ons.push(on);
            ratios.push(on.0 / off.0);
        }
    }
    drop(executor);
    on.flush();
    // Before the shutdown, which ends the threads.
    let export_cpu = cpu_seconds_of_threads(&["reagent-otlp-spans", "reqwest-internal-sync-runtime"]);
    on.shutdown(FLUSH_AT_EXIT);
    let spans = on.span_counts();
    let (low, high) = (ratios.iter().copied().fold(f64::MAX, f64::min), ratios.iter().copied().fold(0.0, f64::max));
    let line = json!({
        "runs": runs,
        "pairs": pairs,
        "endpoint": std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default(),
        "steps_per_s_off": median(offs.iter().map(|m| m.0)).round(),
        "steps_per_s_on": median(ons.iter().map(|m| m.0)).round(),
        "ratio_on_to_off": round3(median(ratios.iter().copied())),
        "ratio_range": [round3(low), round3(high)],
        "worker_cpu_us_per_step_off": round3(median(offs.iter().map(|m| m.1))),
        "worker_cpu_us_per_step_on": round3(median(ons.iter().map(|m| m.1))),
        "spans_exported": spans.exported.load(Ordering::Relaxed),
        "spans_dropped": spans.dropped.load(Ordering::Relaxed),
        "spans_failed": spans.failed.load(Ordering::Relaxed),
        "export_threads_cpu_s": round3(export_cpu),
    });
    println!("{line}");
}

/// The name tokio gives its worker threads.
const WORKERS: &str = "tokio-rt-worker";

/// CPU time spent so far by this process's threads of those names (as the kernel keeps them:
/// at most 15 bytes), from /proc (Linux).
fn cpu_seconds_of_threads(names: &[&str]) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    tasks
        .flatten()
        .filter(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            names.iter().any(|name| name.starts_with(comm.trim_end()) && !comm.trim_end().is_empty())
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .map(|nanos| nanos as f64 / 1e9)
        .sum()
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// `NAME N` from the arguments; cargo's own `--bench` argument is ignored.
fn number_from_args(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().unwrap_or_else(|_| panic!("{name} takes a whole number")))
        .unwrap_or(default)
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
    let worker_cpu = cpu_seconds_of_threads(&[WORKERS]);
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
    let worker_cpu = cpu_seconds_of_threads(&[WORKERS]) - worker_cpu;

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
        "worker_cpu_us_per_step": (worker_cpu * 1e7 / steps as f64).round() / 10.0,
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
