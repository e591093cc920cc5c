//! The loop's `Journal` on the run store: each record a transaction of the store, fenced by the
//! claim this process holds on the run. Events are buffered as the loop emits them and committed
//! with the next checkpoint (or the run's end); only then are they published.
//!
//! The loop waits for a commit where a crash could otherwise cost more than a rerun: before a
//! call that touches the world (`idempotent` or `side-effect`) starts, so that the reply that
//! asked for it and its entry (and with them its idempotency key) are on record; after a
//! side-effect call finishes; at the run's end or pause. Every other commit is written behind the
//! run, in order, by the run's own writer task, which merges what has queued up while the store
//! was busy into one transaction and publishes the events once it lands. A crash before such a
//! commit lands loses only work the loop redoes the same way: a `pure` call (which, by its
//! declaration, does nothing a record could protect), a model turn not yet recorded, the result
//! of a call that may run again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use reagent_store::{CallEntry, Commit, RunStore, Status};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::agent_loop::{CallRecord, Checkpoint, Journal, JournalError, Stop};
use crate::conversation::ToolCall;
use crate::events::{Event, EventSink};
use crate::model::ModelReply;
use crate::toolbox::{Effect, ToolOutcome};

/// Who hears a run's events once they are committed: (seq, event).
pub type Listener = Box<dyn FnMut(u64, &Event) + Send>;

/// A stop asked of a run from outside (a cancel, a shutdown), or by its journal's writer.
#[derive(Debug, Default)]
pub struct Control {
    cancelled: AtomicBool,
    shutting_down: AtomicBool,
    /// Why a commit written behind the run failed: the run stops at its next turn boundary.
    journal_failed: Mutex<Option<String>>,
}

impl Control {
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// This process no longer holds the run (another took it over, or its lease ran out): it
    /// stops at its next turn boundary, writing nothing more.
    pub(super) fn lost_claim(&self) {
        let why = "this process lost its claim on the run (another process took it over, or its lease ran out)";
        lock(&self.journal_failed).get_or_insert_with(|| why.to_string());
    }

    fn stop(&self) -> Option<Stop> {
        if let Some(why) = lock(&self.journal_failed).clone() {
            Some(Stop::JournalFailed(why))
        } else if self.cancelled.load(Ordering::SeqCst) {
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
    /// Emitted, not yet committed.
    buffer: Arc<Mutex<Vec<Event>>>,
    /// Commits on their way to the store, in the order made (see `write_behind`).
    writes: mpsc::UnboundedSender<Write>,
    /// What the journal held of each call when this process took the run, and since.
    calls: Mutex<HashMap<String, CallRecord>>,
    /// The calls with side effects among them: their results must land before the run goes on.
    side_effects: Mutex<HashSet<String>>,
    /// Replies recorded up to this turn before this process took the run: only those can be
    /// found; later turns are asked without a lookup.
    replies_before: u32,
    /// Records that wait for the next commit (replies, a turn's only result), and the decisions
    /// the run resumed with, to be marked used by it.
    waiting: Mutex<Deferred>,
    control: Arc<Control>,
}

#[derive(Default)]
struct Deferred {
    commit: Commit,
    /// It holds a side-effect call's result: the commit that takes it must land before the run
    /// goes on.
    must_land: bool,
}

/// A commit for the run's writer task, with its events and checkpoint (serialised there, where
/// a checkpoint superseded before it lands is never serialised), and who waits for it to land.
struct Write {
    commit: Commit,
    checkpoint: Option<Checkpoint>,
    events: Vec<Event>,
    landed: Option<oneshot::Sender<Result<(), JournalError>>>,
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
        let mut side_effects = HashSet::new();
        let mut replies_before = 0;
        if !fresh {
            for entry in store.calls(run).await.map_err(stored)? {
                if entry.effect == Effect::SideEffect.as_str() {
                    side_effects.insert(entry.key.clone());
                }
                calls.insert(entry.key.clone(), record_of(entry));
            }
            while store.reply(run, replies_before + 1).await.map_err(stored)?.is_some() {
                replies_before += 1;
            }
        }
        let (writes, queue) = mpsc::unbounded_channel();
        let writer = Writer { store: store.clone(), run: run.to_string(), owner: owner.to_string(), listener };
        tokio::spawn(writer.write_behind(queue, control.clone()));
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let journal = StoreJournal {
            store,
            run: run.to_string(),
            buffer: buffer.clone(),
            writes,
            calls: Mutex::new(calls),
            side_effects: Mutex::new(side_effects),
            replies_before,
            waiting: Mutex::new(Deferred { commit: Commit { used_decisions, ..Commit::default() }, must_land: false }),
            control,
        };
        Ok((journal, Sink { buffer }))
    }

    /// Commits `commit` with the buffered events and the records that waited for it; the events
    /// are published once it lands. With `wait`, or when a side-effect result waited for it,
    /// returns only then; otherwise at once, the commit written behind the run.
    async fn commit(&self, commit: Commit, checkpoint: Option<Checkpoint>, wait: bool) -> Result<(), JournalError> {
        let events = std::mem::take(&mut *lock(&self.buffer));
        let waited = std::mem::take(&mut *lock(&self.waiting));
        let commit = waited.commit.then(commit);
        let wait = wait || waited.must_land;
        let (landed, result) = if wait { Some(oneshot::channel()).unzip() } else { (None, None) };
        let stopped = || JournalError("the run's journal writer stopped".into());
        self.writes.send(Write { commit, checkpoint, events, landed }).map_err(|_| stopped())?;
        match result {
            Some(result) => result.await.map_err(|_| stopped())?,
            None => Ok(()),
        }
    }

    /// Commits the run's end (or its pause) with the events before it, lets go of the claim, and
    /// waits for it.
    pub(super) async fn finish(
        &self,
        status: Status,
        outcome: Value,
        checkpoint: Option<Checkpoint>,
    ) -> Result<(), JournalError> {
        let commit = Commit { status: Some(status), outcome: Some(outcome), release: true, ..Commit::default() };
        self.commit(commit, checkpoint, true).await
    }

    /// Lets go of the claim once everything committed so far has landed (a run that stopped
    /// short), and waits for it.
    pub(super) async fn settle(&self) -> Result<(), JournalError> {
        self.commit(Commit { release: true, ..Commit::default() }, None, true).await
    }

    fn side_effect(&self, id: &str) -> bool {
        lock(&self.side_effects).contains(id)
    }
}

/// The run's writer task: takes the run's commits in order, merges what has queued up while the
/// store was busy into one, and publishes their events once it lands.
struct Writer {
    store: Arc<dyn RunStore>,
    run: String,
    owner: String,
    listener: Listener,
}

impl Writer {
    async fn write_behind(mut self, mut queue: mpsc::UnboundedReceiver<Write>, control: Arc<Control>) {
        let mut failed: Option<JournalError> = None;
        while let Some(first) = queue.recv().await {
            let mut writes = vec![first];
            while let Ok(next) = queue.try_recv() {
                writes.push(next);
            }
            let mut commit = Commit::default();
            let mut checkpoint = None;
            let mut events = Vec::new();
            let mut waiting = Vec::new();
            for write in writes {
                commit = commit.then(write.commit);
                checkpoint = write.checkpoint.or(checkpoint);
                events.extend(write.events);
                waiting.extend(write.landed);
            }
            let result = match &failed {
                Some(error) => Err(error.clone()),
                None if commit.is_empty() && checkpoint.is_none() && events.is_empty() => Ok(()),
                None => self.land(commit, checkpoint, events).await,
            };
            if let Err(error) = &result
                && failed.is_none()
            {
                // Nothing after a lost write may land: the run stops at its next turn boundary.
                failed = Some(error.clone());
                *lock(&control.journal_failed) = Some(error.0.clone());
            }
            for waiter in waiting {
                let _ = waiter.send(result.clone());
            }
        }
    }

    async fn land(
        &mut self,
        mut commit: Commit,
        checkpoint: Option<Checkpoint>,
        events: Vec<Event>,
    ) -> Result<(), JournalError> {
        commit.checkpoint =
            checkpoint.map(|c| serde_json::to_string(&c)).transpose().map_err(|e| JournalError(e.to_string()))?;
        commit.events = events.iter().map(|e| serde_json::to_string(e).unwrap_or_default()).collect();
        let last = self.store.commit(&self.run, &self.owner, commit).await.map_err(stored)?;
        let first = last + 1 - events.len() as u64;
        for (offset, event) in events.iter().enumerate() {
            (self.listener)(first + offset as u64, event);
        }
        Ok(())
    }
}

#[async_trait]
impl Journal for StoreJournal {
    fn run_id(&self) -> &str {
        &self.run
    }

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
        lock(&self.waiting).commit.replies.push((turn, body));
        Ok(())
    }

    async fn call(&self, id: &str) -> Result<CallRecord, JournalError> {
        Ok(lock(&self.calls).get(id).cloned().unwrap_or(CallRecord::NotStarted))
    }

    async fn call_started(&self, call: &ToolCall, effect: Effect) -> Result<(), JournalError> {
        let side_effect = effect == Effect::SideEffect;
        if side_effect {
            lock(&self.side_effects).insert(call.id.clone());
        }
        // On disk, not only in the log, before a call that touches the world: a key must never
        // name two calls, even after the machine fails.
        let commit = Commit { started: vec![entry(call, effect)], sync: effect != Effect::Pure, ..Commit::default() };
        // Record before run (see the module's comment for a pure call).
        self.commit(commit, None, effect != Effect::Pure).await?;
        lock(&self.calls).insert(call.id.clone(), CallRecord::Started);
        super::crash::point("call_started");
        Ok(())
    }

    async fn call_finished(&self, id: &str, outcome: &ToolOutcome, with_checkpoint: bool) -> Result<(), JournalError> {
        super::crash::point("call_finished");
        let result = serde_json::to_value(outcome).map_err(|e| JournalError(e.to_string()))?;
        let side_effect = self.side_effect(id);
        if with_checkpoint {
            let mut waiting = lock(&self.waiting);
            waiting.commit.finished.push((id.to_string(), result));
            waiting.must_land |= side_effect;
        } else {
            let commit = Commit { finished: vec![(id.to_string(), result)], ..Commit::default() };
            self.commit(commit, None, side_effect).await?;
        }
        lock(&self.calls).insert(id.to_string(), CallRecord::Finished(outcome.clone()));
        Ok(())
    }

    async fn checkpoint(&self, checkpoint: &Checkpoint, starting: &[(&ToolCall, Effect)]) -> Result<(), JournalError> {
        super::crash::point("checkpoint");
        let started: Vec<CallEntry> = starting.iter().map(|(call, effect)| entry(call, *effect)).collect();
        let touch_the_world = starting.iter().any(|(_, effect)| *effect != Effect::Pure);
        lock(&self.side_effects).extend(
            starting.iter().filter(|(_, effect)| *effect == Effect::SideEffect).map(|(call, _)| call.id.clone()),
        );
        // Record before run (see the module's comment for pure calls), on disk.
        let commit = Commit { status: Some(Status::Running), started, sync: touch_the_world, ..Commit::default() };
        self.commit(commit, Some(checkpoint.clone()), touch_the_world).await?;
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
