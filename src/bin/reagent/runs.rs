//! `reagent runs …`: the runs in the run store: list them, show one, read its events, resume,
//! cancel, and decide on the calls a run waits for.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use reagent::runs::{Runs, Waiting, waiting};
use reagent_store::{Decision, RunFilter, Status};
use serde_json::{Value, json};

use crate::run::{drive, runs_failure};
use crate::{EXIT_CODES, Exit, fail};

#[derive(Subcommand)]
pub enum RunsCommand {
    /// The newest runs first, one per line: id, status, agent, task.
    List {
        /// Only runs with this status (queued, running, paused, in_doubt, answered, incomplete,
        /// model_failed, loop, invalid_output, cancelled, failed)
        #[arg(long)]
        status: Option<String>,
        /// Only runs of the agent with this name
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// A run as JSON: status, task, inputs, outcome, and the calls it waits for.
    Show { run: String },
    /// A run's committed events, one JSON object per line with its `seq`.
    Events {
        run: String,
        /// Only events after this seq
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Drive a run on from where it stopped (a crash, a shutdown, decisions made): the same
    /// output and exit codes as `reagent run`.
    #[command(after_help = EXIT_CODES)]
    Resume {
        run: String,
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Record a finished run into DIR, as `reagent run --record` does: to replay it as a test.
    /// A run on a server is recorded from the server's store (`--db`).
    Record { run: String, dir: PathBuf },
    /// Ask a run to stop at its next safe point; it ends `cancelled`. Cancelling twice is harmless.
    Cancel { run: String },
    /// Let calls that wait for approval run (all of them without CALL ids); then `runs resume`.
    Approve { run: String, calls: Vec<String> },
    /// Refuse calls that wait for approval (all of them without CALL ids); then `runs resume`.
    Deny { run: String, calls: Vec<String> },
    /// Decide on a call in doubt (its side effect may or may not have happened): `retry` runs it
    /// again, `done` takes it as having happened (with `--result`, fed back as its result),
    /// `skip` goes on without it. Then `runs resume`.
    Decide {
        run: String,
        call: String,
        #[arg(value_parser = ["retry", "done", "skip"])]
        verdict: String,
        /// With `done`: the call's result, as JSON
        #[arg(long)]
        result: Option<String>,
    },
}

pub async fn run(runs: &Runs, command: RunsCommand) -> ExitCode {
    let store = runs.store();
    let result = match command {
        RunsCommand::List { status, agent, limit } => {
            let status = match status.as_deref().map(|s| Status::parse(s).ok_or(s)).transpose() {
                Ok(status) => status,
                Err(s) => return fail(Exit::Usage, &format!("--status {s}: not a run status; see --help")),
            };
            let filter = RunFilter { status, agent, limit, ..RunFilter::default() };
            store.list(&filter).await.map(|list| {
                let mut out = std::io::stdout();
                for run in list {
                    let task: String = run.task.chars().take(60).collect();
                    let _ = writeln!(out, "{}  {:<14} {:<16} {task}", run.id, run.status.as_str(), run.agent);
                }
                ExitCode::from(Exit::Success as u8)
            })
        }
        RunsCommand::Show { run } => match store.get(&run).await {
            Ok(Some(found)) => {
                let waiting = serde_json::to_value(waiting(&found)).unwrap_or(Value::Null);
                let mut shown = serde_json::to_value(&found).unwrap_or(Value::Null);
                shown["waiting"] = waiting;
                let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&shown).unwrap_or_default());
                Ok(ExitCode::from(Exit::Success as u8))
            }
            Ok(None) => return no_such_run(&run),
            Err(e) => Err(e),
        },
        RunsCommand::Events { run, after } => store.events(&run, after, u32::MAX).await.map(|events| {
            let mut out = std::io::stdout();
            for event in events {
                let mut body = event.body;
                body["seq"] = json!(event.seq);
                let _ = writeln!(out, "{body}");
            }
            ExitCode::from(Exit::Success as u8)
        }),
        RunsCommand::Resume { run, json, output } => return drive(runs, &run, json, output.as_deref()).await,
        RunsCommand::Record { run, dir } => {
            return match crate::run::record(runs, &run, &dir).await {
                Ok(()) => ExitCode::from(Exit::Success as u8),
                Err(code) => code,
            };
        }
        RunsCommand::Cancel { run } => match runs.cancel(&run).await {
            Ok(Some(found)) => {
                eprintln!("run {}: cancel requested (it is {} now)", found.id, found.status);
                return ExitCode::from(Exit::Success as u8);
            }
            Ok(None) => return no_such_run(&run),
            Err(e) => return runs_failure(&e),
        },
        RunsCommand::Approve { run, calls } => return decide_all(runs, &run, calls, "approve").await,
        RunsCommand::Deny { run, calls } => return decide_all(runs, &run, calls, "deny").await,
        RunsCommand::Decide { run, call, verdict, result } => {
            let result = match result.map(|r| serde_json::from_str::<Value>(&r)).transpose() {
                Ok(result) => result,
                Err(e) => return fail(Exit::Usage, &format!("--result is not JSON: {e}")),
            };
            let decision = Decision { call_id: call, verdict, result, made_by: "cli".into() };
            return record(runs, &run, vec![decision], "in_doubt").await;
        }
    };
    result.unwrap_or_else(|e| fail(Exit::Internal, &e.to_string()))
}

/// Approves or denies the given calls, or every call the run awaits approval for.
async fn decide_all(runs: &Runs, id: &str, calls: Vec<String>, verdict: &str) -> ExitCode {
    let calls = if calls.is_empty() {
        match runs.store().get(id).await {
            Ok(Some(run)) => waiting(&run).map(|w| Waiting::ids(&w.awaiting)).unwrap_or_default(),
            Ok(None) => return no_such_run(id),
            Err(e) => return fail(Exit::Internal, &e.to_string()),
        }
    } else {
        calls
    };
    let decisions = calls
        .into_iter()
        .map(|call_id| Decision { call_id, verdict: verdict.into(), result: None, made_by: "cli".into() })
        .collect();
    record(runs, id, decisions, "awaiting").await
}

/// Records decisions on calls a run waits for (`list`: `awaiting` approval, or `in_doubt`).
async fn record(runs: &Runs, id: &str, decisions: Vec<Decision>, list: &str) -> ExitCode {
    let waits_as = if list == "awaiting" { "paused" } else { "in_doubt" };
    let run = match runs.store().get(id).await {
        Ok(Some(run)) => run,
        Ok(None) => return no_such_run(id),
        Err(e) => return fail(Exit::Internal, &e.to_string()),
    };
    // A run with some decisions recorded is queued to go on; it still waits for the calls it
    // has no decision on.
    let waiting = waiting(&run).unwrap_or_default();
    let known = Waiting::ids(if list == "awaiting" { &waiting.awaiting } else { &waiting.in_doubt });
    let takes_decisions = run.status.as_str() == waits_as || run.status == Status::Queued;
    if let Some(unknown) = decisions.iter().find(|d| !takes_decisions || !known.contains(&d.call_id)) {
        let message = format!(
            "run {id} is {} and has no call {} {}: see `reagent runs show {id}`",
            run.status,
            unknown.call_id,
            waits_as.replace('_', " ")
        );
        return fail(Exit::Usage, &message);
    }
    if decisions.is_empty() {
        return fail(Exit::Usage, &format!("run {id} waits for no call"));
    }
    let calls: Vec<String> = decisions.iter().map(|d| format!("{} ({})", d.call_id, d.verdict)).collect();
    if let Err(e) = runs.store().decide(id, &decisions).await {
        return fail(Exit::Internal, &e.to_string());
    }
    eprintln!("run {id}: recorded {}; continue with `reagent runs resume {id}`", calls.join(", "));
    ExitCode::from(Exit::Success as u8)
}

fn no_such_run(id: &str) -> ExitCode {
    fail(Exit::Usage, &format!("there is no run {id} in the store; `reagent runs list` shows them"))
}
