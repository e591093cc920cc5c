//! `/metrics` in Prometheus' text format: runs by status (from the store), and what this process
//! saw its runs do (steps, tool calls and their latency, model tokens).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use reagent_store::Status;

use crate::events::Event;

#[derive(Default)]
pub(crate) struct Metrics {
    steps: AtomicU64,
    tool_calls: AtomicU64,
    tool_errors: AtomicU64,
    tool_micros: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    reasoning_tokens: AtomicU64,
}

impl Metrics {
    pub(crate) fn observe(&self, event: &Event) {
        let add = |counter: &AtomicU64, n: u64| counter.fetch_add(n, Ordering::Relaxed);
        match event {
            Event::StepStarted { .. } => drop(add(&self.steps, 1)),
            Event::ToolResult { ok, duration_ms, .. } => {
                add(&self.tool_calls, 1);
                add(&self.tool_errors, u64::from(!ok));
                add(&self.tool_micros, (duration_ms * 1000.0) as u64);
            }
            Event::SubAgent { inner, .. } => self.observe(inner),
            Event::Usage { usage, .. } => {
                add(&self.prompt_tokens, u64::from(usage.prompt_tokens));
                add(&self.completion_tokens, u64::from(usage.completion_tokens));
                add(&self.reasoning_tokens, u64::from(usage.reasoning_tokens));
            }
            _ => {}
        }
    }

    /// The exposition text; `counts` are the store's runs by status, `driving` the runs this
    /// process drives now.
    pub(crate) fn render(&self, counts: &[(Status, u64)], driving: usize) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut out = String::new();
        let _ = writeln!(out, "# HELP reagent_runs Runs in the store, by status.\n# TYPE reagent_runs gauge");
        for status in Status::ALL {
            let count = counts.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "reagent_runs{{status=\"{status}\"}} {count}");
        }
        let queued = counts.iter().filter(|(s, _)| *s == Status::Queued).map(|(_, n)| n).sum::<u64>();
        let lines = [
            ("reagent_queue_depth", "gauge", "Runs accepted and not yet started.", queued as f64),
            ("reagent_runs_driving", "gauge", "Runs this process is driving now.", driving as f64),
            (
                "reagent_steps_total",
                "counter",
                "Model steps taken by runs this process drove.",
                get(&self.steps) as f64,
            ),
            (
                "reagent_tool_calls_total",
                "counter",
                "Tool calls whose results were fed back.",
                get(&self.tool_calls) as f64,
            ),
            ("reagent_tool_call_errors_total", "counter", "Tool calls that failed.", get(&self.tool_errors) as f64),
            (
                "reagent_tool_call_seconds_sum",
                "counter",
                "Time tool calls took, in total (divide by reagent_tool_calls_total for the mean).",
                get(&self.tool_micros) as f64 / 1e6,
            ),
        ];
        for (name, kind, help, value) in lines {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP reagent_model_tokens_total Model tokens, by kind.\n# TYPE reagent_model_tokens_total counter"
        );
        for (kind, counter) in [
            ("prompt", &self.prompt_tokens),
            ("completion", &self.completion_tokens),
            ("reasoning", &self.reasoning_tokens),
        ] {
            let _ = writeln!(out, "reagent_model_tokens_total{{kind=\"{kind}\"}} {}", get(counter));
        }
        out
    }
}
