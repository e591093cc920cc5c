//! The model interface: structured turns in (messages, tool declarations, the reasoning flag),
//! structured turns out (reasoning, tool calls, text). One module per backend behind one trait;
//! the loop never knows which backend it talks to.

mod call_grammar;
pub mod catalog;
pub mod llama_cpp;
mod local;
mod mistralrs;
mod openai;
mod replay;
mod sse;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use crate::conversation::{MalformedCall, Message, ToolCall, ToolChoice, ToolDeclaration};

pub use local::{LocalModelError, LocalModels, check as check_local, load as load_local};
pub use openai::OpenAiModel;

use crate::chat_format::exaone;
use crate::spec::ModelSpec;

/// A request as a backend would be sent it, built without starting the model.
pub enum RequestPreview {
    /// Text reagent renders itself (EXAONE 4.0's format), exactly as the model reads it.
    Prompt(String),
    /// What the engine or server receives; the model's own chat template renders it.
    Request(serde_json::Value),
    /// `replay` reads no prompt: the request in EXAONE 4.0's format, for reference.
    Reference(String),
}

/// What `reagent prompt` shows for the model in `spec`: nothing is loaded and nothing is sent.
pub fn preview(spec: &ModelSpec, request: &ModelRequest<'_>) -> RequestPreview {
    match spec {
        ModelSpec::Replay { .. } => {
            RequestPreview::Reference(exaone::render(request.messages, request.tools, request.thinking))
        }
        ModelSpec::Local(local) => match local::request_preview(local, request) {
            either::Either::Left(prompt) => RequestPreview::Prompt(prompt),
            either::Either::Right(request) => RequestPreview::Request(request),
        },
        ModelSpec::OpenAi(openai) => RequestPreview::Request(openai::request_body(openai, request)),
    }
}
pub use replay::{RecordedTurn, ReplayModel, Script, ScriptTurn, Streamed};

pub struct ModelRequest<'a> {
    pub messages: &'a [Message],
    pub tools: &'a [ToolDeclaration],
    /// Whether the model reasons before it acts on this step.
    pub thinking: bool,
    /// `Required` on a step where the model must call a tool.
    pub tool_choice: ToolChoice,
    /// `reasoning.max_thinking_tokens` on a thinking step: a backend that can close the reasoning
    /// there itself and go on to the reply does (the loop cuts those that cannot).
    pub max_thinking_tokens: Option<u32>,
    /// `output.schema`: what an answer must match, for backends that constrain it.
    pub answer_schema: Option<&'a serde_json::Value>,
    /// Where the reply's text goes as it is generated, for backends that stream.
    pub deltas: Option<UnboundedSender<Delta>>,
}

/// A piece of the reply as it is generated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delta {
    pub kind: DeltaKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaKind {
    Reasoning,
    Text,
}

/// What a step cost, in tokens, as the backend counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    /// All generated tokens, reasoning included.
    pub completion_tokens: u32,
    pub reasoning_tokens: u32,
    /// Prompt tokens the backend had cached from an earlier step (not computed again).
    #[serde(default)]
    pub cached_tokens: u32,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        // Counts come from servers; a wild one must not overflow a run.
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(other.cached_tokens);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelReply {
    pub reasoning: Option<String>,
    /// The text outside calls: the answer when there are no calls.
    pub text: String,
    /// The calls in the order the model wrote them, including those that could not be read.
    pub calls: Vec<Result<ToolCall, MalformedCall>>,
    /// `None` where the backend counts no tokens (`replay`).
    pub usage: Option<Usage>,
    /// What the model wrote, as the engine returned it (for an OpenAI-compatible server: the
    /// content, then each tool call as the server sent it).
    pub raw: Option<String>,
}

/// A free-text reply's reasoning, answer and calls (tags, fences, bare JSON), into `reply`; `id`
/// names each call.
pub(crate) fn read_free_text(reply: &mut ModelReply, raw: &str, mut id: impl FnMut() -> String) {
    let parsed = crate::chat_format::parse_output(raw);
    reply.reasoning = parsed.reasoning;
    reply.text = parsed.text;
    reply.calls = parsed
        .calls
        .into_iter()
        .map(|call| match call {
            Ok(call) => Ok(ToolCall { id: id(), name: call.name, arguments: call.arguments }),
            Err(bad) => Err(MalformedCall { id: id(), raw: bad.raw, error: bad.error }),
        })
        .collect();
}

/// Sends a delta if someone listens; a closed listener is not the model's problem.
pub(crate) fn send_delta(deltas: &Option<UnboundedSender<Delta>>, kind: DeltaKind, text: &str) {
    if let Some(deltas) = deltas
        && !text.is_empty()
    {
        let _ = deltas.send(Delta { kind, text: text.to_string() });
    }
}

/// Why a model turn failed: the message says what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    pub kind: ModelErrorKind,
    pub message: String,
}

impl ModelError {
    pub fn new(kind: ModelErrorKind, message: impl Into<String>) -> Self {
        ModelError { kind, message: message.into() }
    }
}

/// The kinds of model failure, as `run_finished` reports them. The serialised names are stable;
/// new kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelErrorKind {
    /// A replay script has no turn left for the step.
    ScriptExhausted,
    /// The server could not be reached, even after retries.
    Unreachable,
    /// The server refused the request (a 4xx other than 429: the request, the key, the model name).
    Refused,
    /// The server kept failing (5xx or 429) until the retries ran out.
    Unavailable,
    /// The reply broke off or could not be read.
    BadReply,
    /// The in-process engine failed or stopped.
    Engine,
}

impl ModelErrorKind {
    /// Its serialised name.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelErrorKind::ScriptExhausted => "script_exhausted",
            ModelErrorKind::Unreachable => "unreachable",
            ModelErrorKind::Refused => "refused",
            ModelErrorKind::Unavailable => "unavailable",
            ModelErrorKind::BadReply => "bad_reply",
            ModelErrorKind::Engine => "engine",
        }
    }
}

/// Who answers a model turn, as telemetry names it: the provider (`openai` for an
/// OpenAI-compatible server, `reagent.<engine>` in process), the model asked for, and the
/// server's host and port where there is one.
#[derive(Debug, Clone)]
pub struct ModelIdentity {
    pub provider: &'static str,
    pub model: String,
    pub server: Option<(String, u16)>,
}

#[async_trait]
pub trait Model: Send + Sync {
    /// A short name for events and logs, e.g. `replay (agents/calculator.replay.yaml)`.
    fn label(&self) -> String;

    /// Who answers, for telemetry.
    fn identity(&self) -> ModelIdentity {
        ModelIdentity { provider: "reagent", model: self.label(), server: None }
    }

    /// Whether a turn asked to think really does, with tools offered or not: not where the
    /// backend decodes such a turn under a constraint from its first token, nor where the model
    /// has no reasoning mode.
    fn thinks(&self, requested: bool, _tools_offered: bool) -> bool {
        requested
    }

    async fn complete(&self, request: ModelRequest<'_>) -> Result<ModelReply, ModelError>;
}
