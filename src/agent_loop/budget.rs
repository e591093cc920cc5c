//! A run's budgets and what it has spent of them. When one runs out the loop does not throw the
//! work away: one last turn, with tools disabled, asks the model for its best answer, and the run
//! is marked incomplete with the budget that ran out.

use std::time::Duration;

use tokio::time::Instant;

use crate::model::Usage;
use crate::spec::{Budget, Limits};

/// What a run may spend and has spent so far.
#[derive(Debug, Clone)]
pub(super) struct Spent {
    pub(super) limits: Limits,
    pub(super) steps: u32,
    /// Model turns asked (a step may ask more than once: reconsidering, thinking cut, repair).
    pub(super) turns: u32,
    pub(super) tool_calls: u32,
    pub(super) usage: Option<Usage>,
    pub(super) deadline: Instant,
    /// What this run's calls' idempotency keys start with: the run's id (a sub-agent's run: the
    /// key of the call that runs it).
    pub(super) keys: String,
}

impl Spent {
    pub(super) fn start(limits: Limits, keys: String) -> Self {
        let deadline = deadline_after(limits.timeout);
        Spent { limits, steps: 0, turns: 0, tool_calls: 0, usage: None, deadline, keys }
    }

    /// The idempotency key of the call `call_id` (the loop's id, unique within the run).
    pub(super) fn key_of(&self, call_id: &str) -> String {
        format!("{}/{call_id}", self.keys)
    }

    pub(super) fn tokens(&self) -> u64 {
        self.usage.map_or(0, |u| u64::from(u.prompt_tokens) + u64::from(u.completion_tokens))
    }

    pub(super) fn add_usage(&mut self, usage: Usage) {
        self.usage.get_or_insert_default().add(usage);
    }

    /// The first budget that has run out, if any.
    pub(super) fn exhausted(&self) -> Option<Budget> {
        let limits = &self.limits;
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
    pub(super) fn calls_left(&self) -> u32 {
        self.limits.max_tool_calls.saturating_sub(self.tool_calls)
    }

    /// A sub-agent's budgets: its own, but never more than what this run has left.
    pub(super) fn carve(&self, own: &Limits) -> Limits {
        Limits {
            max_steps: own.max_steps.min(self.limits.max_steps.saturating_sub(self.steps)),
            max_tool_calls: own.max_tool_calls.min(self.calls_left()),
            max_tokens: own.max_tokens.min(self.limits.max_tokens.saturating_sub(self.tokens())),
            timeout: own.timeout.min(self.deadline.saturating_duration_since(Instant::now())),
        }
    }

    /// What a sub-agent spent counts against this run.
    pub(super) fn absorb(&mut self, child: &Spent) {
        self.steps = self.steps.saturating_add(child.steps);
        self.tool_calls = self.tool_calls.saturating_add(child.tool_calls);
        if let Some(usage) = child.usage {
            self.add_usage(usage);
        }
    }
}

/// A timeout so large it cannot be represented as an instant means no deadline in practice.
pub(super) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}
