//! Running suites: every case's runs at once (at most `jobs` at a time) on one runtime, each run
//! launched as a run of the agent is, on its recording or its own model, its events checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::checks::{Failure, check};
use super::suite::{Case, CaseModel, Suite};
use crate::events::Event;
use crate::launch::{launch, launch_replaying};
use crate::recording::{Fingerprint, Recording, divergence};
use crate::runtime::Runtime;
use crate::spec::GivenInputs;

/// How a case came out.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Passed,
    Failed(Vec<Failure>),
    /// The agent changed since its recording, and the replay parted from it: record it again.
    Stale {
        why: String,
        rerecord: String,
    },
    /// The case could not run (the agent or the recording cannot be loaded).
    Error(String),
}

/// A case's report.
#[derive(Debug, Clone)]
pub struct CaseReport {
    pub suite: PathBuf,
    pub case: String,
    /// `replay` or `live`.
    pub mode: &'static str,
    pub verdict: Verdict,
    /// Runs made, runs that passed, and the share that had to.
    pub runs: u32,
    pub passed: u32,
    pub pass_rate: f64,
    /// Steps of its (first) run.
    pub steps: Option<u64>,
    /// The longest of its runs.
    pub duration: Duration,
    /// Worth knowing though it passed (a recording made under another agent file, say).
    pub notes: Vec<String>,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Passed
    }
}

pub struct Options {
    /// Runs at once.
    pub jobs: usize,
    /// Where each run's events are written (`SUITE/CASE[.N].jsonl`), if anywhere.
    pub events: Option<PathBuf>,
}

/// One run of a case.
struct Ran {
    events: Vec<Value>,
    duration: Duration,
    /// The replay's recording, and what of its fingerprint changed since.
    replayed: Option<(Arc<Recording>, Vec<String>)>,
}

/// Runs every case of `suites`, calling `done` with each case's report as it finishes; returns
/// the reports in the suites' order.
pub async fn run(
    runtime: &Runtime,
    suites: &[Suite],
    options: &Options,
    mut done: impl FnMut(&CaseReport),
) -> Vec<CaseReport> {
    let permits = Arc::new(Semaphore::new(options.jobs.max(1)));
    let mut tasks = JoinSet::new();
    let mut owners = std::collections::HashMap::new();
    // A recording is read once, however many cases replay it.
    let mut recordings = std::collections::HashMap::new();
    let mut pending: BTreeMap<(usize, usize), Vec<Result<Ran, String>>> = BTreeMap::new();
    for (s, suite) in suites.iter().enumerate() {
        for (c, case) in suite.cases.iter().enumerate() {
            let runs = match case.model {
                CaseModel::Replay(_) => 1,
                CaseModel::Live { runs, .. } => runs,
            };
            pending.insert((s, c), Vec::new());
            let recording = match &case.model {
                CaseModel::Replay(dir) => Some(
                    recordings
                        .entry(dir.clone())
                        .or_insert_with(|| Recording::read(dir).map(Arc::new).map_err(|e| e.to_string()))
                        .clone(),
                ),
                CaseModel::Live { .. } => None,
            };
            for _ in 0..runs {
                let (runtime, agent, case, recording) =
                    (runtime.clone(), suite.agent.clone(), case.clone(), recording.clone());
                let permits = permits.clone();
                let task = tasks.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    run_once(&runtime, &agent, &case, recording).await
                });
                owners.insert(task.id(), (s, c));
            }
        }
    }
    let mut reports = BTreeMap::new();
    while let Some(joined) = tasks.join_next_with_id().await {
        let (task, ran) = match joined {
            Ok((task, ran)) => (task, ran),
            Err(e) => (e.id(), Err(format!("the run failed: {e}"))),
        };
        let Some(&(s, c)) = owners.get(&task) else { continue };
        let Some(runs) = pending.get_mut(&(s, c)) else { continue };
        runs.push(ran);
        let (suite, case) = (&suites[s], &suites[s].cases[c]);
        let wanted = match case.model {
            CaseModel::Replay(_) => 1,
            CaseModel::Live { runs, .. } => runs as usize,
        };
        if runs.len() < wanted {
            continue;
        }
        let runs = pending.remove(&(s, c)).unwrap_or_default();
        if let Some(dir) = &options.events {
            write_events(dir, suite, case, &runs);
        }
        let report = judge(suite, case, runs);
        done(&report);
        reports.insert((s, c), report);
    }
    reports.into_values().collect()
}

async fn run_once(
    runtime: &Runtime,
    agent_file: &Path,
    case: &Case,
    recording: Option<Result<Arc<Recording>, String>>,
) -> Result<Ran, String> {
    let recording = recording.transpose()?;
    let inputs = match (&recording, case.inputs.is_empty()) {
        (Some(recording), true) => recording.about.inputs.clone(),
        _ => case.inputs.clone(),
    };
    let given = GivenInputs { from_file: inputs.into_iter().collect(), from_flags: Vec::new() };
    let task = match (&case.task, &recording) {
        (Some(task), _) => task.clone(),
        (None, Some(recording)) => recording.about.task.clone(),
        (None, None) => return Err("the case has no task".into()),
    };
    let launched = match (&recording, &case.model) {
        (Some(recording), CaseModel::Replay(dir)) => {
            launch_replaying(runtime, agent_file, &given, recording, dir).await
        }
        _ => launch(runtime, agent_file, &given).await,
    };
    let (_, agent) = launched.map_err(|e| e.to_string())?;
    let replayed = recording.map(|recording| {
        let agent_text = std::fs::read(agent_file).unwrap_or_default();
        let now = Fingerprint::of(&agent_text, &agent.config().instructions, agent.tools());
        let changes = recording.about.fingerprint.changes(&now);
        (recording, changes)
    });
    let mut events = Vec::new();
    let mut sink = |event: &Event| events.push(serde_json::to_value(event).unwrap_or_default());
    let started = Instant::now();
    // The outcome is in the events (`run_finished`), which is what the checks read.
    let _ = agent.run(&task, &mut sink).await;
    Ok(Ran { events, duration: started.elapsed(), replayed })
}

/// A case's verdict from its runs.
fn judge(suite: &Suite, case: &Case, runs: Vec<Result<Ran, String>>) -> CaseReport {
    let (mode, pass_rate) = match case.model {
        CaseModel::Replay(_) => ("replay", 1.0),
        CaseModel::Live { pass_rate, .. } => ("live", pass_rate),
    };
    let mut report = CaseReport {
        suite: suite.file.clone(),
        case: case.name.clone(),
        mode,
        verdict: Verdict::Passed,
        runs: runs.len() as u32,
        passed: 0,
        pass_rate,
        steps: None,
        duration: Duration::ZERO,
        notes: Vec::new(),
    };
    let mut first_failures = None;
    for ran in runs {
        let ran = match ran {
            Ok(ran) => ran,
            Err(error) => {
                report.verdict = Verdict::Error(error);
                return report;
            }
        };
        report.duration = report.duration.max(ran.duration);
        if report.steps.is_none() {
            report.steps =
                ran.events.iter().rev().find(|e| e["event"] == "run_finished").and_then(|e| e["steps"].as_u64());
        }
        let mut failures = check(&case.expect, &ran.events);
        if let Some((recording, changes)) = &ran.replayed {
            match divergence(&recording.events, &ran.events) {
                Some(parted) if !changes.is_empty() => {
                    let CaseModel::Replay(dir) = &case.model else { continue };
                    report.verdict = Verdict::Stale {
                        why: format!(
                            "the recording is stale: since it was made, {}; and the replay parted from it at {parted}",
                            changes.join(", ")
                        ),
                        rerecord: recording.rerecord_command(dir, &suite.agent),
                    };
                    return report;
                }
                Some(parted) => failures.insert(
                    0,
                    Failure {
                        check: "replay".into(),
                        message: format!(
                            "the replay parted from the recording at {parted}; the agent file and the tools' \
                             declarations are as recorded, so a tool now behaves differently (a regression, or a \
                             change to record again)"
                        ),
                        event: Some((
                            parted.index + 1,
                            event_name(parted.replayed.as_ref().or(parted.recorded.as_ref())),
                        )),
                        step: parted.step(),
                    },
                ),
                None if !changes.is_empty() => report
                    .notes
                    .push(format!("recorded before {}; the replay still matches the recording", changes.join(", "))),
                None => {}
            }
        }
        if failures.is_empty() {
            report.passed += 1;
        } else if first_failures.is_none() {
            first_failures = Some(failures);
        }
    }
    let rate = f64::from(report.passed) / f64::from(report.runs.max(1));
    if report.runs > 1 {
        report.notes.insert(0, format!("{}/{} runs passed ({:.0}%)", report.passed, report.runs, rate * 100.0));
    }
    if rate + 1e-9 < pass_rate {
        let mut failures = first_failures.unwrap_or_default();
        if report.runs > 1 {
            failures.insert(
                0,
                Failure {
                    check: "pass_rate".into(),
                    message: format!(
                        "{}/{} runs passed ({:.0}%), {:.0}% required; the first failing run:",
                        report.passed,
                        report.runs,
                        rate * 100.0,
                        pass_rate * 100.0
                    ),
                    event: None,
                    step: None,
                },
            );
        }
        report.verdict = Verdict::Failed(failures);
    }
    report
}

fn event_name(event: Option<&Value>) -> String {
    event.and_then(|e| e["event"].as_str()).unwrap_or("end of the run").to_string()
}

/// Each run's events as JSON lines, under `dir/SUITE/CASE[.N].jsonl`.
fn write_events(dir: &Path, suite: &Suite, case: &Case, runs: &[Result<Ran, String>]) {
    let stem = suite
        .file
        .file_name()
        .map_or("suite".into(), |n| n.to_string_lossy().trim_end_matches(".test.yaml").to_string());
    let folder = dir.join(stem);
    if std::fs::create_dir_all(&folder).is_err() {
        return;
    }
    let name: String =
        case.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    for (n, ran) in runs.iter().enumerate() {
        let Ok(ran) = ran else { continue };
        let file = if runs.len() == 1 { format!("{name}.jsonl") } else { format!("{name}.{}.jsonl", n + 1) };
        let text: String = ran.events.iter().map(|e| format!("{e}\n")).collect();
        if let Err(e) = std::fs::write(folder.join(&file), text) {
            eprintln!("reagent: cannot write {}: {e}", folder.join(file).display());
        }
    }
}
