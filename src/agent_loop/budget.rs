//! A run's budgets and what it has spent of them. When one runs out the loop does not throw the
//! work away: one last turn, with tools disabled, asks the model for its best answer, and the run
//! is marked incomplete with the budget that ran out.

use std::time::Duration;

use tokio::time::Instant;

use crate::model::Usage;
use crate::spec::{Budget, Limits};

/// What a run has spent so far.
#[derive(Debug, Clone)]
pub(super) struct Spent {
    pub(super) steps: u32,
    pub(super) tool_calls: u32,
    pub(super) usage: Option<Usage>,
    pub(super) deadline: Instant,
}

impl Spent {
    pub(super) fn start(limits: &Limits) -> Self {
        Spent { steps: 0, tool_calls: 0, usage: None, deadline: deadline_after(limits.timeout) }
    }

    pub(super) fn tokens(&self) -> u64 {
        self.usage.map_or(0, |u| u64::from(u.prompt_tokens) + u64::from(u.completion_tokens))
    }

    pub(super) fn add_usage(&mut self, usage: Usage) {
        self.usage.get_or_insert_default().add(usage);
    }

    /// The first budget that has run out, if any.
    pub(super) fn exhausted(&self, limits: &Limits) -> Option<Budget> {
        if Instant::now() >= self.deadline {
            Some(Budget::Timeout)
        } else if self.tokens() >= limits.max_tokens {
            Some(Budget::MaxTokens)
        } else if self.tool_calls >= limits.max_tool_calls {
            Some(Budget::MaxToolCalls)
        } else if self.steps >= limits.max_steps {
            Some(Budget::MaxSteps)
        } else {
            None
        }
    }

    /// Calls of a turn that may still run.
    pub(super) fn calls_left(&self, limits: &Limits) -> u32 {
        limits.max_tool_calls.saturating_sub(self.tool_calls)
    }
}

/// A timeout so large it cannot be represented as an instant means no deadline in practice.
pub(super) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}
