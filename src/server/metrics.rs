//! `/metrics` in Prometheus' text format: runs by status (from the store, so every process of a
//! deployment says the same), the runs this process drives, and the process's OpenTelemetry
//! metrics (the GenAI conventions' durations and token usage, sandbox denials, approvals waiting,
//! runs and steps), the same figures its OTLP exporter sends.

use std::fmt::Write;

use reagent_store::Status;

use crate::telemetry::Telemetry;

/// The exposition text; `counts` are the store's runs by status, `driving` the runs this process
/// drives now.
pub(crate) fn render(counts: &[(Status, u64)], driving: usize, telemetry: &Telemetry) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP reagent_runs Runs in the store, by status.\n# TYPE reagent_runs gauge");
    for status in Status::ALL {
        let count = counts.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "reagent_runs{{status=\"{status}\"}} {count}");
    }
    let queued = counts.iter().filter(|(s, _)| *s == Status::Queued).map(|(_, n)| n).sum::<u64>();
    for (name, help, value) in [
        ("reagent_queue_depth", "Runs accepted and not yet started.", queued),
        ("reagent_runs_driving", "Runs this process is driving now.", driving as u64),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    out.push_str(&telemetry.prometheus().unwrap_or_default());
    out
}
