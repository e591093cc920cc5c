//! The event stream of a run: what the loop reports, and what the CLI (and, later, the API and the
//! store) consume. Serialised as one JSON object per line by `reagent run --json`.

use serde::Serialize;
use serde_json::Value;

use crate::model::{DeltaKind, ModelErrorKind, Usage};
use crate::spec::{Budget, Limits};
use crate::toolbox::ToolError;

/// Bumped when an event's shape changes incompatibly.
/// 2: `run_started` carries `limits`; `run_finished` says `incomplete` with the `budget` that ran
/// out (was `steps_exhausted`); `budget_spent` announces the wrap-up turn; `output_invalid`, and
/// `answer.output` with `output.schema`; `approval_required`, `run_resumed`, status `paused`.
pub const EVENTS_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        version: u32,
        agent: String,
        task: String,
        model: String,
        tools: Vec<String>,
        limits: Limits,
    },
    StepStarted {
        step: u32,
        /// Whether the step really reasons: asked to by the policy, and able to (a model without a
        /// reasoning mode, or a constrained local turn, does not).
        thinking: bool,
    },
    /// A piece of the model's reply as it is generated (streaming backends; `replay` a word at
    /// a time).
    Delta {
        step: u32,
        kind: DeltaKind,
        text: String,
    },
    /// What the step's model turn cost; absent where the backend counts no tokens (`replay`).
    Usage {
        step: u32,
        thinking: bool,
        #[serde(flatten)]
        usage: Usage,
    },
    /// Thinking ran past `reasoning.max_thinking_tokens`: it was stopped there and the step is
    /// asked again without thinking.
    ThinkingCut {
        step: u32,
        tokens: u32,
        reasoning: String,
    },
    /// `reasoning.before_answer`: the answer drafted without thinking is dropped and the step asked
    /// again with thinking on.
    Reconsidering {
        step: u32,
        draft: String,
    },
    /// What the model wrote, as the engine returned it before it was read into reasoning, text and
    /// calls: to see a call an engine or the parser dropped. Not shown by the CLI's human output.
    ModelOutput {
        step: u32,
        text: String,
    },
    /// The model's reasoning for this step.
    Reasoning {
        step: u32,
        text: String,
    },
    /// Text the model wrote beside its tool calls.
    Text {
        step: u32,
        text: String,
    },
    ToolCall {
        step: u32,
        id: String,
        tool: String,
        arguments: Value,
    },
    /// How far a running call has got, as its tool reports it (an MCP server's progress
    /// notifications); `message` is the tool's text, clipped.
    ToolProgress {
        step: u32,
        id: String,
        progress: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// The result fed back to the model for one call: the tool's, or an error the loop produced
    /// before the tool ran (unknown tool, unreadable call, invalid arguments).
    ToolResult {
        step: u32,
        id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool: Option<String>,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<ToolError>,
        #[serde(skip_serializing_if = "String::is_empty")]
        log: String,
        duration_ms: f64,
    },
    /// A budget ran out: step `step` is one last turn, without tools, asking for the best answer.
    BudgetSpent {
        step: u32,
        budget: Budget,
        message: String,
    },
    /// A call waits for a person's yes: the run pauses (`run_finished` with `paused`) and is
    /// resumed with the decision (`reagent resume`).
    ApprovalRequired {
        step: u32,
        id: String,
        tool: String,
        arguments: Value,
    },
    /// A side-effect call started and the run stopped before its outcome was recorded: it may or
    /// may not have happened. The run waits (`run_finished` with `in_doubt`) for a person to say
    /// retry, done (with its result) or skip.
    InDoubt {
        step: u32,
        id: String,
        tool: String,
        arguments: Value,
    },
    /// An event of a sub-agent's run, in its parent's stream: `path` names the sub-agents from the
    /// parent's call down (a sub-agent's own sub-agent adds its name).
    SubAgent {
        path: Vec<String>,
        inner: Box<Event>,
    },
    /// A stopped run goes on from its checkpoint, with the decisions on the calls it waited for.
    RunResumed {
        step: u32,
        approved: Vec<String>,
        denied: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        retried: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        done: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        skipped: Vec<String>,
    },
    /// `output.schema` rejected the answer: the errors, as fed back to the model for one repair.
    OutputInvalid {
        step: u32,
        answer: String,
        errors: Vec<String>,
    },
    Answer {
        step: u32,
        text: String,
        /// With `output.schema`: the JSON value the schema accepted.
        #[serde(skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
    },
    RunFinished {
        status: RunStatus,
        /// With `incomplete`: the budget that ran out.
        #[serde(skip_serializing_if = "Option::is_none")]
        budget: Option<Budget>,
        steps: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// With `model_failed`: the kind of failure.
        #[serde(skip_serializing_if = "Option::is_none")]
        model_error: Option<ModelErrorKind>,
        /// Tokens over the whole run, where the backend counts them.
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Answered,
    /// A budget ran out; the answer, if any, came from the wrap-up turn.
    Incomplete,
    ModelFailed,
    /// The model repeated a call it had been told would not change.
    Loop,
    /// The answer did not match `output.schema`, even after a repair turn.
    InvalidOutput,
    /// A call waits for approval; the run can be resumed.
    Paused,
    /// A side-effect call's outcome is unknown after a stop; the run waits for a person.
    InDoubt,
    Cancelled,
}

impl RunStatus {
    /// Its serialised name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Answered => "answered",
            RunStatus::Incomplete => "incomplete",
            RunStatus::ModelFailed => "model_failed",
            RunStatus::Loop => "loop",
            RunStatus::InvalidOutput => "invalid_output",
            RunStatus::Paused => "paused",
            RunStatus::InDoubt => "in_doubt",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// Where a run's events go.
pub trait EventSink: Send {
    fn emit(&mut self, event: &Event);
}

impl<F: FnMut(&Event) + Send> EventSink for F {
    fn emit(&mut self, event: &Event) {
        self(event)
    }
}
