//! The agent loop: ask the model, check its calls, run them, feed the results back, until the
//! model answers without a call or a budget runs out. Depends on the `Model` and `Toolbox` traits
//! only. Nothing the model writes can crash a run: an unknown tool, an unreadable call or invalid
//! arguments become an error message the model sees on the next step.

mod ask;
mod budget;
mod calls;
mod ending;
mod journal;
mod output;
mod repeats;
mod state;
mod sub_agents;
mod telemetry;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::context::FutureExt;
use serde_json::Value;
use tokio::time::timeout_at;

use crate::conversation::{Message, ToolCall, ToolChoice, ToolDeclaration};
use crate::events::{EVENTS_VERSION, Event, EventSink};
use crate::model::{Model, ModelError, ModelIdentity};
use crate::spec::{Budget, Limits, ReasoningMode, ReasoningPolicy};
use crate::toolbox::{Effect, ToolError, ToolErrorKind, ToolOutcome, Toolbox};
use crate::trace_context::TraceHeaders;

use budget::Spent;
pub use calls::check_arguments;
use ending::model_failed;
pub use journal::{CallRecord, Journal, JournalError, Stop};
use output::OutputCheck;
pub use repeats::REPEAT_LIMIT;
use repeats::RepeatGuard;
pub use state::Checkpoint;
use state::{Pending, Progress, SavedSpend};
pub use sub_agents::declaration as sub_agent_declaration;
use telemetry::AgentTelemetry;
pub use telemetry::{Instrumentation, SCOPE as TELEMETRY_SCOPE};

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

/// What skipping a call in doubt feeds back.
const SKIPPED: &str = "a person chose not to run this call again after its outcome was lost: do not retry it; \
                       go on without its result, or say what is missing";

/// Whether a call that needs approval may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
    /// Nobody can answer now: the run pauses, to be resumed with the decision.
    Pause,
}

/// A person's word on a call a paused run waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A call awaiting approval may run.
    Approve,
    /// A call awaiting approval is refused; the model is told a person declined it.
    Deny,
    /// A call in doubt runs again.
    Retry,
    /// A call in doubt did happen: this is its result.
    Done(Value),
    /// A call in doubt is not run again; the model is told so.
    Skip,
}

/// Why the loop stopped short: the model failed (the run ends `model_failed`), or the journal
/// could not record (the run stops where it last committed).
enum Failure {
    Model(ModelError),
    Journal(JournalError),
}

impl From<ModelError> for Failure {
    fn from(error: ModelError) -> Self {
        Failure::Model(error)
    }
}

impl From<JournalError> for Failure {
    fn from(error: JournalError) -> Self {
        Failure::Journal(error)
    }
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
    /// Who answers, as spans name it (asked of the model once).
    identity: ModelIdentity,
    toolbox: Box<dyn Toolbox>,
    tools: Vec<ToolDeclaration>,
    validators: HashMap<String, jsonschema::Validator>,
    output: Option<OutputCheck>,
    /// Agents this one may hand tasks to, by tool name.
    sub_agents: HashMap<String, Agent>,
    approver: Option<Box<dyn Approver>>,
    journal: Option<Arc<dyn Journal>>,
    telemetry: AgentTelemetry,
}

fn tool_names(tools: &[ToolDeclaration]) -> impl Iterator<Item = &str> {
    tools.iter().map(|tool| tool.name.as_str())
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
    /// The run stopped short: cancelled (final), or with the journal's last checkpoint to go on
    /// from (a shutdown, a journal that failed to record).
    Stopped { stop: Stop, steps: u32 },
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
        Ok(Agent {
            config,
            identity: model.identity(),
            model,
            toolbox,
            tools,
            validators,
            output,
            sub_agents: HashMap::new(),
            approver: None,
            journal: None,
            telemetry: AgentTelemetry::off(),
        })
    }

    /// Where the run's spans and measurements go, its sub-agents' included; without it, nowhere.
    pub fn set_instrumentation(&mut self, instrumentation: Instrumentation) {
        for agent in self.sub_agents.values_mut() {
            agent.set_instrumentation(instrumentation.clone());
        }
        self.telemetry = instrumentation.agent(&self.config.name, &self.identity, tool_names(&self.tools));
    }

    /// Where the run records its progress, so that it can be resumed after any stop.
    pub fn set_journal(&mut self, journal: Arc<dyn Journal>) {
        self.journal = Some(journal);
    }

    /// What a call of tool `name` does to the world; a sub-agent's calls, the most any of its
    /// tools does.
    fn effect(&self, name: &str) -> Effect {
        match self.sub_agents.get(name) {
            Some(agent) => {
                let tools = agent.tools.iter().map(|t| agent.effect(&t.name));
                tools.max_by_key(|effect| *effect as u8).unwrap_or(Effect::Pure)
            }
            None => self.toolbox.effect(name),
        }
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

    pub fn config(&self) -> &LoopConfig {
        &self.config
    }

    pub fn tools(&self) -> &[ToolDeclaration] {
        &self.tools
    }

    pub async fn run(&self, task: &str, events: &mut dyn EventSink) -> Result<RunOutcome, ModelError> {
        let mut spent = Spent::start(self.config.limits, self.keys());
        let outcome = self.run_within(task, &mut spent, events).await;
        settle(outcome, &spent)
    }

    /// A run under the budgets in `spent`, which records what it spends, in its own span under
    /// the current context (a caller's, or that of the call that runs a sub-agent).
    async fn run_within(
        &self,
        task: &str,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<RunOutcome, Failure> {
        let trace = self.telemetry.run(&spent.keys, None);
        let origin = TraceHeaders::of(&trace.context()).map(|headers| headers.traceparent);
        let mut watched = trace.watching(events);
        let outcome = self.start(task, origin, spent, &mut watched).with_context(trace.context()).await;
        trace.end();
        outcome
    }

    async fn start(
        &self,
        task: &str,
        origin: Option<String>,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<RunOutcome, Failure> {
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
            origin,
        };
        self.drive(task, progress, None, spent, events).await
    }

    /// Continues a run from its checkpoint (after a pause, a shutdown or a crash), with a
    /// person's `verdicts` on the calls it waits for, by call id. A call without a verdict keeps
    /// waiting. With a journal, a side-effect call that started and never finished is in doubt
    /// until a verdict says retry, done or skip; other calls the journal saw finish are not run
    /// again. Then the run goes on as if it had never stopped. Time stopped does not count
    /// against `limits.timeout`.
    pub async fn resume(
        &self,
        checkpoint: Checkpoint,
        verdicts: &HashMap<String, Verdict>,
        events: &mut dyn EventSink,
    ) -> Result<RunOutcome, ModelError> {
        let mut spent = checkpoint.spent.restore(self.config.limits, self.keys());
        let outcome = self.resume_within(checkpoint, verdicts, &mut spent, events).await;
        settle(outcome, &spent)
    }

    /// A resumed run's part, in a span of its own (a new trace, unless the caller's context has
    /// one) linked to the span the run first ran under.
    async fn resume_within(
        &self,
        checkpoint: Checkpoint,
        verdicts: &HashMap<String, Verdict>,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<RunOutcome, Failure> {
        let origin = checkpoint.progress.origin.as_deref().and_then(|origin| crate::trace_context::parse(origin, None));
        let trace = self.telemetry.run(&spent.keys, origin);
        let mut watched = trace.watching(events);
        let outcome = self.go_on(checkpoint, verdicts, spent, &mut watched).with_context(trace.context()).await;
        trace.end();
        outcome
    }

    async fn go_on(
        &self,
        checkpoint: Checkpoint,
        verdicts: &HashMap<String, Verdict>,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<RunOutcome, Failure> {
        let Checkpoint { task, progress, mut pending, .. } = checkpoint;
        let mut resumed = Resumed::default();
        for entry in &mut pending {
            let Ok(call) = &entry.call else { continue };
            let id = call.id.clone();
            if entry.refusal.is_none() && !entry.awaiting && !entry.in_doubt {
                entry.in_doubt = self.left_in_doubt(call).await?;
            }
            match verdicts.get(&id) {
                Some(Verdict::Approve) if entry.awaiting => {
                    entry.awaiting = false;
                    resumed.approved.push(id);
                }
                Some(Verdict::Deny) if entry.awaiting => {
                    entry.awaiting = false;
                    entry.refusal = Some(ToolError::new(ToolErrorKind::Denied, DENIED));
                    resumed.denied.push(id);
                }
                Some(Verdict::Retry) if entry.in_doubt => {
                    entry.in_doubt = false;
                    resumed.retried.push(id);
                }
                Some(Verdict::Done(result)) if entry.in_doubt => {
                    entry.in_doubt = false;
                    if let Some(journal) = &self.journal {
                        let outcome =
                            ToolOutcome { result: Ok(result.clone()), log: String::new(), duration: Duration::ZERO };
                        journal.call_finished(&id, &outcome, false).await?;
                    }
                    resumed.done.push(id);
                }
                Some(Verdict::Skip) if entry.in_doubt => {
                    entry.in_doubt = false;
                    entry.refusal = Some(ToolError::new(ToolErrorKind::Skipped, SKIPPED));
                    resumed.skipped.push(id);
                }
                _ => {}
            }
        }
        let decided = !resumed.is_empty();
        let Resumed { approved, denied, retried, done, skipped } = resumed;
        events.emit(&Event::RunResumed { step: spent.steps, approved, denied, retried, done, skipped });
        if decided {
            // The decisions are used up before anything acts on them: a stop from here on resumes
            // from a checkpoint that has them, never from one that would apply them twice.
            self.checkpoint(&task, &progress, &pending, &[], spent).await?;
        }
        if let Some(stop) = self.journal.as_ref().and_then(|j| j.stop_requested()) {
            return Ok(self.stopped(stop, spent, events));
        }
        if pending.iter().any(|p| p.awaiting || p.in_doubt) {
            return Ok(self.pause(&task, progress, pending, spent, events));
        }
        self.drive(&task, progress, Some(pending), spent, events).await
    }

    /// Whether `call` is a side-effect call the journal saw start and never finish.
    async fn left_in_doubt(&self, call: &ToolCall) -> Result<bool, JournalError> {
        let Some(journal) = &self.journal else { return Ok(false) };
        let unfinished = journal.call(&call.id).await? == CallRecord::Unfinished;
        Ok(unfinished && self.effect(&call.name) == Effect::SideEffect)
    }

    /// What the run's calls' idempotency keys start with: the durable run's id, the same after
    /// every resume; a fresh key for a run without a journal.
    fn keys(&self) -> String {
        self.journal.as_ref().map_or_else(crate::toolbox::fresh_key, |journal| journal.run_id().to_string())
    }

    /// The calls of a turn that will run, with their effects.
    fn starting<'a>(&self, pending: &'a [Pending]) -> Vec<(&'a ToolCall, Effect)> {
        let runs = |p: &&'a Pending| p.refusal.is_none() && !p.awaiting && !p.in_doubt;
        let calls = pending.iter().filter(runs).filter_map(|p| p.call.as_ref().ok());
        calls.map(|call| (call, self.effect(&call.name))).collect()
    }

    /// Commits where the run is, with the calls about to run, if it has a journal.
    async fn checkpoint(
        &self,
        task: &str,
        progress: &Progress,
        pending: &[Pending],
        starting: &[(&ToolCall, Effect)],
        spent: &Spent,
    ) -> Result<(), JournalError> {
        let Some(journal) = &self.journal else { return Ok(()) };
        let checkpoint = Checkpoint {
            task: task.to_string(),
            progress: progress.clone(),
            pending: pending.to_vec(),
            spent: SavedSpend::of(spent),
        };
        journal.checkpoint(&checkpoint, starting).await
    }

    /// The loop proper. `paused`: the calls of the turn a resumed run finishes first.
    async fn drive(
        &self,
        task: &str,
        mut progress: Progress,
        mut paused: Option<Vec<Pending>>,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<RunOutcome, Failure> {
        loop {
            if let Some(stop) = self.journal.as_ref().and_then(|j| j.stop_requested()) {
                return Ok(self.stopped(stop, spent, events));
            }
            let pending = match paused.take() {
                Some(pending) => pending,
                None => match self.step(&mut progress, spent, events).await? {
                    Turn::Calls(pending) => {
                        let starting = self.starting(&pending);
                        self.checkpoint(task, &progress, &pending, &starting, spent).await?;
                        pending
                    }
                    Turn::Again => continue,
                    Turn::Done(outcome) => return Ok(outcome),
                    Turn::Pause(pending) => return Ok(self.pause(task, progress, pending, spent, events)),
                },
            };
            self.run_calls(pending, &mut progress, spent, events).await?;
            self.checkpoint(task, &progress, &[], &[], spent).await?;
        }
    }

    /// One step: the model's turn. An answer ends the run; calls are checked and returned to be
    /// run.
    async fn step(
        &self,
        progress: &mut Progress,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<Turn, Failure> {
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
            Ok(Err(Failure::Model(error))) => return Err(model_failed(step, error, spent, events).into()),
            Ok(Err(failure)) => return Err(failure),
            Err(_) => return Ok(Turn::Again), // out of time: the next round wraps up
        };
        let reply = with_run_ids(step, reply);
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

/// What `resume` was told, for its `run_resumed` event.
#[derive(Default)]
struct Resumed {
    approved: Vec<String>,
    denied: Vec<String>,
    retried: Vec<String>,
    done: Vec<String>,
    skipped: Vec<String>,
}

impl Resumed {
    fn is_empty(&self) -> bool {
        [&self.approved, &self.denied, &self.retried, &self.done, &self.skipped].iter().all(|ids| ids.is_empty())
    }
}

/// A run's outcome as callers see it: a journal that failed stops the run where it last committed.
fn settle(outcome: Result<RunOutcome, Failure>, spent: &Spent) -> Result<RunOutcome, ModelError> {
    match outcome {
        Ok(outcome) => Ok(outcome),
        Err(Failure::Model(error)) => Err(error),
        Err(Failure::Journal(error)) => {
            Ok(RunOutcome::Stopped { stop: Stop::JournalFailed(error.0), steps: spent.steps })
        }
    }
}

/// The reply with call ids the loop assigns: unique within the run (`call_<step>_<n>`), where
/// backends' own ids repeat from turn to turn.
fn with_run_ids(step: u32, mut reply: crate::model::ModelReply) -> crate::model::ModelReply {
    for (index, call) in reply.calls.iter_mut().enumerate() {
        let id = format!("call_{step}_{}", index + 1);
        match call {
            Ok(call) => call.id = id,
            Err(bad) => bad.id = id,
        }
    }
    reply
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
