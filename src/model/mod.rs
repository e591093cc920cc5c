//! The model interface: structured turns in (messages, tool declarations, the reasoning flag),
//! structured turns out (reasoning, tool calls, text). One module per backend behind one trait;
//! the loop never knows which backend it talks to.

mod replay;

use async_trait::async_trait;

use crate::conversation::{MalformedCall, Message, ToolCall, ToolDeclaration};

pub use replay::ReplayModel;

pub struct ModelRequest<'a> {
    pub messages: &'a [Message],
    pub tools: &'a [ToolDeclaration],
    /// Whether the model reasons before it acts on this step.
    pub thinking: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelReply {
    pub reasoning: Option<String>,
    /// The text outside calls: the answer when there are no calls.
    pub text: String,
    /// The calls in the order the model wrote them, including those that could not be read.
    pub calls: Vec<Result<ToolCall, MalformedCall>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ModelError(pub String);

#[async_trait]
pub trait Model: Send + Sync {
    /// A short name for events and logs, e.g. `replay (agents/calculator.replay.yaml)`.
    fn label(&self) -> String;

    async fn complete(&self, request: ModelRequest<'_>) -> Result<ModelReply, ModelError>;
}
