//! reagent's run store: every run, its events, the journal of its model turns and tool calls, the
//! checkpoint it can be resumed from, and the API keys that may see it.
//!
//! The store knows nothing of the loop: events, checkpoints, replies and results are JSON values
//! to it. One trait, `RunStore`, with one adapter per database: `sqlite` (one machine) and
//! `postgres` (many workers sharing one queue and journal); `open` picks by the location. Its
//! invariants, which the conformance suite (`tests/conformance.rs`) holds both adapters to:
//! - every write of a run's journal is **fenced** by the owner that claimed the run and by its
//!   lease: a process that lost its claim, or whose lease ran out, cannot write;
//! - a run's events get gapless `seq` numbers, assigned in the transaction that commits them;
//! - one `commit` is one transaction: events, checkpoint, status, call results and model replies
//!   land together or not at all.

mod group_commit;
mod keys;
mod postgres;
mod rows;
mod schema;
mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use keys::{ApiKey, NewKey, Scope, hash_secret};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Opens the store at `location`: a `postgres://` (or `postgresql://`) URL, else a SQLite file
/// path or `sqlite:` URL.
pub async fn open(location: &str) -> Result<std::sync::Arc<dyn RunStore>, StoreError> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PostgresStore::open(location).await?))
    } else {
        Ok(std::sync::Arc::new(SqliteStore::open(location).await?))
    }
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted, not yet started (or stopped by a shutdown and waiting to be taken up again).
    Queued,
    Running,
    /// A call waits for a person's approval.
    Paused,
    /// A side-effect call started and never confirmed: a person must say retry, done or skip.
    InDoubt,
    Answered,
    Incomplete,
    ModelFailed,
    Loop,
    InvalidOutput,
    Cancelled,
    /// The run could not go on for a reason outside the agent (its agent file no longer loads).
    Failed,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Queued,
        Status::Running,
        Status::Paused,
        Status::InDoubt,
        Status::Answered,
        Status::Incomplete,
        Status::ModelFailed,
        Status::Loop,
        Status::InvalidOutput,
        Status::Cancelled,
        Status::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::InDoubt => "in_doubt",
            Status::Answered => "answered",
            Status::Incomplete => "incomplete",
            Status::ModelFailed => "model_failed",
            Status::Loop => "loop",
            Status::InvalidOutput => "invalid_output",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The run will not change any more.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::Running | Status::Paused | Status::InDoubt)
    }

    /// The run waits for a person.
    pub fn is_waiting(self) -> bool {
        matches!(self, Status::Paused | Status::InDoubt)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run to record.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub tenant: String,
    /// The agent's name.
    pub agent: String,
    /// The agent files the run is bound to, as the runtime snapshots them.
    pub snapshot: Value,
    pub task: String,
    pub inputs: Value,
    /// `Idempotency-Key` and a digest of the request it came with.
    pub idempotency: Option<(String, String)>,
    /// The API key that submitted it, and how many of its runs may be unfinished at once.
    pub key: Option<(String, u32)>,
    /// Where its final state is delivered (a webhook), checked by the caller.
    pub callback_url: Option<String>,
}

/// What `create` did.
#[derive(Debug, Clone)]
pub enum Created {
    New(Run),
    /// The same idempotency key with the same request: the run it created before.
    Existing(Run),
    /// The same idempotency key with another request.
    KeyReused,
    /// The submitting key has its most unfinished runs already.
    OverLimit,
}

/// A run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: String,
    #[serde(skip)]
    pub tenant: String,
    pub agent: String,
    pub task: String,
    pub inputs: Value,
    pub status: Status,
    /// How the run ended (answer, output, message), once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Value>,
    /// The seq of its last committed event.
    pub last_seq: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub cancel_requested: bool,
    #[serde(skip)]
    pub snapshot: Value,
    #[serde(skip)]
    pub checkpoint: Option<Value>,
}

/// A committed event.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub body: Value,
}

/// A webhook delivery in the outbox: committed with its run's final state, sent until a receiver
/// takes it (or given up), always under the same id.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// `msg_` and the run's id: one delivery per run.
    pub id: String,
    pub run_id: String,
    pub url: String,
    /// `{"type": "run.finished", "data": {"run_id", "status", "outcome"}}`, as JSON text.
    pub body: String,
    /// Sends that failed so far.
    pub attempts: u32,
}

impl Webhook {
    /// The delivery a run's final state commits.
    pub(crate) fn for_run(run: &str, status: Status, outcome: Option<&Value>) -> (String, String) {
        let body = serde_json::json!({
            "type": "run.finished",
            "data": {"run_id": run, "status": status, "outcome": outcome},
        });
        (format!("msg_{run}"), body.to_string())
    }
}

/// Which runs `list` returns: newest first, `before` a run id for the next page.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub tenant: Option<String>,
    pub status: Option<Status>,
    pub agent: Option<String>,
    pub before: Option<String>,
    pub limit: u32,
}

/// A tool call's journal entry: recorded as started before the tool runs, finished after.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEntry {
    /// Unique within the run: the loop's call id.
    pub key: String,
    pub tool: String,
    pub arguments: Value,
    /// The tool's declared effect: `pure`, `idempotent` or `side_effect`.
    pub effect: String,
    /// Set once the call finished: what it returned (the loop's serialised outcome).
    pub result: Option<Value>,
}

/// A person's word on a call the run waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub call_id: String,
    /// `approve` | `deny` for a call awaiting approval; `retry` | `done` | `skip` for one in doubt.
    pub verdict: String,
    /// With `done`: the result to feed back as the call's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Who decided: an API key's id, or `cli`.
    #[serde(default)]
    pub made_by: String,
}

/// One transaction of a run's journal. Everything in it lands together or not at all.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Appended with the next seqs, each a JSON object as text (serialised by the writer's task,
    /// not the store's one writer).
    pub events: Vec<String>,
    /// The checkpoint the run resumes from from now on, as JSON text.
    pub checkpoint: Option<String>,
    pub status: Option<Status>,
    pub outcome: Option<Value>,
    /// Model turns' replies: (turn number, reply).
    pub replies: Vec<(u32, Value)>,
    /// Calls about to run.
    pub started: Vec<CallEntry>,
    /// Calls that finished: (key, result).
    pub finished: Vec<(String, Value)>,
    /// Decisions this commit acts on: marked used, so none is used twice.
    pub used_decisions: Vec<String>,
    /// Wait until the commit is on disk, not only in the log (before a side-effect call).
    pub sync: bool,
    /// The run's last commit by its owner: it lets go of the claim.
    pub release: bool,
}

impl Commit {
    /// This commit followed by `next`, as one: what a run wrote in two transactions, written in
    /// one with the same end state (the later checkpoint, status and outcome win; everything
    /// else is appended in order).
    pub fn then(mut self, next: Commit) -> Commit {
        self.events.extend(next.events);
        self.checkpoint = next.checkpoint.or(self.checkpoint);
        self.status = next.status.or(self.status);
        self.outcome = next.outcome.or(self.outcome);
        self.replies.extend(next.replies);
        self.started.extend(next.started);
        // A call's later result replaces an earlier one, as a second transaction's would.
        self.finished.retain(|(key, _)| !next.finished.iter().any(|(later, _)| later == key));
        self.finished.extend(next.finished);
        self.used_decisions.extend(next.used_decisions);
        self.sync |= next.sync;
        self.release |= next.release;
        self
    }

    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        !self.release
            && self.events.is_empty()
            && self.checkpoint.is_none()
            && self.status.is_none()
            && self.outcome.is_none()
            && self.replies.is_empty()
            && self.started.is_empty()
            && self.finished.is_empty()
            && self.used_decisions.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the run store at {place}: {message}")]
    Database { place: String, message: String },
    #[error(
        "the run store at {place} has schema version {found}, newer than this reagent knows ({known}): use a newer reagent, or another --db"
    )]
    NewerSchema { place: String, found: i64, known: i64 },
    #[error("run {0} is not in the store")]
    NoSuchRun(String),
    /// Another process holds the run (or took it over): this one must stop writing.
    #[error("run {run} is being run by another process ({owner})")]
    NotOwner { run: String, owner: String },
    /// This process's lease on the run ran out before it renewed it: another may take the run over,
    /// so this one must stop writing.
    #[error(
        "run {run}: this process's lease on it ran out (it did not renew it in time); the run goes on wherever it is claimed next"
    )]
    LeaseExpired { run: String },
    #[error("corrupt record in the run store: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Why `owner`'s fenced write to `run` did not land, given who holds it now (`None`: no such
    /// run; `Some(None)`: nobody).
    pub(crate) fn refused(run: &str, owner: &str, holder: Option<Option<String>>) -> StoreError {
        match holder {
            None => StoreError::NoSuchRun(run.to_string()),
            Some(Some(holder)) if holder == owner => StoreError::LeaseExpired { run: run.to_string() },
            Some(holder) => {
                StoreError::NotOwner { run: run.to_string(), owner: holder.unwrap_or_else(|| "nobody".into()) }
            }
        }
    }
}

/// Which queued runs a worker takes, and how many of a tenant's runs may be claimed at once.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    /// Only runs of these agents (by name); all when empty.
    pub agents: Vec<String>,
    /// The most runs of one tenant held by live claims at once, across every process on the store.
    pub per_tenant: Option<u32>,
}

impl Queue {
    /// Whether a run of `agent` is one this queue gives out.
    pub fn takes(&self, agent: &str) -> bool {
        self.agents.is_empty() || self.agents.iter().any(|a| a == agent)
    }
}

/// The runs, their journals and the API keys. Adapters: `SqliteStore`, `PostgresStore`.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Records a new run (status `queued`), committed before this returns. The idempotency key
    /// and the key's limit are checked in the same transaction.
    async fn create(&self, run: NewRun) -> Result<Created, StoreError>;

    async fn get(&self, id: &str) -> Result<Option<Run>, StoreError>;

    async fn list(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError>;

    /// Events with `seq > after`, in order, at most `limit`.
    async fn events(&self, id: &str, after: u64, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;

    /// Takes the run for `owner` for `lease`, unless a live owner holds it. Returns the run.
    async fn claim(&self, id: &str, owner: &str, lease: Duration) -> Result<Option<Run>, StoreError>;

    /// Takes the next run a worker should drive, for `owner` for `lease`: a queued run, a run
    /// whose owner's lease ran out, or a waiting run asked to cancel; of the tenants with such runs,
    /// the one with the fewest runs claimed now goes first (then the oldest run), and no tenant
    /// goes past `queue.per_tenant`. `None` when there is nothing to take.
    async fn claim_next(&self, owner: &str, lease: Duration, queue: &Queue) -> Result<Option<Run>, StoreError>;

    /// Extends `owner`'s lease; false if it is no longer the owner or its lease already ran out.
    async fn renew(&self, id: &str, owner: &str, lease: Duration) -> Result<bool, StoreError>;

    /// Lets the run go, for another process to take up.
    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError>;

    /// Applies `commit` in one transaction, if `owner` still holds the run. Returns the last seq.
    async fn commit(&self, id: &str, owner: &str, commit: Commit) -> Result<u64, StoreError>;

    /// The reply recorded for model turn `turn`.
    async fn reply(&self, id: &str, turn: u32) -> Result<Option<Value>, StoreError>;

    /// The journal entries of the run's calls.
    async fn calls(&self, id: &str) -> Result<Vec<CallEntry>, StoreError>;

    /// Whether someone asked the run to stop (read by its driver's heartbeat).
    async fn cancel_requested(&self, id: &str) -> Result<bool, StoreError>;

    /// Asks the run to stop at its next safe point (a run that waits stops at once). Returns the run.
    async fn request_cancel(&self, id: &str) -> Result<Option<Run>, StoreError>;

    /// Runs held by a process of this host that has exited, oldest first: a starting worker takes
    /// them at once instead of waiting for their leases to run out. (Free runs, and runs past
    /// their lease, are the queue's: `claim_next`.)
    async fn orphaned(&self) -> Result<Vec<String>, StoreError>;

    /// Records decisions on the calls a waiting run waits for, and queues the run to go on with
    /// them. Replaces an earlier unused decision on the same call.
    async fn decide(&self, id: &str, decisions: &[Decision]) -> Result<(), StoreError>;

    /// The decisions not used yet.
    async fn decisions(&self, id: &str) -> Result<Vec<Decision>, StoreError>;

    /// Counts of runs by status, for metrics.
    async fn counts(&self) -> Result<Vec<(Status, u64)>, StoreError>;

    async fn create_key(&self, key: NewKey) -> Result<ApiKey, StoreError>;

    /// The key whose secret hashes to `hash`.
    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError>;

    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError>;

    /// Up to `limit` webhook deliveries due now, held for `hold` (no other process sends them
    /// meanwhile): each is then `webhook_delivered` or `webhook_failed`.
    async fn due_webhooks(&self, limit: u32, hold: Duration) -> Result<Vec<Webhook>, StoreError>;

    async fn webhook_delivered(&self, id: &str) -> Result<(), StoreError>;

    /// A send failed: tried again after `retry`, or given up without one.
    async fn webhook_failed(&self, id: &str, error: &str, retry: Option<Duration>) -> Result<(), StoreError>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// A new run id: sortable by creation time (milliseconds, hex), then 64 random bits.
pub fn new_run_id() -> String {
    format!("run_{:012x}{}", now_ms(), random_hex(8))
}

/// `bytes` random bytes from the OS, as hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    // Without the OS's randomness no secret or id can be made safely: there is no fallback.
    getrandom::fill(&mut buffer).expect("the operating system's random number generator failed");
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who runs a run: this host, this process, and a nonce for this store handle.
pub fn owner_id() -> String {
    format!("{}/{}/{}", hostname(), std::process::id(), random_hex(4))
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into())
}
