//! The state of a run between turns: what a checkpoint saves, so that a run can stop between
//! deciding on its calls and running them, and be resumed by another process.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::budget::{Spent, deadline_after};
use super::repeats::RepeatGuard;
use crate::conversation::{MalformedCall, Message, ToolCall, ToolChoice};
use crate::model::Usage;
use crate::spec::Limits;
use crate::toolbox::ToolError;

/// A paused run: the conversation, what it has spent, and the calls of the turn it stopped in.
/// Serialisable, so a run can be resumed by another process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub task: String,
    pub(super) progress: Progress,
    pub(super) pending: Vec<Pending>,
    pub(super) spent: SavedSpend,
}

impl Checkpoint {
    /// The calls waiting for a person's approval.
    pub fn awaiting(&self) -> Vec<&ToolCall> {
        self.pending.iter().filter(|p| p.awaiting).filter_map(|p| p.call.as_ref().ok()).collect()
    }

    /// The side-effect calls a stop left in doubt: started, never confirmed.
    pub fn in_doubt(&self) -> Vec<&ToolCall> {
        self.pending.iter().filter(|p| p.in_doubt).filter_map(|p| p.call.as_ref().ok()).collect()
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u32 {
        self.spent.steps
    }
}

/// Where a run is between turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Progress {
    pub(super) messages: Vec<Message>,
    /// The last turn failed: `auto` thinks on the next.
    pub(super) recovering: bool,
    pub(super) repeats: RepeatGuard,
    /// `required`: calls are forced until one has run successfully; then the model may answer.
    pub(super) tool_choice: ToolChoice,
    /// The `traceparent` of the span the run first ran under: a resumed run's span links to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) origin: Option<String>,
}

/// A call of the current turn, with what the loop decided before running it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Pending {
    pub(super) call: Result<ToolCall, MalformedCall>,
    pub(super) refusal: Option<ToolError>,
    /// Waiting for a person's decision.
    pub(super) awaiting: bool,
    /// A side-effect call that started and never confirmed: waiting for a person to say retry,
    /// done or skip.
    #[serde(default)]
    pub(super) in_doubt: bool,
}

/// What a run had spent when it stopped; the time left, not the deadline, so that time paused
/// does not count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct SavedSpend {
    steps: u32,
    /// Model turns asked so far: the journal's key for the next reply.
    #[serde(default)]
    turns: u32,
    tool_calls: u32,
    usage: Option<Usage>,
    time_left_ms: u64,
}

impl SavedSpend {
    pub(super) fn of(spent: &Spent) -> Self {
        let time_left = spent.deadline.saturating_duration_since(tokio::time::Instant::now());
        SavedSpend {
            steps: spent.steps,
            turns: spent.turns,
            tool_calls: spent.tool_calls,
            usage: spent.usage,
            time_left_ms: u64::try_from(time_left.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The spending to go on from, under `limits`, the clock restarted with the time left.
    pub(super) fn restore(&self, limits: Limits, keys: String) -> Spent {
        let mut spent = Spent::start(limits, keys);
        (spent.steps, spent.turns, spent.tool_calls, spent.usage) =
            (self.steps, self.turns, self.tool_calls, self.usage);
        spent.deadline = deadline_after(Duration::from_millis(self.time_left_ms));
        spent
    }
}
