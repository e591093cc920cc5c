//! The loop's view of a durable record: what it writes before and after each thing that cannot be
//! undone or redone for free, so that a run stopped anywhere (a crash, a shutdown) goes on from
//! where it was without asking the model twice or running a side effect twice.
//!
//! - Every model reply is recorded under its turn number before the loop acts on it (at the
//!   latest with the checkpoint that decides on its calls); a resumed run gets the recorded reply
//!   instead of asking again.
//! - A call is recorded as started before its tool runs (with the checkpoint that decided on it),
//!   and its outcome after (a turn's only call: with the next checkpoint). On resume, a finished
//!   call is not run again; one that started and never finished runs again if its tool is `pure`
//!   or `idempotent`, and is *in doubt* if it has side effects: a person decides.
//! - At each turn boundary the loop hands over a `Checkpoint`; the events emitted since the last
//!   one are committed with it.

use async_trait::async_trait;

use super::Checkpoint;
use crate::conversation::ToolCall;
use crate::model::ModelReply;
use crate::toolbox::{Effect, ToolOutcome};

/// What the journal knows of a call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallRecord {
    NotStarted,
    /// Recorded as started by this run's last checkpoint, to run now.
    Started,
    /// Started and never confirmed: the process stopped while the tool ran, or before its result
    /// was recorded.
    Unfinished,
    Finished(ToolOutcome),
}

/// Why a run stops before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Someone cancelled it: it ends as `cancelled`.
    Cancelled,
    /// The process is shutting down: the run stays resumable from its last checkpoint.
    ShuttingDown,
    /// The journal could not record: the run stays resumable from its last checkpoint.
    JournalFailed(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Cancelled => f.write_str("cancelled"),
            Stop::ShuttingDown => f.write_str("the process is shutting down; resumable"),
            Stop::JournalFailed(why) => write!(f, "{why}; resumable from its last commit"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JournalError(pub String);

/// Where a durable run records its progress. Without one, a run lives in memory only.
#[async_trait]
pub trait Journal: Send + Sync {
    /// The run's id: what its calls' idempotency keys start with.
    fn run_id(&self) -> &str;

    /// The reply recorded for model turn `turn` (counted from 1 over the whole run).
    async fn recorded_reply(&self, turn: u32) -> Result<Option<ModelReply>, JournalError>;

    /// Records a reply; the record may wait for the next commit, since nothing irreversible
    /// happens before one (calls run only after the checkpoint that decides on them).
    async fn record_reply(&self, turn: u32, reply: &ModelReply) -> Result<(), JournalError>;

    async fn call(&self, id: &str) -> Result<CallRecord, JournalError>;

    /// Recorded before the tool runs; with `Effect::SideEffect` the record must be durable
    /// before this returns.
    async fn call_started(&self, call: &ToolCall, effect: Effect) -> Result<(), JournalError>;

    /// Records a call's outcome: at once, or with the next checkpoint (`with_checkpoint`, for a
    /// turn's only call, whose checkpoint follows with nothing run between).
    async fn call_finished(&self, id: &str, outcome: &ToolOutcome, with_checkpoint: bool) -> Result<(), JournalError>;

    /// The run is at a turn boundary: commits the checkpoint with the events emitted since the
    /// last commit, and records `starting` (the calls about to run, with their effects) as
    /// started.
    async fn checkpoint(&self, checkpoint: &Checkpoint, starting: &[(&ToolCall, Effect)]) -> Result<(), JournalError>;

    /// Whether the run should stop at this turn boundary.
    fn stop_requested(&self) -> Option<Stop>;
}
