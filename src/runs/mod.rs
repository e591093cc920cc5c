//! Durable runs: every run recorded in the run store before it starts, journalled as it goes
//! (`journal`), and driven to its end or its next stop by whichever process claims it. A run is
//! resumed under the agent files it started with (its snapshot), never under files edited since.
//!
//! The CLI and the server both go through `Runs`; neither touches the loop or the store's
//! journal directly.

pub(crate) mod crash;
mod journal;
mod record;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::context::FutureExt;
use reagent_store::{Commit, Created, NewRun, Queue, Run, RunStore, Status, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::agent_loop::{Approver, Checkpoint, RunOutcome, Stop, Verdict};
use crate::conversation::ToolCall;
use crate::launch::{LaunchError, bind, launch_from};
use crate::runtime::Runtime;
use crate::spec::{GivenInputs, Snapshot, Sources};
use crate::trace_context::TraceHeaders;

pub use journal::{Control, Listener};
pub use worker::Worker;

/// How long a claim on a run lasts without renewal, unless `with_lease` says otherwise; renewed
/// every third of it.
pub const LEASE: Duration = Duration::from_secs(30);

/// What a run is bound to: the agent file, the text of every file it was read from, the inputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bound {
    file: PathBuf,
    snapshot: Snapshot,
    /// The trace of the request that submitted it, which its first part continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<TraceHeaders>,
}

/// A run to record.
pub struct Submission<'a> {
    pub file: &'a Path,
    pub task: &'a str,
    pub inputs: &'a GivenInputs,
    pub tenant: &'a str,
    /// The submitting API key's id and its limit of unfinished runs.
    pub key: Option<(String, u32)>,
    /// `Idempotency-Key` and a digest of the request.
    pub idempotency: Option<(String, String)>,
    /// Where the run's final state is delivered, checked by the caller (`webhooks::Webhooks::check`).
    pub callback_url: Option<String>,
    /// The submitting request's trace (`traceparent`), which the run's span continues.
    pub trace: Option<TraceHeaders>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    #[error("{0}")]
    Launch(#[from] LaunchError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("run {0} was saved by another version of reagent and cannot be read: {1}")]
    Unreadable(String, String),
    /// The run's journal could not record (the store failed, or refused a write this process
    /// may no longer make): the run stays resumable from its last commit.
    #[error("the run's journal: {0}")]
    Journal(String),
    #[error("there is no run {0} in the store; `reagent runs list` shows them")]
    NoSuchRun(String),
    /// The run cannot be made into a recording: why.
    #[error("run {0} cannot be recorded: {1}")]
    NotRecordable(String, String),
}

/// Where a drive left the run.
pub struct Driven {
    pub run: Run,
    /// How the loop ended this time (`None` when the run was final already, or waits and nothing
    /// was decided).
    pub outcome: Option<Result<RunOutcome, crate::model::ModelError>>,
    /// Files of the run's agent edited on disk since it started: it ran under its snapshot.
    pub changed: Vec<PathBuf>,
}

/// What `drive_claimed` did: the loop's outcome, the agent's files edited since the run started,
/// and whether the run's last commit let go of the claim.
struct Drove {
    outcome: Option<Result<RunOutcome, crate::model::ModelError>>,
    changed: Vec<PathBuf>,
    released: bool,
}

/// The runs of one store, driven on one runtime by one owner (this process).
#[derive(Clone)]
pub struct Runs {
    store: Arc<dyn RunStore>,
    runtime: Runtime,
    owner: String,
    lease: Duration,
    /// The runs this process drives now, with their stop switches.
    driving: Arc<Mutex<HashMap<String, Arc<Control>>>>,
}

impl Runs {
    pub fn new(store: Arc<dyn RunStore>, runtime: Runtime) -> Self {
        Runs { store, runtime, owner: reagent_store::owner_id(), lease: LEASE, driving: Arc::default() }
    }

    /// The same, holding each claim for `lease` without renewal: how long a run whose process
    /// died waits before another takes it over.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub fn store(&self) -> &Arc<dyn RunStore> {
        &self.store
    }

    /// The runtime its runs are driven on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Records a run of the agent in `file`, after checking that the file reads and the inputs
    /// fit it (a run that could not start is refused, not recorded; one whose tools or model fail
    /// to load ends `failed`). The run is committed, `queued`, when this returns.
    pub async fn submit(&self, submission: Submission<'_>) -> Result<Created, RunsError> {
        let file = std::path::absolute(submission.file).unwrap_or_else(|_| submission.file.to_path_buf());
        let sources = Sources::disk();
        let spec = bind(&sources, &file, submission.inputs)?;
        let bound = Bound { file, snapshot: sources.snapshot(), trace: submission.trace };
        let run = NewRun {
            tenant: submission.tenant.to_string(),
            agent: spec.name,
            snapshot: serde_json::to_value(&bound).unwrap_or(Value::Null),
            task: submission.task.to_string(),
            inputs: serde_json::to_value(submission.inputs).unwrap_or(Value::Null),
            idempotency: submission.idempotency,
            key: submission.key,
            callback_url: submission.callback_url,
        };
        Ok(self.store.create(run).await?)
    }

    /// `reagent validate`'s checks of the agent in `file`, on this runtime: its files, its model
    /// (present, or its key set), its tools.
    pub async fn validate(&self, file: &Path) -> Result<(), LaunchError> {
        crate::launch::validate(&self.runtime, file).await.map(drop)
    }

    /// Asks a run to stop at its next safe point: at once if this process drives it, else when its
    /// driver next looks; a run that waits for a person is cancelled by its next drive.
    pub async fn cancel(&self, id: &str) -> Result<Option<Run>, RunsError> {
        if let Some(control) = self.driving.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            control.cancel();
        }
        Ok(self.store.request_cancel(id).await?)
    }

    /// Asks every run this process drives to stop at its next turn boundary, resumable.
    pub fn shut_down(&self) {
        for control in self.driving.lock().unwrap_or_else(|p| p.into_inner()).values() {
            control.shut_down();
        }
    }

    /// Claims the run and drives it from where it is (its start, its last checkpoint) to its end
    /// or its next stop, with the decisions recorded for it. `listener` hears each event after it
    /// is committed.
    /// An `approver` decides on calls that need approval as they come; without one they pause the
    /// run.
    pub async fn drive(
        &self,
        id: &str,
        listener: Listener,
        approver: Option<Box<dyn Approver>>,
    ) -> Result<Driven, RunsError> {
        let run = self.claim(id).await?.ok_or_else(|| StoreError::NoSuchRun(id.into()))?;
        self.drive_taken(run, listener, approver).await
    }

    /// Claims run `id` for this process (`None`: no such run), to be driven with `drive_taken`.
    pub async fn claim(&self, id: &str) -> Result<Option<Run>, RunsError> {
        Ok(self.store.claim(id, &self.owner, self.lease).await?)
    }

    /// Claims the next run from the store's queue (see `RunStore::claim_next`), to be driven with
    /// `drive_taken`.
    pub async fn claim_next(&self, queue: &Queue) -> Result<Option<Run>, RunsError> {
        Ok(self.store.claim_next(&self.owner, self.lease, queue).await?)
    }

    /// `drive`, for a run this process has claimed already.
    pub async fn drive_taken(
        &self,
        run: Run,
        listener: Listener,
        approver: Option<Box<dyn Approver>>,
    ) -> Result<Driven, RunsError> {
        let id = run.id.clone();
        let id = id.as_str();
        let control = Arc::new(Control::default());
        self.driving.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), control.clone());
        let heartbeat = tokio::spawn(keep_claim(
            self.store.clone(),
            id.to_string(),
            self.owner.clone(),
            self.lease,
            control.clone(),
        ));
        let driven = self.drive_claimed(run, listener, approver, control.clone()).await;
        heartbeat.abort();
        {
            let mut driving = self.driving.lock().unwrap_or_else(|p| p.into_inner());
            // Another drive of the run may have begun since this one let go of it: its control stays.
            if driving.get(id).is_some_and(|current| Arc::ptr_eq(current, &control)) {
                driving.remove(id);
            }
        }
        if !matches!(driven, Ok(Drove { released: true, .. })) {
            let _ = self.store.release(id, &self.owner).await;
        }
        let Drove { outcome, changed, .. } = driven?;
        let run = self.store.get(id).await?.ok_or_else(|| StoreError::NoSuchRun(id.into()))?;
        Ok(Driven { run, outcome, changed })
    }

    async fn drive_claimed(
        &self,
        run: Run,
        listener: Listener,
        approver: Option<Box<dyn Approver>>,
        control: Arc<Control>,
    ) -> Result<Drove, RunsError> {
        if run.status.is_final() {
            return Ok(Drove { outcome: None, changed: Vec::new(), released: false });
        }
        let unreadable = |e: serde_json::Error| RunsError::Unreadable(run.id.clone(), e.to_string());
        let bound: Bound = serde_json::from_value(run.snapshot.clone()).map_err(unreadable)?;
        let inputs: GivenInputs = serde_json::from_value(run.inputs.clone()).map_err(unreadable)?;
        let checkpoint: Option<Checkpoint> =
            run.checkpoint.clone().map(serde_json::from_value).transpose().map_err(unreadable)?;
        let changed = bound.snapshot.changed_on_disk();
        // Decisions are made on a run that waits, which has a checkpoint.
        let decisions = if checkpoint.is_some() { self.store.decisions(&run.id).await? } else { Vec::new() };
        let verdicts: HashMap<String, Verdict> =
            decisions.iter().filter_map(|d| verdict(d).map(|v| (d.call_id.clone(), v))).collect();
        if run.cancel_requested {
            control.cancel();
        }
        if run.status.is_waiting() && verdicts.is_empty() && !run.cancel_requested {
            return Ok(Drove { outcome: None, changed, released: false });
        }
        if checkpoint.is_some() {
            crash::point("resume");
        }
        let sources = Sources::pinned(bound.snapshot);
        let mut agent = match launch_from(&self.runtime, &sources, &bound.file, &inputs).await {
            Ok((_, agent)) => agent,
            Err(error) => {
                // It cannot start under its own agent files: it ends, saying why.
                let outcome = json!({"message": error.to_string()});
                let commit =
                    Commit { status: Some(Status::Failed), outcome: Some(outcome), release: true, ..Commit::default() };
                self.store.commit(&run.id, &self.owner, commit).await?;
                return Err(error.into());
            }
        };
        let used = decisions.into_iter().map(|d| d.call_id).collect();
        let fresh = checkpoint.is_none();
        let (journal, mut sink) =
            journal::StoreJournal::open(self.store.clone(), &run.id, &self.owner, listener, control, used, fresh)
                .await
                .map_err(|e| RunsError::Journal(e.0))?;
        let journal = Arc::new(journal);
        agent.set_journal(journal.clone());
        if let Some(approver) = approver {
            agent.set_approver(approver);
        }
        // A first part continues its submitter's trace; a resumed one starts its own, linked to
        // the first (the loop keeps that link in the checkpoint).
        let outcome = match checkpoint {
            None => {
                let parent = bound.trace.as_ref().map_or_else(opentelemetry::Context::new, TraceHeaders::parent);
                agent.run(&run.task, &mut sink).with_context(parent).await
            }
            Some(checkpoint) => {
                agent.resume(checkpoint, &verdicts, &mut sink).with_context(opentelemetry::Context::new()).await
            }
        };
        let (outcome, released) = match ending(&outcome) {
            Some((status, summary, checkpoint)) => {
                journal.finish(status, summary, checkpoint).await.map_err(|e| RunsError::Journal(e.0))?;
                (outcome, true)
            }
            // Stopped short: what was written behind it lands before the claim is let go.
            None => match (journal.settle().await, outcome) {
                (Err(error), Ok(RunOutcome::Stopped { steps, .. })) => {
                    (Ok(RunOutcome::Stopped { stop: Stop::JournalFailed(error.0), steps }), false)
                }
                (settled, outcome) => (outcome, settled.is_ok()),
            },
        };
        Ok(Drove { outcome: Some(outcome), changed, released })
    }
}

/// Renews the claim while the run is driven, and hears of a cancel asked by another process.
async fn keep_claim(store: Arc<dyn RunStore>, id: String, owner: String, lease: Duration, control: Arc<Control>) {
    let mut tick = tokio::time::interval((lease / 6).min(Duration::from_secs(1)));
    let mut renewed = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if let Ok(true) = store.cancel_requested(&id).await {
            control.cancel();
        }
        if renewed.elapsed() >= lease / 3 {
            if !matches!(store.renew(&id, &owner, lease).await, Ok(true)) {
                // Lost: the journal's fenced writes now fail, and the run stops where it committed.
                control.lost_claim();
            }
            renewed = tokio::time::Instant::now();
        }
    }
}

/// The calls a stored run's checkpoint waits for.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Waiting {
    /// For a person's approval.
    pub awaiting: Vec<ToolCall>,
    /// For a person's retry, done or skip.
    pub in_doubt: Vec<ToolCall>,
}

impl Waiting {
    /// The ids of the calls in `list`.
    pub fn ids(list: &[ToolCall]) -> Vec<String> {
        list.iter().map(|call| call.id.clone()).collect()
    }
}

/// What the run's last checkpoint waits for, whatever the run's status; `None` without a
/// readable checkpoint.
pub fn waiting(run: &Run) -> Option<Waiting> {
    let checkpoint: Checkpoint = serde_json::from_value(run.checkpoint.clone()?).ok()?;
    let owned = |calls: Vec<&ToolCall>| calls.into_iter().cloned().collect();
    Some(Waiting { awaiting: owned(checkpoint.awaiting()), in_doubt: owned(checkpoint.in_doubt()) })
}

fn verdict(decision: &reagent_store::Decision) -> Option<Verdict> {
    match decision.verdict.as_str() {
        "approve" => Some(Verdict::Approve),
        "deny" => Some(Verdict::Deny),
        "retry" => Some(Verdict::Retry),
        "done" => Some(Verdict::Done(decision.result.clone().unwrap_or(Value::Null))),
        "skip" => Some(Verdict::Skip),
        _ => None,
    }
}

/// The status, summary and (for a pause) checkpoint a run ends with; `None` when it stopped
/// short and stays resumable from its last checkpoint.
fn ending(outcome: &Result<RunOutcome, crate::model::ModelError>) -> Option<(Status, Value, Option<Checkpoint>)> {
    let done = |status, summary| Some((status, summary, None));
    match outcome {
        Ok(RunOutcome::Answered { answer, output, steps }) => {
            done(Status::Answered, json!({"answer": answer, "output": output, "steps": steps}))
        }
        Ok(RunOutcome::Paused(checkpoint)) => {
            let status = if checkpoint.in_doubt().is_empty() { Status::Paused } else { Status::InDoubt };
            let summary = json!({
                "awaiting": checkpoint.awaiting(),
                "in_doubt": checkpoint.in_doubt(),
                "steps": checkpoint.steps(),
            });
            Some((status, summary, Some(Checkpoint::clone(checkpoint))))
        }
        Ok(RunOutcome::InvalidOutput { answer, errors, steps }) => {
            done(Status::InvalidOutput, json!({"answer": answer, "errors": errors, "steps": steps}))
        }
        Ok(RunOutcome::Incomplete { budget, answer, steps }) => {
            done(Status::Incomplete, json!({"budget": budget.key(), "answer": answer, "steps": steps}))
        }
        Ok(RunOutcome::Looped { steps, tool }) => done(Status::Loop, json!({"tool": tool, "steps": steps})),
        Ok(RunOutcome::Stopped { stop: Stop::Cancelled, steps }) => done(Status::Cancelled, json!({"steps": steps})),
        Ok(RunOutcome::Stopped { .. }) => None,
        Err(error) => done(Status::ModelFailed, json!({"message": error.message, "kind": error.kind})),
    }
}
