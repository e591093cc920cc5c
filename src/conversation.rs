//! The structured conversation every room speaks: messages in, tool calls out. Backends that
//! exchange raw text convert to and from it in `chat_format`; the loop only ever sees these types.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    System {
        content: String,
    },
    User {
        content: String,
    },
    Assistant {
        content: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// A tool's result (or the error fed back in its place) as a JSON value.
    Tool {
        call_id: String,
        content: Value,
    },
}

impl Message {
    /// A tool result as text, for wire formats whose tool messages carry a string: a string
    /// result as it is, anything else as JSON.
    pub fn tool_text(content: &Value) -> String {
        match content {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    }
}

/// A call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Unique within a run; ties a result to its call.
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// A call the model tried to make but that could not be read as one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MalformedCall {
    pub id: String,
    /// The text the model wrote for the call.
    pub raw: String,
    /// Why it could not be read, in words the model can act on.
    pub error: String,
}

/// A tool as the model is told about it; reads from and writes to the same JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDeclaration {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// Whether the model may answer without calling a tool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoice {
    /// The model calls tools or answers, as it decides.
    #[default]
    Auto,
    /// The model must call a tool until one has run successfully; then it may answer. (Forcing
    /// calls on every step would never let it answer.)
    Required,
}
