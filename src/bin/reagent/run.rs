//! `reagent run` and `reagent resume`: a run's events on stderr (or JSON on stdout), its answer
//! on stdout, its outcome as the exit code. A run that waits for approval without a terminal to
//! ask on is saved, to be resumed with the decision.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use async_trait::async_trait;
use reagent::agent_loop::{Agent, Approver, Checkpoint, Decision, RunOutcome};
use reagent::conversation::ToolCall;
use reagent::events::Event;
use reagent::launch::launch;
use reagent::model::ModelError;
use reagent::runtime::Runtime;
use reagent::spec::{Budget, GivenInputs};
use serde::{Deserialize, Serialize};

use crate::inputs::InputArgs;
use crate::{Exit, fail, human, launch_failure};

/// What `reagent resume` reads: the agent file, the inputs it was given, where the run stopped.
#[derive(Serialize, Deserialize)]
struct PausedRun {
    agent: PathBuf,
    inputs: GivenInputs,
    checkpoint: Checkpoint,
}

pub async fn run(
    runtime: &Runtime,
    file: &Path,
    task: &str,
    inputs: &InputArgs,
    json: bool,
    output_file: Option<&Path>,
) -> ExitCode {
    let given = match inputs.given() {
        Ok(given) => given,
        Err(e) => return fail(Exit::Usage, &e),
    };
    let mut agent = match launch(runtime, file, &given).await {
        Ok((_, agent)) => agent,
        Err(e) => return launch_failure(&e),
    };
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        agent.set_approver(Box::new(TerminalApprover));
    }
    let outcome = agent.run(task, &mut sink(json)).await;
    report(outcome, file, given, json, output_file)
}

pub async fn resume(
    runtime: &Runtime,
    state: &Path,
    approve: bool,
    json: bool,
    output_file: Option<&Path>,
) -> ExitCode {
    let paused: PausedRun = match std::fs::read_to_string(state)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
    {
        Ok(paused) => paused,
        Err(e) => return fail(Exit::Usage, &format!("cannot read the paused run {}: {e}", state.display())),
    };
    let agent: Agent = match launch(runtime, &paused.agent, &paused.inputs).await {
        Ok((_, agent)) => agent,
        Err(e) => return launch_failure(&e),
    };
    let decisions: HashMap<String, bool> =
        paused.checkpoint.awaiting().iter().map(|call| (call.id.clone(), approve)).collect();
    let outcome = agent.resume(paused.checkpoint, &decisions, &mut sink(json)).await;
    // The decision is taken: the saved run must not be resumed twice.
    let _ = std::fs::remove_file(state);
    report(outcome, &paused.agent, paused.inputs, json, output_file)
}

fn sink(json: bool) -> impl FnMut(&Event) + Send {
    let mut human = human::Printer::new();
    move |event: &Event| {
        if json {
            // A closed stdout (e.g. piped into `head`) must not crash the run.
            let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(event).unwrap_or_default());
        } else {
            human.print(event);
        }
    }
}

/// The outcome as output and exit code.
fn report(
    outcome: Result<RunOutcome, ModelError>,
    file: &Path,
    inputs: GivenInputs,
    json: bool,
    output_file: Option<&Path>,
) -> ExitCode {
    let print = |answer: &str| {
        if !json {
            let _ = writeln!(std::io::stdout(), "{answer}");
        }
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
        Ok(RunOutcome::Paused(checkpoint)) => {
            let agent = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
            let paused = PausedRun { agent, inputs, checkpoint: *checkpoint };
            match save(&paused) {
                Ok(state) => fail(
                    Exit::Paused,
                    &format!(
                        "paused: a call waits for approval; continue with `reagent resume {0} --approve` (or `--deny`)",
                        state.display()
                    ),
                ),
                Err(e) => fail(Exit::Internal, &format!("paused for approval, but the run cannot be saved: {e}")),
            }
        }
        Ok(RunOutcome::InvalidOutput { errors, .. }) => fail(
            Exit::InvalidOutput,
            &format!(
                "the answer does not match output.schema in {}, even after a repair turn: {}",
                file.display(),
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
            fail(
                code,
                &format!("incomplete: limits.{key} ran out and {given}; raise limits.{key} in {}", file.display()),
            )
        }
        Ok(RunOutcome::Looped { tool, .. }) => fail(
            Exit::Looped,
            &format!(
                "stopped: the agent kept calling `{tool}` with the same arguments; it was told the result would not change"
            ),
        ),
        Err(e) => fail(Exit::ModelFailed, &format!("the model failed: {e}")),
    }
}

/// Saves a paused run under `$REAGENT_CACHE_DIR/runs` (else `~/.cache/reagent/runs`).
fn save(paused: &PausedRun) -> std::io::Result<PathBuf> {
    let base = reagent::cache_dir().ok_or_else(|| std::io::Error::other("set REAGENT_CACHE_DIR or HOME"))?;
    let dir = base.join("runs");
    std::fs::create_dir_all(&dir)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let path = dir.join(format!("paused-{}-{}.json", stamp.as_millis(), std::process::id()));
    let text = serde_json::to_string_pretty(paused).map_err(std::io::Error::other)?;
    write_whole(&path, &text)?;
    Ok(path)
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
    async fn decide(&self, _step: u32, call: &ToolCall) -> Decision {
        let question = format!("approve  │ {} {}? [y/N] ", call.name, call.arguments);
        let answer = tokio::task::spawn_blocking(move || {
            eprint!("{question}");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map(|_| line)
        })
        .await;
        match answer {
            Ok(Ok(line)) if matches!(line.trim(), "y" | "Y" | "yes") => Decision::Approve,
            Ok(Ok(_)) => Decision::Deny,
            // No answer can be read: keep the run for later rather than guess.
            _ => Decision::Pause,
        }
    }
}
