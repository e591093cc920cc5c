//! The tools as the loop sees them: declarations to show the model, and a way to call one.
//! The loop depends on this trait only; `wasm` implements it with the sandbox.

pub mod mcp;
mod stubs;
mod wasm;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::conversation::ToolDeclaration;

pub use mcp::{McpToolbox, Pinning};
pub use stubs::Stubbed;
pub use wasm::WasmToolbox;

#[async_trait]
pub trait Toolbox: Send + Sync {
    fn declarations(&self) -> Vec<ToolDeclaration>;

    /// Calls a declared tool with arguments already validated against its schema, in `context`
    /// (the call's idempotency key, where its progress goes).
    async fn call(&self, name: &str, arguments: &Value, context: &CallContext) -> ToolOutcome;

    /// Whether a call of `name` must wait for a person's yes (the agent file's `approval:`).
    fn needs_approval(&self, _name: &str) -> bool {
        false
    }

    /// What a call of `name` does to the world, as the tool declares it; a tool that says
    /// nothing is taken to have side effects.
    fn effect(&self, _name: &str) -> Effect {
        Effect::SideEffect
    }

    /// The tool's type as telemetry names it (`gen_ai.tool.type`): `function` for a tool run
    /// in the process's sandbox, `extension` for one another process runs.
    fn tool_type(&self, _name: &str) -> &'static str {
        "function"
    }
}

/// What a call runs with besides its arguments.
#[derive(Clone)]
pub struct CallContext {
    idempotency_key: String,
    progress: Option<(String, mpsc::UnboundedSender<ToolProgress>)>,
    trace: opentelemetry::Context,
}

impl CallContext {
    /// A call whose progress goes nowhere.
    pub fn new(idempotency_key: impl Into<String>) -> Self {
        CallContext { idempotency_key: idempotency_key.into(), progress: None, trace: opentelemetry::Context::new() }
    }

    /// A call whose progress reports go to `sink`, marked with its `call_id`.
    pub fn reporting(
        idempotency_key: impl Into<String>,
        call_id: &str,
        sink: mpsc::UnboundedSender<ToolProgress>,
    ) -> Self {
        CallContext {
            idempotency_key: idempotency_key.into(),
            progress: Some((call_id.to_string(), sink)),
            trace: opentelemetry::Context::new(),
        }
    }

    /// The same, inside `trace` (the call's span): a tool that crosses a process boundary passes
    /// it on, and notes what it did on the span.
    pub fn traced(mut self, trace: opentelemetry::Context) -> Self {
        self.trace = trace;
        self
    }

    /// The id the model gave the call, where the loop runs it.
    pub fn call_id(&self) -> Option<&str> {
        self.progress.as_ref().map(|(id, _)| id.as_str())
    }

    /// The call's trace context (empty when nothing is traced).
    pub fn trace(&self) -> &opentelemetry::Context {
        &self.trace
    }

    /// The same on every attempt of this call and different for every other call: a tool with
    /// side effects hands it to the APIs it calls so that a retry after a crash does not do the
    /// thing twice.
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// Reports how far the call has got (`progress` of `total`, when known); the message is
    /// clipped, since it is the tool's text.
    pub fn report(&self, progress: f64, total: Option<f64>, message: Option<&str>) {
        if let Some((call_id, sink)) = &self.progress {
            let message = message.map(|m| m.chars().take(MAX_PROGRESS_MESSAGE).collect());
            let _ = sink.send(ToolProgress { call_id: call_id.clone(), progress, total, message });
        }
    }
}

/// The characters of a progress message kept.
const MAX_PROGRESS_MESSAGE: usize = 200;

/// How far a running call has got, as its tool reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolProgress {
    pub call_id: String,
    pub progress: f64,
    pub total: Option<f64>,
    pub message: Option<String>,
}

/// A key no other call has had, for a call made outside a durable run (whose calls' keys come
/// from the run's id): `key_` and 128 random bits.
pub fn fresh_key() -> String {
    let mut bytes = [0u8; 16];
    // Without the OS's randomness no key can be told apart from another's: there is no fallback.
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    format!("key_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// What a call does to the world: whether running it again after a crash is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Reads only; the same call gives the same result.
    Pure,
    /// Changes the world, but doing it twice is the same as once.
    Idempotent,
    /// Changes the world each time it runs: never run twice without a person's word.
    SideEffect,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Pure => "pure",
            Effect::Idempotent => "idempotent",
            Effect::SideEffect => "side_effect",
        }
    }
}

/// One toolbox shared by many agents, e.g. by concurrent runs of one agent file.
#[async_trait]
impl<T: Toolbox + ?Sized> Toolbox for std::sync::Arc<T> {
    fn declarations(&self) -> Vec<ToolDeclaration> {
        (**self).declarations()
    }

    async fn call(&self, name: &str, arguments: &Value, context: &CallContext) -> ToolOutcome {
        (**self).call(name, arguments, context).await
    }

    fn needs_approval(&self, name: &str) -> bool {
        (**self).needs_approval(name)
    }

    fn effect(&self, name: &str) -> Effect {
        (**self).effect(name)
    }

    fn tool_type(&self, name: &str) -> &'static str {
        (**self).tool_type(name)
    }
}

/// Several toolboxes as one (an agent's components and its MCP servers): each name is routed to
/// the toolbox that declares it; the loaders keep names unique.
pub struct Toolboxes {
    parts: Vec<Box<dyn Toolbox>>,
    owners: std::collections::HashMap<String, usize>,
}

impl Toolboxes {
    pub fn new(parts: Vec<Box<dyn Toolbox>>) -> Self {
        let owners = parts
            .iter()
            .enumerate()
            .flat_map(|(index, part)| part.declarations().into_iter().map(move |d| (d.name, index)))
            .collect();
        Toolboxes { parts, owners }
    }

    fn owner(&self, name: &str) -> Option<&dyn Toolbox> {
        self.owners.get(name).map(|&index| &*self.parts[index])
    }
}

#[async_trait]
impl Toolbox for Toolboxes {
    fn declarations(&self) -> Vec<ToolDeclaration> {
        self.parts.iter().flat_map(|p| p.declarations()).collect()
    }

    async fn call(&self, name: &str, arguments: &Value, context: &CallContext) -> ToolOutcome {
        match self.owner(name) {
            Some(owner) => owner.call(name, arguments, context).await,
            None => ToolOutcome {
                result: Err(ToolError::new(ToolErrorKind::UnknownTool, format!("no tool `{name}`"))),
                log: String::new(),
                duration: Duration::ZERO,
            },
        }
    }

    fn needs_approval(&self, name: &str) -> bool {
        self.owner(name).is_some_and(|o| o.needs_approval(name))
    }

    fn effect(&self, name: &str) -> Effect {
        self.owner(name).map_or(Effect::SideEffect, |o| o.effect(name))
    }

    fn tool_type(&self, name: &str) -> &'static str {
        self.owner(name).map_or("function", |o| o.tool_type(name))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolOutcome {
    pub result: Result<Value, ToolError>,
    /// What the tool printed (stdout, then stderr), capped.
    pub log: String,
    pub duration: Duration,
}

/// A failed call, as fed back to the model and reported in events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolError {
    pub kind: ToolErrorKind,
    pub message: String,
}

impl ToolError {
    pub fn new(kind: ToolErrorKind, message: impl Into<String>) -> Self {
        ToolError { kind, message: message.into() }
    }
}

/// Why a call failed: the vocabulary of `tool_result` events (and, through them, of every
/// interface that reports runs). The serialised names are stable; new kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolErrorKind {
    // The loop refused the call.
    /// No tool of that name (or, from a tool, no such tool in the component).
    UnknownTool,
    /// The call could not be read.
    MalformedCall,
    /// The arguments failed the tool's schema (or the tool's own checks).
    InvalidArguments,
    /// The same call again, after being told the result would not change.
    RepeatedCall,
    /// Past `limits.max_tool_calls`.
    Budget,
    /// Past the tool's CPU or wall-clock limit, or the run's `limits.timeout`.
    Timeout,
    /// A person said no, or a grant does not allow what the tool tried.
    Denied,
    // A sub-agent did not answer.
    /// It ran out of a budget.
    Incomplete,
    /// It was stopped for repeating a call.
    Loop,
    /// Its answer did not match its output schema.
    InvalidOutput,
    /// Its model failed.
    ModelFailed,
    /// It needed a person's approval, which a sub-agent cannot wait for.
    ApprovalRequired,
    // The sandbox stopped the call.
    /// Past the memory limit.
    Memory,
    /// The result or the log is over its limit.
    OutputTooLarge,
    /// The tool crashed.
    Trap,
    /// The tool returned something that is not JSON.
    BadResult,
    /// Past `max_write` (the call's or its grant's).
    WriteLimit,
    /// Past `max_files` (the call's or its grant's).
    FileLimit,
    /// Past `max_handles`.
    HandleLimit,
    // The tool's own errors.
    /// What the tool was asked for does not exist.
    NotFound,
    /// Anything else the tool reports.
    Failed,
    // A person's word.
    /// A call whose outcome a crash left unknown was skipped, not run again.
    Skipped,
    // A replay.
    /// A tool stubbed on replay (`replay: stub`) has no recorded result for the call.
    Unrecorded,
}

impl ToolErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolErrorKind::UnknownTool => "unknown_tool",
            ToolErrorKind::Unrecorded => "unrecorded",
            ToolErrorKind::MalformedCall => "malformed_call",
            ToolErrorKind::InvalidArguments => "invalid_arguments",
            ToolErrorKind::RepeatedCall => "repeated_call",
            ToolErrorKind::Budget => "budget",
            ToolErrorKind::Timeout => "timeout",
            ToolErrorKind::Denied => "denied",
            ToolErrorKind::Incomplete => "incomplete",
            ToolErrorKind::Loop => "loop",
            ToolErrorKind::InvalidOutput => "invalid_output",
            ToolErrorKind::ModelFailed => "model_failed",
            ToolErrorKind::ApprovalRequired => "approval_required",
            ToolErrorKind::Memory => "memory",
            ToolErrorKind::OutputTooLarge => "output_too_large",
            ToolErrorKind::Trap => "trap",
            ToolErrorKind::BadResult => "bad_result",
            ToolErrorKind::WriteLimit => "write_limit",
            ToolErrorKind::FileLimit => "file_limit",
            ToolErrorKind::HandleLimit => "handle_limit",
            ToolErrorKind::NotFound => "not_found",
            ToolErrorKind::Failed => "failed",
            ToolErrorKind::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for ToolErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
