//! The agent loop: ask the model, check its calls, run them, feed the results back, until the
//! model answers without a call or a budget runs out. Depends on the `Model` and `Toolbox` traits
//! only. Nothing the model writes can crash a run: an unknown tool, an unreadable call or invalid
//! arguments become an error message the model sees on the next step.

mod budget;
mod output;
mod repeats;
mod sub_agents;

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::timeout_at;

use crate::conversation::{MalformedCall, Message, ToolCall, ToolChoice, ToolDeclaration};
use crate::events::{EVENTS_VERSION, Event, EventSink, RunStatus};
use crate::model::{Delta, DeltaKind, Model, ModelError, ModelReply, ModelRequest, Usage};
use crate::spec::{Budget, Limits, ReasoningMode, ReasoningPolicy};
use crate::toolbox::{ToolError, ToolOutcome, Toolbox};

use budget::{Spent, deadline_after};
use output::OutputCheck;
pub use repeats::REPEAT_LIMIT;
use repeats::{RepeatGuard, Verdict};

/// Calls of one turn that run at once; more wait for a slot.
pub const MAX_PARALLEL_CALLS: usize = 8;

/// How long the wrap-up turn after a spent budget may take, on top of the budget.
pub const WRAP_UP_TIME: Duration = Duration::from_secs(60);

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

/// A paused run: the conversation, what it has spent, and the calls of the turn it stopped in.
/// Serialisable, so a run can be resumed by another process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub task: String,
    progress: Progress,
    pending: Vec<Pending>,
    spent: SavedSpend,
}

impl Checkpoint {
    /// The calls waiting for a decision: (id, tool, arguments).
    pub fn awaiting(&self) -> Vec<&ToolCall> {
        self.pending.iter().filter(|p| p.awaiting).filter_map(|p| p.call.as_ref().ok()).collect()
    }
}

/// Where a run is between turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Progress {
    messages: Vec<Message>,
    /// The last turn failed: `auto` thinks on the next.
    recovering: bool,
    repeats: RepeatGuard,
    /// `required`: calls are forced until one has run successfully; then the model may answer.
    tool_choice: ToolChoice,
}

/// A call of the current turn, with what the loop decided before running it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    call: Result<ToolCall, MalformedCall>,
    refusal: Option<ToolError>,
    /// Waiting for a person's decision.
    awaiting: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SavedSpend {
    steps: u32,
    tool_calls: u32,
    usage: Option<Usage>,
    time_left_ms: u64,
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
        let validators = tools
            .iter()
            .map(|tool| {
                jsonschema::validator_for(&tool.parameters).map(|validator| (tool.name.clone(), validator)).map_err(
                    |e| InvalidSchema { of: format!("the parameters of tool `{}`", tool.name), reason: e.to_string() },
                )
            })
            .collect::<Result<_, _>>()?;
        let output = match &config.output_schema {
            Some(schema) => {
                Some(OutputCheck::new(schema).map_err(|reason| InvalidSchema { of: "output.schema".into(), reason })?)
            }
            None => None,
        };
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

    /// The conversation a run starts from.
    pub fn opening(&self, task: &str) -> Vec<Message> {
        let mut messages = Vec::new();
        let mut system = self.config.instructions.trim_end().to_string();
        if let Some(schema) = &self.config.output_schema {
            system = format!("{system}\n\n{}", output::instructions_note(schema)).trim_start().to_string();
        }
        if !system.is_empty() {
            messages.push(Message::System { content: system });
        }
        messages.push(Message::User { content: task.to_string() });
        messages
    }

    /// Whether step `step` reasons: `auto` thinks to plan (first step) and to recover (after a
    /// failed or rejected call), and acts fast otherwise.
    pub fn thinking(&self, step: u32, recovering: bool) -> bool {
        match self.config.reasoning.mode {
            ReasoningMode::On => true,
            ReasoningMode::Off => false,
            ReasoningMode::Auto => step == 1 || recovering,
        }
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
            messages: self.opening(task),
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
        let mut spent = Spent::start(self.config.limits);
        (spent.steps, spent.tool_calls, spent.usage) = (saved.steps, saved.tool_calls, saved.usage);
        spent.deadline = deadline_after(Duration::from_millis(saved.time_left_ms));
        let (mut yes, mut no) = (Vec::new(), Vec::new());
        for entry in pending.iter_mut().filter(|p| p.awaiting) {
            entry.awaiting = false;
            let id = entry.call.as_ref().map(|c| c.id.clone()).unwrap_or_default();
            if approved.get(&id).copied().unwrap_or(false) {
                yes.push(id);
            } else {
                entry.refusal = Some(ToolError::new("denied", DENIED));
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

    /// One model turn: an answer ends the run; calls are checked (budget, repeats, approval) and
    /// returned to be run.
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
        let thinking = self.thinking(step, progress.recovering);
        events.emit(&Event::StepStarted { step, thinking });
        let deadline = spent.deadline;
        let turn = self.turn(step, &progress.messages, thinking, progress.tool_choice, spent, events);
        let reply = match timeout_at(deadline, turn).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => return Err(model_failed(step, error, spent.usage, events)),
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
        let calls_left = spent.calls_left() as usize;
        spent.tool_calls = spent.tool_calls.saturating_add(u32::try_from(reply.calls.len()).unwrap_or(u32::MAX));
        let mut pending = Vec::with_capacity(reply.calls.len());
        for (index, call) in reply.calls.into_iter().enumerate() {
            let Ok(readable) = &call else {
                pending.push(Pending { call, refusal: None, awaiting: false });
                continue;
            };
            let refusal = if index >= calls_left {
                let message = format!("not run: {} is spent", Budget::MaxToolCalls.describe(&spent.limits));
                Some(ToolError::new("budget", message))
            } else {
                match progress.repeats.check(readable) {
                    Verdict::Run => None,
                    Verdict::Refuse(message) => Some(ToolError::new("repeated_call", message)),
                    Verdict::Stop => {
                        let message = format!("stopped: `{}` was called again with the same arguments", readable.name);
                        events.emit(&Event::RunFinished {
                            status: RunStatus::Loop,
                            budget: None,
                            steps: step,
                            message: Some(message),
                            usage: spent.usage,
                        });
                        return Ok(Turn::Done(RunOutcome::Looped { steps: step, tool: readable.name.clone() }));
                    }
                }
            };
            let (id, tool, arguments) = (readable.id.clone(), readable.name.clone(), readable.arguments.clone());
            events.emit(&Event::ToolCall { step, id, tool, arguments });
            pending.push(Pending { call, refusal, awaiting: false });
        }
        for entry in &mut pending {
            let Ok(call) = &entry.call else { continue };
            if entry.refusal.is_some() || !self.toolbox.needs_approval(&call.name) {
                continue;
            }
            let decision = match &self.approver {
                Some(approver) => approver.decide(step, call).await,
                None => Decision::Pause,
            };
            match decision {
                Decision::Approve => {}
                Decision::Deny => entry.refusal = Some(ToolError::new("denied", DENIED)),
                Decision::Pause => entry.awaiting = true,
            }
        }
        if pending.iter().any(|p| p.awaiting) {
            return Ok(Turn::Pause(pending));
        }
        Ok(Turn::Calls(pending))
    }

    /// Runs a turn's calls and feeds the results back. The calls run concurrently (at most
    /// MAX_PARALLEL_CALLS at once); their results are fed back in the order the model wrote them.
    /// Sub-agents called in one turn each get budgets carved from what the run had left when the
    /// turn began.
    async fn run_calls(
        &self,
        pending: Vec<Pending>,
        progress: &mut Progress,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) {
        let step = spent.steps;
        let deadline = spent.deadline;
        let before = &*spent;
        let outcomes: Vec<(String, Option<String>, ToolOutcome, Option<Spent>)> = stream::iter(pending)
            .map(|Pending { call, refusal, .. }| async move {
                match call {
                    Ok(call) => {
                        let (outcome, child) = match refusal {
                            Some(error) => (failed(error), None),
                            None => {
                                let running = timeout_at(deadline, self.execute(&call, before));
                                running.await.unwrap_or_else(|_| {
                                    let limit = Budget::Timeout.describe(&before.limits);
                                    let message = format!("{limit} ran out before this call finished");
                                    (failed(ToolError::new("timeout", message)), None)
                                })
                            }
                        };
                        (call.id, Some(call.name), outcome, child)
                    }
                    Err(bad) => {
                        let message = format!("{} (you wrote: {})", bad.error, bad.raw);
                        (bad.id, None, failed(ToolError::new("malformed_call", message)), None)
                    }
                }
            })
            .buffered(MAX_PARALLEL_CALLS)
            .collect()
            .await;
        for (id, tool, outcome, child) in outcomes {
            if let Some(child) = child {
                spent.absorb(&child);
            }
            progress.recovering |= outcome.result.is_err();
            if outcome.result.is_ok() {
                progress.tool_choice = ToolChoice::Auto;
            }
            progress.messages.push(Message::Tool { call_id: id.clone(), content: fed_back(&outcome.result) });
            events.emit(&result_event(step, id, tool, outcome));
        }
    }

    /// Stops the run until a person decides on the awaited calls; the checkpoint is all
    /// `resume` needs.
    fn pause(
        &self,
        task: &str,
        progress: Progress,
        pending: Vec<Pending>,
        spent: &Spent,
        events: &mut dyn EventSink,
    ) -> RunOutcome {
        let step = spent.steps;
        for entry in pending.iter().filter(|p| p.awaiting) {
            if let Ok(call) = &entry.call {
                let (id, tool, arguments) = (call.id.clone(), call.name.clone(), call.arguments.clone());
                events.emit(&Event::ApprovalRequired { step, id, tool, arguments });
            }
        }
        events.emit(&Event::RunFinished {
            status: RunStatus::Paused,
            budget: None,
            steps: step,
            message: Some("waiting for a person to approve or deny the calls above".into()),
            usage: spent.usage,
        });
        let time_left = spent.deadline.saturating_duration_since(tokio::time::Instant::now());
        RunOutcome::Paused(Box::new(Checkpoint {
            task: task.to_string(),
            progress,
            pending,
            spent: SavedSpend {
                steps: spent.steps,
                tool_calls: spent.tool_calls,
                usage: spent.usage,
                time_left_ms: u64::try_from(time_left.as_millis()).unwrap_or(u64::MAX),
            },
        }))
    }

    /// The model answered. With `output.schema`, an answer that does not match gets one repair
    /// turn, without tools, that quotes the validator's errors.
    async fn finish(
        &self,
        step: u32,
        answer: String,
        messages: &mut Vec<Message>,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<RunOutcome, ModelError> {
        let Some(check) = &self.output else {
            return Ok(answered(step, answer, None, spent, events));
        };
        let errors = match check.check(&answer) {
            Ok(output) => return Ok(answered(step, answer, Some(output), spent, events)),
            Err(errors) => errors,
        };
        events.emit(&Event::OutputInvalid { step, answer: answer.clone(), errors: errors.clone() });
        messages.push(Message::Assistant { content: answer, tool_calls: Vec::new() });
        messages.push(Message::User { content: output::repair_request(&errors) });
        spent.steps += 1;
        let step = spent.steps;
        events.emit(&Event::StepStarted { step, thinking: false });
        let deadline = spent.deadline;
        let turn = self.ask(step, messages, false, &[], ToolChoice::Auto, spent, events);
        let repaired = match timeout_at(deadline, turn).await {
            Ok(Ok(reply)) => reply.text.trim().to_string(),
            Ok(Err(error)) => return Err(model_failed(step, error, spent.usage, events)),
            Err(_) => String::new(),
        };
        let errors = match check.check(&repaired) {
            Ok(output) => return Ok(answered(step, repaired, Some(output), spent, events)),
            Err(errors) => errors,
        };
        events.emit(&Event::OutputInvalid { step, answer: repaired.clone(), errors: errors.clone() });
        events.emit(&Event::RunFinished {
            status: RunStatus::InvalidOutput,
            budget: None,
            steps: step,
            message: Some(format!("the answer does not match output.schema after one repair: {}", errors.join("; "))),
            usage: spent.usage,
        });
        Ok(RunOutcome::InvalidOutput { answer: repaired, errors, steps: step })
    }

    /// A budget ran out: one more turn, without tools, asks for the best answer from what is known.
    /// The run ends incomplete either way, with or without that answer.
    async fn wrap_up(
        &self,
        budget: Budget,
        messages: &mut Vec<Message>,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<RunOutcome, ModelError> {
        let step = spent.steps + 1;
        let described = budget.describe(&spent.limits);
        events.emit(&Event::BudgetSpent { step, budget, message: format!("{described} is spent") });
        let thinking = self.config.reasoning.mode == ReasoningMode::On;
        events.emit(&Event::StepStarted { step, thinking });
        messages.push(Message::User {
            content: format!(
                "You have run out of budget ({described}) and can no longer use tools. Answer the task now, as well \
                 as you can from what you already know, and say what is still missing."
            ),
        });
        let turn = self.ask(step, messages, thinking, &[], ToolChoice::Auto, spent, events);
        let answer = match timeout_at(deadline_after(WRAP_UP_TIME), turn).await {
            Ok(Ok(reply)) => Some(reply.text.trim().to_string()).filter(|text| !text.is_empty()),
            Ok(Err(_)) | Err(_) => None,
        };
        let outcome = match &answer {
            Some(text) => {
                events.emit(&Event::Answer { step, text: text.clone(), output: None });
                "its answer is the best from what it knew"
            }
            None => "and gave no answer",
        };
        events.emit(&Event::RunFinished {
            status: RunStatus::Incomplete,
            budget: Some(budget),
            steps: step,
            message: Some(format!("ran out of {described}; {outcome}")),
            usage: spent.usage,
        });
        Ok(RunOutcome::Incomplete { budget, answer, steps: step })
    }

    /// One step's model turn. In `auto` with `before_answer`, an answer drafted without thinking is
    /// dropped and the step asked again with thinking on.
    async fn turn(
        &self,
        step: u32,
        messages: &[Message],
        thinking: bool,
        tool_choice: ToolChoice,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<ModelReply, ModelError> {
        let reply = self.ask(step, messages, thinking, &self.tools, tool_choice, spent, events).await?;
        let reconsider = self.config.reasoning.mode == ReasoningMode::Auto
            && self.config.reasoning.before_answer
            && !thinking
            && reply.calls.is_empty()
            && !reply.text.trim().is_empty();
        if !reconsider {
            return Ok(reply);
        }
        events.emit(&Event::Reconsidering { step, draft: reply.text.trim().to_string() });
        self.ask(step, messages, true, &self.tools, tool_choice, spent, events).await
    }

    /// One model turn, its deltas streamed into the events as they come. Thinking past
    /// `max_thinking_tokens` is cut off and the step asked again without thinking.
    #[allow(clippy::too_many_arguments)] // one step's whole context; a struct would only rename it
    async fn ask(
        &self,
        step: u32,
        messages: &[Message],
        thinking: bool,
        tools: &[ToolDeclaration],
        tool_choice: ToolChoice,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<ModelReply, ModelError> {
        let budget = self.config.reasoning.max_thinking_tokens.filter(|_| thinking);
        let (deltas, mut incoming) = mpsc::unbounded_channel();
        let request = ModelRequest { messages, tools, thinking, tool_choice, deltas: Some(deltas) };
        let mut thought = String::new();
        let mut thought_tokens = 0u32;
        let mut over_budget = |delta: Delta, events: &mut dyn EventSink| {
            if delta.kind == DeltaKind::Reasoning {
                thought_tokens = thought_tokens.saturating_add(1);
                thought.push_str(&delta.text);
            }
            events.emit(&Event::Delta { step, kind: delta.kind, text: delta.text });
            budget.is_some_and(|max| thought_tokens > max)
        };
        // Boxed by the trait, so dropping it below really cancels the request.
        let mut pending = self.model.complete(request);
        let mut cut = false;
        let mut finished = None;
        while finished.is_none() && !cut {
            tokio::select! {
                biased;
                Some(delta) = incoming.recv() => cut = over_budget(delta, events),
                result = &mut pending => finished = Some(result),
            }
        }
        while let (false, Ok(delta)) = (cut, incoming.try_recv()) {
            cut = over_budget(delta, events);
        }
        if !cut {
            let reply = finished.unwrap_or_else(|| Err(ModelError("the model stopped without a reply".into())))?;
            if let Some(usage) = reply.usage {
                spent.add_usage(usage);
                events.emit(&Event::Usage { step, thinking, usage });
            }
            return Ok(reply);
        }
        drop(pending); // stop generating before the step is asked again
        let thought_tokens = thought_tokens - 1;
        events.emit(&Event::ThinkingCut { step, tokens: thought_tokens, reasoning: thought });
        spent.add_usage(Usage {
            completion_tokens: thought_tokens,
            reasoning_tokens: thought_tokens,
            ..Usage::default()
        });
        Box::pin(self.ask(step, messages, false, tools, tool_choice, spent, events)).await
    }

    /// Checks a call against the declared tools and their schemas, then runs it: on the toolbox,
    /// or as a sub-agent's run with budgets carved from `parent`'s, whose spending it returns.
    async fn execute(&self, call: &ToolCall, parent: &Spent) -> (ToolOutcome, Option<Spent>) {
        let failed = |error| (failed(error), None);
        let Some(validator) = self.validators.get(&call.name) else {
            let known: Vec<&str> = self.tools.iter().map(|t| t.name.as_str()).collect();
            return failed(ToolError::new(
                "unknown_tool",
                format!("there is no tool `{}`; the tools are: {}", call.name, known.join(", ")),
            ));
        };
        let problems: Vec<String> = validator
            .iter_errors(&call.arguments)
            .map(|e| match e.instance_path().to_string() {
                path if path.is_empty() => clipped(e.to_string()),
                path => format!("{path}: {}", clipped(e.to_string())),
            })
            .collect();
        if !problems.is_empty() {
            return failed(ToolError::new(
                "invalid_arguments",
                format!("invalid arguments for `{}`: {}", call.name, problems.join("; ")),
            ));
        }
        let Some(sub_agent) = self.sub_agents.get(&call.name) else {
            return (self.toolbox.call(&call.name, &call.arguments).await, None);
        };
        let task = call.arguments["task"].as_str().unwrap_or_default();
        let mut spent = Spent::start(parent.carve(&sub_agent.config.limits));
        let started = std::time::Instant::now();
        let mut steps = Vec::new();
        let mut record = |event: &Event| {
            if let Event::ToolCall { tool, .. } = event {
                steps.push(tool.clone());
            }
        };
        // Boxed: a sub-agent's run is the same async function as its parent's.
        let outcome = Box::pin(sub_agent.run_within(task, &mut spent, &mut record)).await;
        let log = format!("sub-agent `{}`: {} step(s), calls: {}", call.name, spent.steps, steps.join(", "));
        let outcome = ToolOutcome { result: sub_agents::result(outcome), log, duration: started.elapsed() };
        (outcome, Some(spent))
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

fn answered(step: u32, answer: String, output: Option<Value>, spent: &Spent, events: &mut dyn EventSink) -> RunOutcome {
    events.emit(&Event::Answer { step, text: answer.clone(), output: output.clone() });
    events.emit(&Event::RunFinished {
        status: RunStatus::Answered,
        budget: None,
        steps: step,
        message: None,
        usage: spent.usage,
    });
    RunOutcome::Answered { answer, output, steps: step }
}

fn model_failed(step: u32, error: ModelError, usage: Option<Usage>, events: &mut dyn EventSink) -> ModelError {
    events.emit(&Event::RunFinished {
        status: RunStatus::ModelFailed,
        budget: None,
        steps: step,
        message: Some(error.to_string()),
        usage,
    });
    error
}

/// A validator's message quotes the offending value; a huge one must not be fed back whole.
fn clipped(mut message: String) -> String {
    const MAX: usize = 500;
    if let Some((cut, _)) = message.char_indices().nth(MAX) {
        let more = message.len() - cut;
        message.truncate(cut);
        message.push_str(&format!("… ({more} more bytes)"));
    }
    message
}

fn failed(error: ToolError) -> ToolOutcome {
    ToolOutcome { result: Err(error), log: String::new(), duration: Duration::ZERO }
}

/// What the model reads in place of a result when a call failed.
fn fed_back(result: &Result<Value, ToolError>) -> Value {
    match result {
        Ok(value) => value.clone(),
        Err(error) => Value::String(format!("error ({}): {}", error.kind, error.message)),
    }
}

fn result_event(step: u32, id: String, tool: Option<String>, outcome: ToolOutcome) -> Event {
    let duration_ms = outcome.duration.as_secs_f64() * 1000.0;
    let (ok, result, error) = match outcome.result {
        Ok(value) => (true, Some(value), None),
        Err(error) => (false, None, Some(error)),
    };
    Event::ToolResult { step, id, tool, ok, result, error, log: outcome.log, duration_ms }
}
