//! `reagent run` and `reagent resume`: a run recorded in the run store (its id on stderr), its
//! events on stderr (or JSON on stdout) as they are committed, its answer on stdout, its outcome
//! as the exit code. A run that waits for a person stays in the store, to be resumed with the
//! decision.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use async_trait::async_trait;
use reagent::agent_loop::{Approver, Decision as Approval, RunOutcome, Stop};
use reagent::conversation::ToolCall;
use reagent::events::Event;
use reagent::runs::{Driven, Listener, Runs, RunsError, Submission, Waiting, waiting};
use reagent::spec::Budget;
use reagent::trace_context::TraceHeaders;
use reagent_store::{Created, Decision, Status};

use crate::inputs::InputArgs;
use crate::{Exit, fail, launch_failure};

/// Where a run's results go besides stderr.
pub struct Outputs<'a> {
    /// Events as JSON lines on stdout.
    pub json: bool,
    /// The answer, also into this file.
    pub output: Option<&'a Path>,
    /// A recording of the run, into this folder.
    pub record: Option<&'a Path>,
}

pub async fn run(runs: &Runs, file: &Path, task: &str, inputs: &InputArgs, outputs: Outputs<'_>) -> ExitCode {
    let given = match inputs.given() {
        Ok(given) => given,
        Err(e) => return fail(Exit::Usage, &e),
    };
    // Everything that can be checked before a run is recorded is: a broken agent records none.
    if let Err(e) = runs.validate(file).await {
        return launch_failure(&e);
    }
    // A pipeline's step passes its trace the way CI systems and otel-cli do: in the environment.
    let trace = std::env::var("TRACEPARENT")
        .ok()
        .and_then(|parent| TraceHeaders::received(&parent, std::env::var("TRACESTATE").ok().as_deref()));
    let submission =
        Submission { file, task, inputs: &given, tenant: "", key: None, idempotency: None, callback_url: None, trace };
    let id = match runs.submit(submission).await {
        Ok(Created::New(run) | Created::Existing(run)) => run.id,
        Ok(Created::KeyReused | Created::OverLimit) => return fail(Exit::Internal, "the run store refused the run"),
        Err(e) => return runs_failure(&e),
    };
    eprintln!("run {id}");
    let code = drive(runs, &id, outputs.json, outputs.output).await;
    // A run that did not answer keeps its own exit code; the recording's failure is said.
    match outputs.record {
        Some(dir) => match record(runs, &id, dir).await {
            Err(failed) if code == ExitCode::SUCCESS => failed,
            _ => code,
        },
        None => code,
    }
}

/// Writes the recording of run `id` into `dir`.
pub(crate) async fn record(runs: &Runs, id: &str, dir: &Path) -> Result<(), ExitCode> {
    let mut recording = runs.record(id).await.map_err(|e| runs_failure(&e))?;
    // Named as from here, so that a recording committed beside its agent names it on any machine.
    if let Ok(here) = std::env::current_dir()
        && let Ok(relative) = recording.about.agent.strip_prefix(&here)
    {
        recording.about.agent = relative.to_path_buf();
    }
    recording
        .write(dir)
        .map_err(|e| fail(Exit::Internal, &format!("cannot write the recording into {}: {e}", dir.display())))?;
    eprintln!(
        "recorded run {id} into {} ({} model turn(s), {} events): replay it with a case `replay: {}` in a suite, \
         run by `reagent test`",
        dir.display(),
        recording.script.turns.len(),
        recording.events.len(),
        dir.display()
    );
    Ok(())
}

/// Drives a stored run from where it is, asking on the terminal for approvals when there is one.
pub async fn drive(runs: &Runs, id: &str, json: bool, output_file: Option<&Path>) -> ExitCode {
    let approver: Option<Box<dyn Approver>> = if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        Some(Box::new(TerminalApprover))
    } else {
        None
    };
    let driven = match runs.drive(id, sink(json), approver).await {
        Ok(driven) => driven,
        Err(e) => return runs_failure(&e),
    };
    for file in &driven.changed {
        eprintln!(
            "reagent: {} changed since run {id} started; the run goes on under the agent it started with",
            file.display()
        );
    }
    report(driven, json, output_file)
}

pub(crate) fn runs_failure(error: &RunsError) -> ExitCode {
    match error {
        RunsError::Launch(e) => launch_failure(e),
        RunsError::NoSuchRun(_) | RunsError::NotRecordable(..) => fail(Exit::Usage, &error.to_string()),
        RunsError::Store(reagent_store::StoreError::NotOwner { run, owner }) => fail(
            Exit::Busy,
            &format!("run {run} is being driven by another process ({owner}); wait for it, or cancel the run"),
        ),
        other => fail(Exit::Internal, &other.to_string()),
    }
}

/// `reagent resume RUN --approve|--deny`: a decision on every call the run awaits, then on.
pub async fn resume(runs: &Runs, id: &str, approve: bool, json: bool, output_file: Option<&Path>) -> ExitCode {
    let verdict = if approve { "approve" } else { "deny" };
    let run = match runs.store().get(id).await {
        Ok(Some(run)) => run,
        Ok(None) => {
            return fail(Exit::Usage, &format!("there is no run {id} in the store; `reagent runs list` shows them"));
        }
        Err(e) => return fail(Exit::Internal, &e.to_string()),
    };
    if run.status != Status::Paused {
        return fail(Exit::Usage, &format!("run {id} is {}, not paused for approval", run.status));
    }
    let awaiting = waiting(&run).map(|w| Waiting::ids(&w.awaiting)).unwrap_or_default();
    let decisions: Vec<Decision> = awaiting
        .into_iter()
        .map(|call_id| Decision { call_id, verdict: verdict.into(), result: None, made_by: "cli".into() })
        .collect();
    if let Err(e) = runs.store().decide(id, &decisions).await {
        return fail(Exit::Internal, &e.to_string());
    }
    drive(runs, id, json, output_file).await
}

/// Prints each committed event: one JSON object per line on stdout, or the human steps on stderr.
fn sink(json: bool) -> Listener {
    let mut human = crate::human::Printer::new();
    Box::new(move |_seq, event: &Event| {
        if json {
            // A closed stdout (e.g. piped into `head`) must not crash the run.
            let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(event).unwrap_or_default());
        } else {
            human.print(event);
        }
    })
}

/// The outcome as output and exit code.
fn report(driven: Driven, json: bool, output_file: Option<&Path>) -> ExitCode {
    let id = &driven.run.id;
    let print = |answer: &str| {
        if !json {
            let _ = writeln!(std::io::stdout(), "{answer}");
        }
    };
    let Some(outcome) = driven.outcome else {
        return match driven.run.status {
            status if status.is_waiting() => waits(id, status),
            status => fail(Exit::Usage, &format!("run {id} is {status} already; see `reagent runs show {id}`")),
        };
    };
    match outcome {
        Ok(RunOutcome::Answered { answer, output, .. }) => {
            print(&answer);
            if let Some(path) = output_file {
                let text = match output {
                    Some(value) => serde_json::to_string_pretty(&value).unwrap_or_default(),
                    None => answer,
                };
                if let Err(e) = write_whole(path, &text) {
                    return fail(Exit::Internal, &format!("cannot write --output {}: {e}", path.display()));
                }
            }
            ExitCode::from(Exit::Success as u8)
        }
        Ok(RunOutcome::Paused(_)) => waits(id, driven.run.status),
        Ok(RunOutcome::InvalidOutput { errors, .. }) => fail(
            Exit::InvalidOutput,
            &format!(
                "the answer of run {id} does not match output.schema, even after a repair turn: {}",
                errors.join("; ")
            ),
        ),
        Ok(RunOutcome::Incomplete { budget, answer, .. }) => {
            let code = match budget {
                Budget::MaxSteps => Exit::OutOfSteps,
                Budget::MaxToolCalls => Exit::OutOfToolCalls,
                Budget::MaxTokens => Exit::OutOfTokens,
                Budget::Timeout => Exit::OutOfTime,
            };
            let key = budget.key();
            let given = match answer {
                Some(answer) => {
                    print(&answer);
                    "the answer is the model's best from what it knew"
                }
                None => "the model gave no answer",
            };
            fail(code, &format!("incomplete: limits.{key} ran out and {given}; raise limits.{key} in the agent file"))
        }
        Ok(RunOutcome::Looped { tool, .. }) => fail(
            Exit::Looped,
            &format!(
                "stopped: the agent kept calling `{tool}` with the same arguments; it was told the result would not change"
            ),
        ),
        Ok(RunOutcome::Stopped { stop: Stop::Cancelled, .. }) => {
            fail(Exit::Cancelled, &format!("run {id} was cancelled"))
        }
        Ok(RunOutcome::Stopped { stop, .. }) => fail(
            Exit::Internal,
            &format!("run {id} stopped before its end ({stop:?}); continue it with `reagent runs resume {id}`"),
        ),
        Err(e) => fail(Exit::ModelFailed, &format!("the model failed: {e}")),
    }
}

/// A run that waits for a person: what to do next.
fn waits(id: &str, status: Status) -> ExitCode {
    match status {
        Status::InDoubt => fail(
            Exit::InDoubt,
            &format!(
                "in doubt: a call with side effects may or may not have happened before run {id} stopped; see \
                 `reagent runs show {id}`, then `reagent runs decide {id} CALL retry|done|skip`"
            ),
        ),
        _ => fail(
            Exit::Paused,
            &format!(
                "paused: a call of run {id} waits for approval; continue with `reagent resume {id} --approve` (or `--deny`)"
            ),
        ),
    }
}

/// Writes `text` to `path` whole or not at all: a reader never sees half an answer.
fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, format!("{text}\n"))?;
    std::fs::rename(&partial, path)
}

/// Asks on the terminal, y/N, for each call that needs approval.
struct TerminalApprover;

#[async_trait]
impl Approver for TerminalApprover {
    async fn decide(&self, _step: u32, call: &ToolCall) -> Approval {
        let question = format!("approve  │ {} {}? [y/N] ", call.name, call.arguments);
        let answer = tokio::task::spawn_blocking(move || {
            eprint!("{question}");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map(|_| line)
        })
        .await;
        match answer {
            Ok(Ok(line)) if matches!(line.trim(), "y" | "Y" | "yes") => Approval::Approve,
            Ok(Ok(_)) => Approval::Deny,
            // No answer can be read: keep the run for later rather than guess.
            _ => Approval::Pause,
        }
    }
}
