//! The loop's `Journal` on the run store: each record a transaction of the store, fenced by the
//! claim this process holds on the run. Events are buffered as the loop emits them and committed
//! with the next checkpoint (or the run's end); only then are they published.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use reagent_store::{CallEntry, Commit, RunStore, Status};
use serde_json::Value;

use crate::agent_loop::{CallRecord, Checkpoint, Journal, JournalError, Stop};
use crate::conversation::ToolCall;
use crate::events::{Event, EventSink};
use crate::model::ModelReply;
use crate::toolbox::{Effect, ToolOutcome};

/// Who hears a run's events once they are committed: (seq, event).
pub type Listener = Box<dyn FnMut(u64, &Event) + Send>;

/// A stop asked of a run from outside: a cancel, a shutdown.
#[derive(Debug, Default)]
pub struct Control {
    cancelled: AtomicBool,
    shutting_down: AtomicBool,
}

impl Control {
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    fn stop(&self) -> Option<Stop> {
        if self.cancelled.load(Ordering::SeqCst) {
            Some(Stop::Cancelled)
        } else if self.shutting_down.load(Ordering::SeqCst) {
            Some(Stop::ShuttingDown)
        } else {
            None
        }
    }
}

pub(super) struct StoreJournal {
    store: Arc<dyn RunStore>,
    run: String,
    owner: String,
    /// Emitted, not yet committed.
    buffer: Arc<Mutex<Vec<Event>>>,
    listener: Mutex<Listener>,
    /// What the journal held of each call when this process took the run, and since.
    calls: Mutex<HashMap<String, CallRecord>>,
    /// Replies recorded up to this turn before this process took the run: only those can be
    /// found; later turns are asked without a lookup.
    replies_before: u32,
    /// Records that wait for the next commit (replies, a turn's only result), and the decisions
    /// the run resumed with, to be marked used by it.
    waiting: Mutex<Commit>,
    control: Arc<Control>,
}

impl StoreJournal {
    pub(super) async fn open(
        store: Arc<dyn RunStore>,
        run: &str,
        owner: &str,
        listener: Listener,
        control: Arc<Control>,
        used_decisions: Vec<String>,
        fresh: bool,
    ) -> Result<(Self, Sink), JournalError> {
        // A run without a checkpoint has journalled nothing: replies and calls are committed with
        // checkpoints (or with the run's end).
        let mut calls = HashMap::new();
        let mut replies_before = 0;
        if !fresh {
            let entries = store.calls(run).await.map_err(stored)?;
            calls = entries.into_iter().map(|entry| (entry.key.clone(), record_of(entry))).collect();
            while store.reply(run, replies_before + 1).await.map_err(stored)?.is_some() {
                replies_before += 1;
            }
        }
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let journal = StoreJournal {
            store,
            run: run.to_string(),
            owner: owner.to_string(),
            buffer: buffer.clone(),
            listener: Mutex::new(listener),
            calls: Mutex::new(calls),
            replies_before,
            waiting: Mutex::new(Commit { used_decisions, ..Commit::default() }),
            control,
        };
        Ok((journal, Sink { buffer }))
    }

    /// Commits `commit` with the buffered events and the records that waited for it, then
    /// publishes the events.
    pub(super) async fn commit(&self, mut commit: Commit) -> Result<(), JournalError> {
        let events = std::mem::take(&mut *lock(&self.buffer));
        commit.events = events.iter().map(|e| serde_json::to_string(e).unwrap_or_default()).collect();
        let waited = std::mem::take(&mut *lock(&self.waiting));
        commit.replies.extend(waited.replies);
        commit.finished.extend(waited.finished);
        commit.used_decisions.extend(waited.used_decisions);
        let last = self.store.commit(&self.run, &self.owner, commit).await.map_err(stored)?;
        let first = last + 1 - events.len() as u64;
        let mut listener = lock(&self.listener);
        for (offset, event) in events.iter().enumerate() {
            listener(first + offset as u64, event);
        }
        Ok(())
    }

    /// Commits the run's end (or its pause) with the events before it.
    pub(super) async fn finish(
        &self,
        status: Status,
        outcome: Value,
        checkpoint: Option<String>,
    ) -> Result<(), JournalError> {
        self.commit(Commit { status: Some(status), outcome: Some(outcome), checkpoint, ..Commit::default() }).await
    }
}

#[async_trait]
impl Journal for StoreJournal {
    async fn recorded_reply(&self, turn: u32) -> Result<Option<ModelReply>, JournalError> {
        if turn > self.replies_before {
            // The model is asked now: a stop from here on is in the middle of its turn.
            super::crash::point("asking");
            return Ok(None);
        }
        let Some(body) = self.store.reply(&self.run, turn).await.map_err(stored)? else { return Ok(None) };
        serde_json::from_value(body).map(Some).map_err(|e| JournalError(format!("a recorded model reply: {e}")))
    }

    async fn record_reply(&self, turn: u32, reply: &ModelReply) -> Result<(), JournalError> {
        super::crash::point("reply");
        let body = serde_json::to_value(reply).map_err(|e| JournalError(e.to_string()))?;
        lock(&self.waiting).replies.push((turn, body));
        Ok(())
    }

    async fn call(&self, id: &str) -> Result<CallRecord, JournalError> {
        Ok(lock(&self.calls).get(id).cloned().unwrap_or(CallRecord::NotStarted))
    }

    async fn call_started(&self, call: &ToolCall, effect: Effect) -> Result<(), JournalError> {
        let commit =
            Commit { started: vec![entry(call, effect)], sync: effect == Effect::SideEffect, ..Commit::default() };
        self.store.commit(&self.run, &self.owner, commit).await.map_err(stored)?;
        lock(&self.calls).insert(call.id.clone(), CallRecord::Started);
        super::crash::point("call_started");
        Ok(())
    }

    async fn call_finished(&self, id: &str, outcome: &ToolOutcome, with_checkpoint: bool) -> Result<(), JournalError> {
        super::crash::point("call_finished");
        let result = serde_json::to_value(outcome).map_err(|e| JournalError(e.to_string()))?;
        if with_checkpoint {
            lock(&self.waiting).finished.push((id.to_string(), result));
        } else {
            let commit = Commit { finished: vec![(id.to_string(), result)], ..Commit::default() };
            self.store.commit(&self.run, &self.owner, commit).await.map_err(stored)?;
        }
        lock(&self.calls).insert(id.to_string(), CallRecord::Finished(outcome.clone()));
        Ok(())
    }

    async fn checkpoint(&self, checkpoint: &Checkpoint, starting: &[(&ToolCall, Effect)]) -> Result<(), JournalError> {
        super::crash::point("checkpoint");
        let saved = serde_json::to_string(checkpoint).map_err(|e| JournalError(e.to_string()))?;
        let started: Vec<CallEntry> = starting.iter().map(|(call, effect)| entry(call, *effect)).collect();
        let sync = starting.iter().any(|(_, effect)| *effect == Effect::SideEffect);
        let commit =
            Commit { checkpoint: Some(saved), status: Some(Status::Running), started, sync, ..Commit::default() };
        self.commit(commit).await?;
        let mut calls = lock(&self.calls);
        for (call, _) in starting {
            calls.insert(call.id.clone(), CallRecord::Started);
        }
        drop(calls);
        for _ in starting {
            super::crash::point("call_started");
        }
        Ok(())
    }

    fn stop_requested(&self) -> Option<Stop> {
        self.control.stop()
    }
}

/// The loop's event sink for a journalled run: events wait in the journal's buffer for the next
/// commit.
pub(super) struct Sink {
    buffer: Arc<Mutex<Vec<Event>>>,
}

impl EventSink for Sink {
    fn emit(&mut self, event: &Event) {
        lock(&self.buffer).push(event.clone());
    }
}

/// A call's journal entry as it starts.
fn entry(call: &ToolCall, effect: Effect) -> CallEntry {
    CallEntry {
        key: call.id.clone(),
        tool: call.name.clone(),
        arguments: call.arguments.clone(),
        effect: effect.as_str().to_string(),
        result: None,
    }
}

fn record_of(entry: CallEntry) -> CallRecord {
    match entry.result.map(serde_json::from_value::<ToolOutcome>) {
        Some(Ok(outcome)) => CallRecord::Finished(outcome),
        // A result this binary cannot read is treated as unknown: the call is in doubt, not rerun blindly.
        Some(Err(_)) | None => CallRecord::Unfinished,
    }
}

fn stored(error: reagent_store::StoreError) -> JournalError {
    JournalError(error.to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
