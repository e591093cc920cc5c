//! `reagent test`: finds the suites, runs their cases (a line per case as it ends), prints a
//! summary, and writes JUnit XML or JSON for machines.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use reagent::runtime::Runtime;
use reagent::testing::{CaseReport, Options, Suite, Verdict, case_json, discover, junit};
use serde_json::json;

use crate::{Exit, fail};

pub const SUITE_HELP: &str = "\
A suite, e.g. agents/calculator.test.yaml (paths are relative to the suite's folder):

  agent: calculator.yaml
  cases:
    - name: adds
      replay: recordings/adds        # made by `reagent run --record recordings/adds …`
      expect:
        status: answered             # answered, incomplete (with budget: max_steps …), …
        answer: {contains: \"395\", matches: '\\b395\\b'}
        calls: [{tool: calc, arguments: {expression: {matches: '17'}}}]
        max_steps: 3
    - name: adds, live
      task: What is (17*23)+4?       # on the agent's own model
      runs: 5                        # several runs, and the share that must pass
      pass_rate: 0.8
      expect: {answer: {contains: \"395\"}}

Also: answer.equals, output: {/json/pointer: value}, calls_in_order: true, no_calls: true,
max_tokens: N, inputs: {name: value}. A replayed case fails where the replay parts from its
recording (a tool now behaves differently), and is reported stale, with the command that records
it again, where the agent or its tools changed since.

Exit codes: 0 every case passed; 17 a case failed, could not run, or is stale; 2 no suites or bad
arguments; 3 a suite file is invalid (the message says file:line:col).";

pub struct TestArgs {
    pub paths: Vec<PathBuf>,
    pub jobs: usize,
    pub junit: Option<PathBuf>,
    pub json: bool,
    pub events: Option<PathBuf>,
}

pub async fn run(runtime: &Runtime, args: TestArgs) -> ExitCode {
    let paths = if args.paths.is_empty() { vec![PathBuf::from(".")] } else { args.paths };
    let files = match discover(&paths) {
        Ok(files) if files.is_empty() => {
            let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            return fail(Exit::Usage, &format!("no test suites (*.test.yaml) under {}", shown.join(", ")));
        }
        Ok(files) => files,
        Err(e) => return fail(Exit::Usage, &e.to_string()),
    };
    let mut suites = Vec::new();
    for file in &files {
        match Suite::load(file) {
            Ok(suite) => suites.push(suite),
            Err(e) => return fail(Exit::InvalidAgent, &e.to_string()),
        }
    }
    let cases: usize = suites.iter().map(|s| s.cases.len()).sum();
    eprintln!("running {cases} case(s) from {} suite(s), {} at a time", suites.len(), args.jobs.max(1));
    let started = Instant::now();
    let options = Options { jobs: args.jobs, events: args.events };
    let json = args.json;
    let reports = reagent::testing::run(runtime, &suites, &options, |report| {
        print_case(report);
        if json {
            let _ = writeln!(std::io::stdout(), "{}", case_json(report));
        }
    })
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let count = |f: fn(&Verdict) -> bool| reports.iter().filter(|r| f(&r.verdict)).count();
    let passed = count(|v| matches!(v, Verdict::Passed));
    let failed = count(|v| matches!(v, Verdict::Failed(_)));
    let stale = count(|v| matches!(v, Verdict::Stale { .. }));
    let errors = count(|v| matches!(v, Verdict::Error(_)));
    eprintln!(
        "\n{} case(s): {passed} passed, {failed} failed, {stale} stale, {errors} could not run ({seconds:.2} s)",
        reports.len()
    );
    if json {
        let summary = json!({"type": "summary", "cases": reports.len(), "passed": passed, "failed": failed,
                             "stale": stale, "errors": errors, "seconds": seconds});
        let _ = writeln!(std::io::stdout(), "{summary}");
    }
    if let Some(file) = &args.junit
        && let Err(e) = std::fs::write(file, junit(&reports, seconds))
    {
        return fail(Exit::Internal, &format!("cannot write --junit {}: {e}", file.display()));
    }
    if reports.iter().all(CaseReport::passed) {
        ExitCode::from(Exit::Success as u8)
    } else {
        ExitCode::from(Exit::TestsFailed as u8)
    }
}

/// A case's line, and under it what failed.
fn print_case(report: &CaseReport) {
    let (mark, details): (&str, Vec<String>) = match &report.verdict {
        Verdict::Passed => ("PASS ", Vec::new()),
        Verdict::Failed(failures) => ("FAIL ", failures.iter().map(ToString::to_string).collect()),
        Verdict::Stale { why, rerecord } => ("STALE", vec![why.clone(), format!("record it again: {rerecord}")]),
        Verdict::Error(message) => ("ERROR", vec![message.clone()]),
    };
    let mut about = vec![report.mode.to_string()];
    if let Some(steps) = report.steps {
        about.push(format!("{steps} step(s)"));
    }
    about.push(format!("{:.2} s", report.duration.as_secs_f64()));
    let mut lines = vec![format!("{mark} {} › {}  ({})", report.suite.display(), report.case, about.join(", "))];
    lines.extend(report.notes.iter().map(|n| format!("      note: {n}")));
    lines.extend(details.iter().map(|d| format!("      {d}")));
    let _ = writeln!(std::io::stderr(), "{}", lines.join("\n"));
}
