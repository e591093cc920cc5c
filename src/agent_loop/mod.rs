//! The agent loop: ask the model, check its calls, run them, feed the results back, until the
//! model answers without a call or a budget runs out. Depends on the `Model` and `Toolbox` traits
//! only. Nothing the model writes can crash a run: an unknown tool, an unreadable call or invalid
//! arguments become an error message the model sees on the next step.

mod ask;
mod budget;
mod calls;
mod ending;
mod output;
mod repeats;
mod state;
mod sub_agents;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio::time::timeout_at;

use crate::conversation::{Message, ToolCall, ToolChoice, ToolDeclaration};
use crate::events::{EVENTS_VERSION, Event, EventSink};
use crate::model::{Model, ModelError};
use crate::spec::{Budget, Limits, ReasoningMode, ReasoningPolicy};
use crate::toolbox::{ToolError, ToolErrorKind, Toolbox};

use budget::Spent;
pub use calls::check_arguments;
use ending::model_failed;
use output::OutputCheck;
pub use repeats::REPEAT_LIMIT;
use repeats::RepeatGuard;
pub use state::Checkpoint;
use state::{Pending, Progress};
pub use sub_agents::declaration as sub_agent_declaration;

/// Calls of one turn that run at once; more wait for a slot.
pub const MAX_PARALLEL_CALLS: usize = 8;

/// How long the wrap-up turn after a spent budget may take, on top of the budget.
pub const WRAP_UP_TIME: Duration = Duration::from_secs(60);

/// The most of a value the model wrote (a rejected argument, an unreadable call, an answer the
/// output schema rejected) quoted back to it.
const MAX_QUOTED: usize = 500;

/// The most of one message fed back to the model in place of a result (a tool's error).
const MAX_FED_BACK: usize = 2_000;

/// What a call refused by a person feeds back.
const DENIED: &str =
    "a person declined this call: do not try it again; finish the task another way, or say what is missing";

/// Whether a call that needs approval may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
    /// Nobody can answer now: the run pauses, to be resumed with the decision.
    Pause,
}

/// Who decides on calls whose tool has `approval:` (e.g. the CLI asking on a terminal). Without
/// one, such calls pause the run.
#[async_trait::async_trait]
pub trait Approver: Send + Sync {
    async fn decide(&self, step: u32, call: &ToolCall) -> Decision;
}

/// How a step ended.
enum Turn {
    Calls(Vec<Pending>),
    Again,
    Done(RunOutcome),
    Pause(Vec<Pending>),
}

/// What the loop needs from an agent's spec.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub name: String,
    pub instructions: String,
    pub reasoning: ReasoningPolicy,
    pub tool_choice: ToolChoice,
    pub limits: Limits,
    /// `output.schema`: the JSON Schema the final answer must match.
    pub output_schema: Option<Value>,
}

impl LoopConfig {
    /// The conversation a run starts from.
    pub fn opening(&self, task: &str) -> Vec<Message> {
        let mut messages = Vec::new();
        let mut system = self.instructions.trim_end().to_string();
        if let Some(schema) = &self.output_schema {
            system = format!("{system}\n\n{}", output::instructions_note(schema)).trim_start().to_string();
        }
        if !system.is_empty() {
            messages.push(Message::System { content: system });
        }
        messages.push(Message::User { content: task.to_string() });
        messages
    }

    /// Whether step `step` is asked to reason: `auto` thinks to plan (first step) and to recover
    /// (after a failed or rejected call), and acts fast otherwise.
    pub fn thinking(&self, step: u32, recovering: bool) -> bool {
        match self.reasoning.mode {
            ReasoningMode::On => true,
            ReasoningMode::Off => false,
            ReasoningMode::Auto => step == 1 || recovering,
        }
    }
}

/// An agent ready to run: its model, its tools with their compiled argument schemas.
pub struct Agent {
    config: LoopConfig,
    model: Box<dyn Model>,
    toolbox: Box<dyn Toolbox>,
    tools: Vec<ToolDeclaration>,
    validators: HashMap<String, jsonschema::Validator>,
    output: Option<OutputCheck>,
    /// Agents this one may hand tasks to, by tool name.
    sub_agents: HashMap<String, Agent>,
    approver: Option<Box<dyn Approver>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    Answered {
        answer: String,
        /// With `output.schema`: the answer as the JSON value the schema accepted.
        output: Option<Value>,
        steps: u32,
    },
    /// A call needs a person's approval and nobody could give it: resume with the checkpoint.
    Paused(Box<Checkpoint>),
    /// With `output.schema`: the answer still did not match after one repair turn.
    InvalidOutput { answer: String, errors: Vec<String>, steps: u32 },
    /// A budget ran out. `answer` is the model's best from what it knew, asked for in one last turn
    /// without tools; `None` if it gave none.
    Incomplete { budget: Budget, answer: Option<String>, steps: u32 },
    /// The model kept making the same call after it was told the result would not change.
    Looped { steps: u32, tool: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{of} is not valid JSON Schema: {reason}")]
pub struct InvalidSchema {
    /// Whose schema: e.g. "the parameters of tool `calc`", "output.schema".
    pub of: String,
    pub reason: String,
}

impl Agent {
    pub fn new(config: LoopConfig, model: Box<dyn Model>, toolbox: Box<dyn Toolbox>) -> Result<Self, InvalidSchema> {
        let tools = toolbox.declarations();
        let (validators, output) = compile_schemas(&tools, config.output_schema.as_ref())?;
        Ok(Agent { config, model, toolbox, tools, validators, output, sub_agents: HashMap::new(), approver: None })
    }

    /// Who decides on calls that need approval; without one they pause the run.
    pub fn set_approver(&mut self, approver: Box<dyn Approver>) {
        self.approver = Some(approver);
    }

    /// Offers `agent` to the model as a tool named after it, taking a task.
    pub fn add_sub_agent(&mut self, agent: Agent, description: Option<&str>) -> Result<(), InvalidSchema> {
        let name = agent.config.name.clone();
        if self.validators.contains_key(&name) {
            let reason = format!("its name `{name}` is already a tool's; rename one of them");
            return Err(InvalidSchema { of: format!("sub-agent `{name}`"), reason });
        }
        let declaration = sub_agents::declaration(&name, description);
        let (validators, _) = compile_schemas(std::slice::from_ref(&declaration), None)?;
        self.validators.extend(validators);
        self.tools.push(declaration);
        self.sub_agents.insert(name, agent);
        Ok(())
    }

    pub fn tools(&self) -> &[ToolDeclaration] {
        &self.tools
    }

    pub async fn run(&self, task: &str, events: &mut dyn EventSink) -> Result<RunOutcome, ModelError> {
        let mut spent = Spent::start(self.config.limits);
        self.run_within(task, &mut spent, events).await
    }

    /// A run under the budgets in `spent`, which records what it spends.
    async fn run_within(
        &self,
        task: &str,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<RunOutcome, ModelError> {
        events.emit(&Event::RunStarted {
            version: EVENTS_VERSION,
            agent: self.config.name.clone(),
            task: task.to_string(),
            model: self.model.label(),
            tools: self.tools.iter().map(|t| t.name.clone()).collect(),
            limits: spent.limits,
        });
        let progress = Progress {
            messages: self.config.opening(task),
            recovering: false,
            repeats: RepeatGuard::default(),
            tool_choice: self.config.tool_choice,
        };
        self.drive(task, progress, None, spent, events).await
    }

    /// Continues a paused run: each awaited call runs if `approved` says yes for its id, and is
    /// refused otherwise; then the run goes on as if it had never stopped. Time paused does not
    /// count against `limits.timeout`.
    pub async fn resume(
        &self,
        checkpoint: Checkpoint,
        approved: &HashMap<String, bool>,
        events: &mut dyn EventSink,
    ) -> Result<RunOutcome, ModelError> {
        let Checkpoint { task, progress, mut pending, spent: saved } = checkpoint;
        let mut spent = saved.restore(self.config.limits);
        let (mut yes, mut no) = (Vec::new(), Vec::new());
        for entry in pending.iter_mut().filter(|p| p.awaiting) {
            entry.awaiting = false;
            let id = entry.call.as_ref().map(|c| c.id.clone()).unwrap_or_default();
            if approved.get(&id).copied().unwrap_or(false) {
                yes.push(id);
            } else {
                entry.refusal = Some(ToolError::new(ToolErrorKind::Denied, DENIED));
                no.push(id);
            }
        }
        events.emit(&Event::RunResumed { step: spent.steps, approved: yes, denied: no });
        self.drive(&task, progress, Some(pending), &mut spent, events).await
    }

    /// The loop proper. `paused`: the calls of the turn a resumed run finishes first.
    async fn drive(
        &self,
        task: &str,
        mut progress: Progress,
        mut paused: Option<Vec<Pending>>,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<RunOutcome, ModelError> {
        loop {
            let pending = match paused.take() {
                Some(pending) => pending,
                None => match self.step(&mut progress, spent, events).await? {
                    Turn::Calls(pending) => pending,
                    Turn::Again => continue,
                    Turn::Done(outcome) => return Ok(outcome),
                    Turn::Pause(pending) => return Ok(self.pause(task, progress, pending, spent, events)),
                },
            };
            self.run_calls(pending, &mut progress, spent, events).await;
        }
    }

    /// One step: the model's turn. An answer ends the run; calls are checked and returned to be
    /// run.
    async fn step(
        &self,
        progress: &mut Progress,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<Turn, ModelError> {
        if let Some(budget) = spent.exhausted() {
            return self.wrap_up(budget, &mut progress.messages, spent, events).await.map(Turn::Done);
        }
        spent.steps += 1;
        let step = spent.steps;
        let thinking = self.config.thinking(step, progress.recovering);
        events.emit(&Event::StepStarted { step, thinking: self.model.thinks(thinking, !self.tools.is_empty()) });
        let deadline = spent.deadline;
        let turn = self.turn(step, &progress.messages, thinking, progress.tool_choice, spent, events);
        let reply = match timeout_at(deadline, turn).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => return Err(model_failed(step, error, spent, events)),
            Err(_) => return Ok(Turn::Again), // out of time: the next round wraps up
        };
        if let Some(text) = reply.reasoning.filter(|r| !r.trim().is_empty()) {
            events.emit(&Event::Reasoning { step, text });
        }
        let text = reply.text.trim().to_string();

        if reply.calls.is_empty() {
            if !text.is_empty() {
                return self.finish(step, text, &mut progress.messages, spent, events).await.map(Turn::Done);
            }
            progress.messages.push(Message::Assistant { content: String::new(), tool_calls: Vec::new() });
            progress.messages.push(Message::User {
                content: "Your reply was empty. Answer the task, or call one of the tools.".into(),
            });
            progress.recovering = true;
            return Ok(Turn::Again);
        }

        if !text.is_empty() {
            events.emit(&Event::Text { step, text: text.clone() });
        }
        let readable: Vec<ToolCall> = reply.calls.iter().filter_map(|c| c.as_ref().ok().cloned()).collect();
        progress.messages.push(Message::Assistant { content: text, tool_calls: readable });
        progress.recovering = false;
        Ok(self.check_calls(step, reply.calls, progress, spent, events).await)
    }
}

type Compiled = (HashMap<String, jsonschema::Validator>, Option<OutputCheck>);

fn compile_schemas(tools: &[ToolDeclaration], output_schema: Option<&Value>) -> Result<Compiled, InvalidSchema> {
    let validators = tools
        .iter()
        .map(|tool| {
            jsonschema::validator_for(&tool.parameters).map(|validator| (tool.name.clone(), validator)).map_err(|e| {
                InvalidSchema { of: format!("the parameters of tool `{}`", tool.name), reason: e.to_string() }
            })
        })
        .collect::<Result<_, _>>()?;
    let output = match output_schema {
        Some(schema) => {
            Some(OutputCheck::new(schema).map_err(|reason| InvalidSchema { of: "output.schema".into(), reason })?)
        }
        None => None,
    };
    Ok((validators, output))
}

/// Whether an agent with these tools and output schema can be built: every schema compiles.
pub fn check_schemas(tools: &[ToolDeclaration], output_schema: Option<&Value>) -> Result<(), InvalidSchema> {
    compile_schemas(tools, output_schema).map(drop)
}

/// `text`, cut after `max` characters with a note of how much was left out.
fn clipped(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}… ({} more bytes)", &text[..cut], text.len() - cut),
        None => text.to_string(),
    }
}
